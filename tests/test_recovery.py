"""Crash recovery against real Redis, real `rq worker` processes and the real HTTP test server.

Checklist test 3 (kill everything mid-download, restart), the supervisor killed alone, two
supervisors on one Redis, orphan horses, and the safe failure itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry

from config import Settings
from jobs import history, messages
from jobs.connection import SERIALIZER
from jobs.failure import end_started_job
from jobs.paths import part_path, remove_part_file
from jobs.retries import RetryPolicy, died, promote_due
from jobs.tombstones import mark_deleted
from supervisor.cleanup import Cleanup
from tests.faultserver import FaultServer
from tests.helpers import (
    SLOW,
    Service,
    downloading,
    enqueue,
    error_of,
    insert_started_job,
    pid_running,
    register_fake_worker,
    spawned_workers,
    status_of,
    wait_ended,
    wait_until,
    wait_workers_registered,
    worker_of,
    worker_pid,
)


# --- the safe failure itself ---------------------------------------------------------------------
def test_end_started_job_records_a_clean_failure(connection: redis.Redis, settings: Settings, tmp_path: Path) -> None:
    job_id = insert_started_job(connection, settings, worker_name="w.gone", started_ago=3)
    registry = StartedJobRegistry(settings.queue_name, connection=connection)
    assert registry.get_job_ids(cleanup=False) == [job_id]

    policy = RetryPolicy.from_settings(settings)  # DQ_RETRIES=0: Phase 1, no retry
    ended = end_started_job(
        connection, settings.queue_name, job_id, died(messages.RECOVERED), policy, event=history.RECOVERED
    )
    assert ended == "failed"

    assert status_of(connection, job_id) == "failed"
    assert error_of(connection, job_id) == messages.RECOVERED
    assert registry.get_job_ids(cleanup=False) == []
    assert FailedJobRegistry(settings.queue_name, connection=connection).get_job_ids(cleanup=False) == [job_id]
    assert not connection.keys(f"rq:execution:{job_id}:*")
    assert [e["event"] for e in history.read(connection, job_id)] == ["recovered"]
    # A second attempt (another supervisor, the worker itself) changes nothing.
    assert end_started_job(connection, settings.queue_name, job_id, died("other text"), policy) is None
    assert error_of(connection, job_id) == messages.RECOVERED


def test_remove_part_file_stays_inside_the_download_dir(tmp_path: Path) -> None:
    root = tmp_path / "downloads"
    (root / "a").mkdir(parents=True)
    owner = "0c3b6a5e-7a39-4d5e-9f0e-2b1f3c4d5e6f"
    inside = part_path(root / "a" / "song.flac", owner)
    inside.write_bytes(b"x")
    outside = part_path(tmp_path / "elsewhere.flac", owner)
    outside.write_bytes(b"x")
    assert remove_part_file(root, str(root / "a" / "song.flac"), owner) == inside.resolve()
    assert not inside.exists()
    assert remove_part_file(root, str(tmp_path / "elsewhere.flac"), owner) is None
    assert outside.exists()
    assert remove_part_file(root, None, owner) is None


def test_a_crash_with_attempts_left_waits_for_its_retry_and_keeps_its_partial_file(
    connection: redis.Redis, settings: Settings
) -> None:
    settings = replace(settings, retries=2, retry_delays=(30,))
    settings.download_dir.mkdir(parents=True)
    final = settings.download_dir / "song.flac"
    job_id = insert_started_job(connection, settings, worker_name="w.gone", started_ago=3, final_path=final)
    part = part_path(final, job_id)
    part.write_bytes(b"partial")
    before = time.time()
    assert Cleanup.create(connection, settings).run(0.0).recovered == [job_id]
    assert status_of(connection, job_id) == "scheduled"
    due = connection.zscore(f"rq:scheduled:{settings.queue_name}", job_id)
    assert due is not None and before + 30 <= due <= time.time() + 36  # the delay, plus up to 20 % jitter
    assert part.exists()
    assert not StartedJobRegistry(settings.queue_name, connection=connection).get_job_ids(cleanup=False)
    events = [(event["event"], event["message"]) for event in history.read(connection, job_id)]
    assert events[0] == ("recovered", messages.RECOVERED)
    assert events[1][0] == "retrying" and events[1][1].startswith("retry 2/3 in ")
    job = Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
    assert (job.meta["attempts"], job.meta["max_attempts"], job.meta["last_error"]) == (1, 3, messages.RECOVERED)
    # Not due yet: stays; once due, back in the queue (and only once, whoever moves it).
    assert promote_due(connection, settings.queue_name, now=due - 1) == []
    assert promote_due(connection, settings.queue_name, now=due) == [job_id]
    assert promote_due(connection, settings.queue_name, now=due) == []
    assert status_of(connection, job_id) == "queued"
    assert Queue(settings.queue_name, connection=connection).get_job_ids() == [job_id]


def test_a_deleted_retry_is_never_moved_back(connection: redis.Redis, settings: Settings) -> None:
    settings = replace(settings, retries=1)
    job_id = insert_started_job(connection, settings, worker_name="w.gone", started_ago=3)
    assert Cleanup.create(connection, settings).run(0.0).recovered == [job_id]
    assert status_of(connection, job_id) == "scheduled"
    mark_deleted(connection, [job_id])
    assert promote_due(connection, settings.queue_name, now=time.time() + 3600) == []
    assert Queue(settings.queue_name, connection=connection).get_job_ids() == []


# --- recovery decisions against real Redis, in process ----------------------------------------
def test_recovery_fails_only_jobs_of_dead_workers(
    connection: redis.Redis, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    download_dir = settings.download_dir
    download_dir.mkdir(parents=True)
    register_fake_worker(connection, "w.alive.here", os.getpid())
    register_fake_worker(connection, "w.dead.here", 2**22 + 12345)  # beyond pid_max: not running
    register_fake_worker(connection, "w.remote", 1, hostname="some-other-host")
    gone = insert_started_job(
        connection, settings, worker_name="w.gone", started_ago=2, final_path=download_dir / "dead.flac"
    )
    dead_pid = insert_started_job(connection, settings, worker_name="w.dead.here", started_ago=2)
    alive = insert_started_job(
        connection, settings, worker_name="w.alive.here", started_ago=2, final_path=download_dir / "live.flac"
    )
    remote = insert_started_job(connection, settings, worker_name="w.remote", started_ago=2)
    dead_part = part_path(download_dir / "dead.flac", gone)
    dead_part.write_bytes(b"partial")
    live_part = part_path(download_dir / "live.flac", alive)
    live_part.write_bytes(b"partial")
    remote_stale = insert_started_job(connection, settings, worker_name="w.remote", started_ago=2)
    # A stale heartbeat is one whose registry score lies well in the past.
    registry = StartedJobRegistry(settings.queue_name, connection=connection)
    for member in connection.zrange(registry.key, 0, -1):
        if member.decode().startswith(remote_stale):
            connection.zadd(registry.key, {member: time.time() - 120})

    cleanup = Cleanup.create(connection, settings)
    with caplog.at_level("INFO", logger="dq"):
        cleanup.startup()

    assert status_of(connection, gone) == "failed"
    assert status_of(connection, dead_pid) == "failed"
    assert status_of(connection, remote_stale) == "failed"
    for job_id in (gone, dead_pid, remote_stale):
        assert error_of(connection, job_id) == messages.RECOVERED
        assert f"recovering job {job_id}" in caplog.text
    assert status_of(connection, alive) == "started"
    assert status_of(connection, remote) == "started"
    assert not dead_part.exists()
    assert live_part.exists()


@pytest.mark.timeout(30)
def test_orphan_horse_is_killed_before_its_job_is_failed(connection: redis.Redis, settings: Settings) -> None:
    """A horse whose worker is gone still runs: it dies first, then its job is failed."""
    name = f"dq.{socket.gethostname()}.999999.1.1"
    # Looks like a horse: a fork of `rq worker ... --name <name>`, leading its own process group.
    horse = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "--name", name], start_new_session=True
    )
    try:
        job_id = insert_started_job(connection, settings, worker_name=name, started_ago=1)
        Cleanup.create(connection, settings).run(time.monotonic())
        assert horse.wait(5) == -signal.SIGKILL
        assert status_of(connection, job_id) == "failed"
        assert error_of(connection, job_id) == messages.RECOVERED
    finally:
        if horse.poll() is None:
            horse.kill()
            horse.wait()


# --- real processes --------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_checklist_3_crash_recovery(
    env: dict[str, str],
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    settings: Settings,
) -> None:
    """Start, submit an album-sized set, kill everything mid-download, restart: the log says
    it recovers each interrupted job, they fail with the recovery message, no `.part` is
    left, and the queued ones still complete."""
    first = start_service(env)
    slow = enqueue(env, *(fault_server.url(SLOW.format(name=f"track{i}")) for i in range(4)))
    quick = enqueue(env, *(fault_server.url(f"/bytes/50000/quick{i}.flac") for i in range(4)))
    assert wait_until(lambda: downloading(connection, slow, settings.download_dir), 20), first.log()
    workers = spawned_workers(first)

    first.kill_group()
    assert wait_until(lambda: not any(pid_running(pid) for _name, pid in workers), 5)

    second = start_service(env, wait_workers=0)
    states = wait_ended(connection, slow + quick, 30)
    assert all(states[job_id] == "failed" for job_id in slow), states
    assert all(states[job_id] == "finished" for job_id in quick), states
    for job_id in slow:
        assert error_of(connection, job_id) == messages.RECOVERED
        assert f"recovering job {job_id}" in second.log()
    assert list(settings.download_dir.rglob("*.part")) == []
    assert fault_server.max_active <= 4


@pytest.mark.timeout(90)
def test_supervisor_killed_alone_then_restarted(
    env: dict[str, str],
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    settings: Settings,
) -> None:
    """SIGKILL of the supervisor only: its workers die with it (parent-death signal), so the
    restarted one never runs more than 4 downloads at once; the queue drains."""
    first = start_service(env)
    slow = enqueue(env, *(fault_server.url(SLOW.format(name=f"long{i}")) for i in range(4)))
    rest = enqueue(env, *(fault_server.url(f"/slow/20000/short{i}.flac?seconds=1") for i in range(8)))
    assert wait_until(lambda: downloading(connection, slow, settings.download_dir), 20), first.log()
    workers = spawned_workers(first)

    os.kill(first.pid, signal.SIGKILL)
    first.process.wait(5)
    second = start_service(env, wait_workers=0)
    # The old workers and horses are gone within about a second, not at some later cleanup.
    assert wait_until(lambda: not any(pid_running(pid) for _name, pid in workers), 3)

    states = wait_ended(connection, slow + rest, 45)
    assert [states[job_id] for job_id in slow] == ["failed"] * 4, states
    assert [states[job_id] for job_id in rest] == ["finished"] * 8, states
    for job_id in slow:
        assert error_of(connection, job_id) == messages.RECOVERED
    assert fault_server.max_active <= 4, fault_server.max_active
    assert connection.llen(f"rq:queue:{settings.queue_name}") == 0
    assert list(settings.download_dir.rglob("*.part")) == []
    assert second.process.poll() is None


@pytest.mark.timeout(90)
def test_two_supervisors_on_one_redis_leave_each_others_jobs_alone(
    env: dict[str, str],
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    tmp_path: Path,
) -> None:
    env_a = {**env, "DQ_WORKERS": "2", "DQ_STATE_DIR": str(tmp_path / "state-a")}
    env_b = {**env, "DQ_WORKERS": "2", "DQ_STATE_DIR": str(tmp_path / "state-b")}
    a = start_service(env_a, wait_workers=0, log_name="a.log")
    b = start_service(env_b, wait_workers=0, log_name="b.log")
    wait_workers_registered(connection, a, 2)
    wait_workers_registered(connection, b, 2)
    ids = enqueue(env, *(fault_server.url(f"/slow/100000/t{i}.flac?seconds=5") for i in range(4)))
    download_dir = Path(env["DQ_DOWNLOAD_DIR"])
    assert wait_until(lambda: downloading(connection, ids, download_dir), 20)
    owner = {job_id: worker_of(connection, job_id) for job_id in ids}
    of_a = [i for i in ids if owner[i].startswith(f"dq.{socket.gethostname()}.{a.pid}.")]
    of_b = [i for i in ids if i not in of_a]
    assert len(of_a) == 2 and len(of_b) == 2, owner

    b.kill_group()
    b2 = start_service(env_b, wait_workers=0, log_name="b2.log")
    wait_workers_registered(connection, b2, 2)

    states = wait_ended(connection, ids, 30)
    assert [states[i] for i in of_a] == ["finished", "finished"], (states, a.log())
    assert [states[i] for i in of_b] == ["failed", "failed"], states
    for job_id in of_b:
        assert error_of(connection, job_id) == messages.RECOVERED
    # B's dead jobs may be recovered by either supervisor (whichever cleans first); A's never.
    assert all(f"recovering job {i}" not in a.log() + b2.log() for i in of_a)
    assert all(f"recovering job {i}" in a.log() + b2.log() for i in of_b)


@pytest.mark.timeout(60)
def test_worker_killed_mid_job_is_recovered_quickly(
    env: dict[str, str],
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    settings: Settings,
) -> None:
    """SIGKILL one worker while the supervisor runs: its job fails within about two cleanup
    intervals (not RQ's 90 s to 15 min), the worker is replaced, the other job completes."""
    service = start_service(env)
    victim, other = enqueue(
        env, fault_server.url(SLOW.format(name="victim")), fault_server.url("/slow/60000/other.flac?seconds=3")
    )
    assert wait_until(lambda: downloading(connection, [victim, other], settings.download_dir), 20)
    pid = worker_pid(connection, worker_of(connection, victim))

    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: status_of(connection, victim) == "failed", 10)
    latency = time.monotonic() - killed_at
    print(f"recovery latency after worker SIGKILL: {latency:.2f}s")
    # About two cleanup intervals (0.5 s each here), with room for two busy shared CPUs.
    assert latency < 2 * settings.cleanup_interval + 2.0, latency
    assert error_of(connection, victim) == messages.RECOVERED
    assert wait_ended(connection, [other], 20)[other] == "finished"
    assert wait_until(lambda: len(spawned_workers(service)) == 5, 10), service.log()
    wait_workers_registered(connection, service, 4)
    assert list(settings.download_dir.rglob("*.part")) == []
