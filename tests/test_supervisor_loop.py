"""The supervisor loop's decisions with an explicit clock (no sleeps), and the periodic
cleanup: checklist test 2, the timeout backstop, the maintenance lock, and its cost with
100 000 finished and failed jobs."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from rq.queue import Queue

from config import Settings
from jobs import parts
from jobs.connection import SERIALIZER
from jobs.failure import failure_reason
from jobs.paths import part_path
from jobs.workers import this_host
from supervisor import cleanup as cleanup_module
from supervisor.cleanup import PARENT_RECORD_WAIT, Cleanup, MaintenanceLock
from supervisor.loop import Phase, Supervisor
from supervisor.processes import ProcessInfo
from supervisor.recovery import StartedJob, WorkerRecord, overdue, why_dead
from tests.faultserver import FaultServer
from tests.helpers import (
    Service,
    enqueue_track,
    error_of,
    insert_started_job,
    pid_running,
    register_fake_worker,
    spawned_workers,
    status_of,
    wait_ended,
    wait_status,
    wait_until,
    wait_workers_registered,
)

GRACE = 10.0
INTERVAL = 2.0


# --- fakes for the loop ------------------------------------------------------------------------
@dataclass
class FakeWorker:
    name: str
    pid: int


@dataclass
class FakePool:
    live: list[FakeWorker]
    calls: list[str] = field(default_factory=list)
    dying: list[FakeWorker] = field(default_factory=list)

    def step(self, now: float) -> list[FakeWorker]:
        self.calls.append("step")
        dead, self.dying = self.dying, []
        return dead

    def exit(self, name: str) -> None:
        worker = next(w for w in self.live if w.name == name)
        self.live.remove(worker)
        self.dying.append(worker)

    def warm_stop(self) -> None:
        self.calls.append("warm_stop")

    def kill_all(self) -> None:
        self.calls.append("kill_all")


@dataclass
class FakeCaretaker:
    calls: list[tuple[object, ...]] = field(default_factory=list)
    log: list[str] | None = None  # shared with the pool, to check the order
    fail_runs: int = 0
    promotions: int = 0  # promote() calls: counted apart, so `calls` stays the decisions' story

    def startup(self) -> None:
        self.calls.append(("startup",))
        if self.log is not None:
            self.log.append("startup")

    def run(self, now: float) -> object:
        self.calls.append(("run", now))
        if self.fail_runs:
            self.fail_runs -= 1
            raise redis.exceptions.ConnectionError("Redis went away")
        return None

    def promote(self) -> object:
        self.promotions += 1
        return []

    def interrupt(self, workers: Mapping[str, int], message: str) -> list[str]:
        self.calls.append(("interrupt", dict(workers), message))
        return [f"job-of-{name}" for name in workers]

    def fail_interrupted(self, worker_names: Iterable[str], message: str) -> list[str]:
        self.calls.append(("fail_interrupted", sorted(worker_names), message))
        return []

    def named(self, name: str) -> list[tuple[object, ...]]:
        return [call for call in self.calls if call[0] == name]


def make(settings: Settings, workers: int = 2) -> tuple[Supervisor, FakePool, FakeCaretaker]:
    pool = FakePool([FakeWorker(f"w{i}", 1000 + i) for i in range(workers)])
    caretaker = FakeCaretaker(log=pool.calls)
    test_settings = Settings(**{**settings.__dict__, "shutdown_grace": GRACE, "cleanup_interval": INTERVAL})
    supervisor = Supervisor(test_settings, pool, caretaker, clock=lambda: 0.0)  # type: ignore[arg-type]
    supervisor.start(0.0)
    return supervisor, pool, caretaker


def run_until(supervisor: Supervisor, start: float, end: float, tick: float = 0.1) -> float:
    now = start
    while now < end - 1e-9:
        now = round(now + tick, 6)
        supervisor.step(now)
    return now


# --- the loop ------------------------------------------------------------------------------------
def test_recovery_runs_before_any_worker_starts(settings: Settings) -> None:
    _supervisor, pool, _caretaker = make(settings)
    assert pool.calls[:2] == ["startup", "step"]


def test_cleanup_runs_every_interval(settings: Settings) -> None:
    supervisor, _pool, caretaker = make(settings)
    run_until(supervisor, 0.0, 1.9)
    assert caretaker.named("run") == []
    run_until(supervisor, 1.9, 2.0)
    assert caretaker.named("run") == [("run", 2.0)]
    run_until(supervisor, 2.0, 6.0)
    assert [call[1] for call in caretaker.named("run")] == [2.0, 4.0, 6.0]


def test_due_retries_are_moved_every_tick_but_not_once_stopping(settings: Settings) -> None:
    supervisor, _pool, caretaker = make(settings)
    run_until(supervisor, 0.0, 1.0)
    assert caretaker.promotions == 10  # every 0.1 s step, not every 2 s cleanup
    supervisor.request_stop()
    run_until(supervisor, 1.0, 2.0)
    assert caretaker.promotions == 10  # draining: the workers take no new job, retries wait in Redis


def test_a_dead_worker_triggers_cleanup_at_once(settings: Settings) -> None:
    supervisor, pool, caretaker = make(settings)
    supervisor.step(0.5)
    pool.exit("w0")
    supervisor.step(0.7)
    assert caretaker.named("run") == [("run", 0.7)]
    run_until(supervisor, 0.7, 2.6)  # the interval restarts from that run
    assert [call[1] for call in caretaker.named("run")] == [0.7]
    supervisor.step(2.7)
    assert [call[1] for call in caretaker.named("run")] == [0.7, 2.7]


def test_signal_handler_only_counts(settings: Settings) -> None:
    supervisor, pool, caretaker = make(settings)
    before = list(pool.calls)
    supervisor.request_stop()
    supervisor.request_stop()
    assert pool.calls == before and supervisor.phase is Phase.RUNNING
    assert supervisor.stop_requests == 2


def test_shutdown_waits_for_the_grace_then_stops_the_downloads(settings: Settings) -> None:
    supervisor, pool, caretaker = make(settings)
    message = "Interrupted by shutdown (10s grace exceeded)"
    supervisor.request_stop()
    supervisor.step(5.0)
    assert pool.calls.count("warm_stop") == 1 and supervisor.phase is Phase.DRAINING

    run_until(supervisor, 5.0, 5.0 + GRACE - 0.1)
    assert caretaker.named("interrupt") == [] and "kill_all" not in pool.calls
    # Cleanup keeps running while draining (a worker may still die).
    assert caretaker.named("run")

    supervisor.step(5.0 + GRACE)
    assert caretaker.named("interrupt") == [("interrupt", {"w0": 1000, "w1": 1001}, message)]
    assert supervisor.phase is Phase.KILLING
    assert "kill_all" not in pool.calls  # the workers may record the failure themselves first

    pool.exit("w0")  # recorded it and exited
    now = run_until(supervisor, 5.0 + GRACE, 5.0 + GRACE + PARENT_RECORD_WAIT - 0.1)
    assert "kill_all" not in pool.calls
    supervisor.step(5.0 + GRACE + PARENT_RECORD_WAIT)
    assert pool.calls.count("kill_all") == 1
    assert not supervisor.done

    pool.exit("w1")
    supervisor.step(now + 0.5)
    assert caretaker.named("fail_interrupted") == [("fail_interrupted", ["w0", "w1"], message)]
    assert supervisor.done
    assert supervisor.interrupted_jobs == ["job-of-w0", "job-of-w1"]


def test_shutdown_ends_early_when_the_downloads_finish(settings: Settings) -> None:
    supervisor, pool, caretaker = make(settings)
    supervisor.request_stop()
    supervisor.step(1.0)
    pool.exit("w0")
    pool.exit("w1")
    supervisor.step(3.0)
    assert supervisor.done
    assert caretaker.named("interrupt") == [] and caretaker.named("fail_interrupted") == []
    assert "kill_all" not in pool.calls
    runs = len(caretaker.named("run"))
    supervisor.step(10.0)  # a done supervisor cleans nothing more (run() has returned by then)
    assert len(caretaker.named("run")) == runs


def test_second_request_stops_now_with_the_same_message(settings: Settings) -> None:
    supervisor, pool, caretaker = make(settings)
    supervisor.request_stop()
    supervisor.step(1.0)
    supervisor.request_stop()
    supervisor.step(1.2)
    assert caretaker.named("interrupt") == [
        ("interrupt", {"w0": 1000, "w1": 1001}, "Interrupted by shutdown (10s grace exceeded)")
    ]
    assert pool.calls.count("kill_all") == 1
    pool.exit("w0")
    pool.exit("w1")
    supervisor.step(1.4)
    assert supervisor.done and len(caretaker.named("fail_interrupted")) == 1


def test_a_third_request_while_killing_kills_the_workers(settings: Settings) -> None:
    supervisor, pool, _caretaker = make(settings)
    supervisor.request_stop()
    supervisor.step(1.0)
    supervisor.step(1.0 + GRACE)  # grace over: horses killed, workers given time
    assert "kill_all" not in pool.calls
    supervisor.request_stop()
    supervisor.step(1.1 + GRACE)
    assert pool.calls.count("kill_all") == 1


def test_unreachable_redis_skips_a_cleanup_and_the_loop_goes_on(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor, _pool, caretaker = make(settings)
    caretaker.fail_runs = 1
    run_until(supervisor, 0.0, 4.0)
    assert [call[1] for call in caretaker.named("run")] == [2.0, 4.0]
    assert "cleanup skipped: Redis unreachable" in caplog.text


# --- pure decisions --------------------------------------------------------------------------------
def job(worker: WorkerRecord | None, *, deadline: float = 1000.0, name: str | None = "w") -> StartedJob:
    return StartedJob("j", "e", deadline, name, worker, status="started", started_at=900.0, timeout=60)


def test_why_dead() -> None:
    alive = {7}.__contains__
    here = "host-a"
    assert why_dead(job(WorkerRecord("w", here, 7)), host=here, now=999, alive=alive) is None
    # A provably live worker here wins over a stale heartbeat.
    assert why_dead(job(WorkerRecord("w", here, 7), deadline=0), host=here, now=999, alive=alive) is None
    assert "not running" in (why_dead(job(WorkerRecord("w", here, 8)), host=here, now=999, alive=alive) or "")
    assert "gone" in (why_dead(job(None), host=here, now=999, alive=alive) or "")
    assert "gone" in (why_dead(job(WorkerRecord("w", "host-b", 7, died=True)), host=here, now=999, alive=alive) or "")
    remote = WorkerRecord("w", "host-b", 7)
    assert why_dead(job(remote, deadline=1000), host=here, now=1029, alive=alive) is None
    assert "stale" in (why_dead(job(remote, deadline=1000), host=here, now=1031, alive=alive) or "")
    # No worker recorded at all: judged by the heartbeat alone.
    assert why_dead(job(None, name=None, deadline=1000), host=here, now=1010, alive=alive) is None
    assert why_dead(job(None, name=None, deadline=1000), host=here, now=1031, alive=alive) is not None


def test_overdue() -> None:
    running = job(WorkerRecord("w", "h", 1))  # started at 900, timeout 60
    assert not overdue(running, now=964.9, margin=5)
    assert overdue(running, now=965.1, margin=5)
    assert not overdue(StartedJob("j", "e", 0, "w", None, timeout=None, started_at=0), now=1e9, margin=5)


# --- the cleanup against real Redis --------------------------------------------------------------
def test_maintenance_lock_is_rqs_key_and_only_ours_is_released(connection: redis.Redis) -> None:
    ours = MaintenanceLock(connection, "downloads", ttl=10)
    other = MaintenanceLock(connection, "downloads", ttl=10)
    assert ours.key == Queue("downloads", connection=connection).registry_cleaning_key
    assert ours.acquire(0.0)
    assert not other.acquire(0.0)
    assert not Queue("downloads", connection=connection).acquire_maintenance_lock()  # RQ's workers wait too
    other.release()  # not its token: nothing happens
    assert connection.get(ours.key) == ours.token
    ours.release()
    assert connection.get(ours.key) is None
    assert other.acquire(1.0)
    assert 0 < connection.pttl(other.key) <= 10_000


def test_a_stuck_rq_lock_is_taken_over(connection: redis.Redis) -> None:
    assert Queue("downloads", connection=connection).acquire_maintenance_lock()  # 899 s, its holder "died"
    lock = MaintenanceLock(connection, "downloads", ttl=10)
    assert not lock.acquire(100.0)
    assert not lock.acquire(100.0 + cleanup_module.STUCK_RQ_LOCK_AFTER - 1)
    assert lock.acquire(100.0 + cleanup_module.STUCK_RQ_LOCK_AFTER)
    assert connection.get(lock.key) == lock.token


def test_cleanup_skips_a_round_while_another_holds_the_lock(connection: redis.Redis, settings: Settings) -> None:
    other = MaintenanceLock(connection, settings.queue_name, ttl=10)
    assert other.acquire(0.0)
    job_id = insert_started_job(connection, settings, worker_name="w.gone", started_ago=1)
    assert Cleanup.create(connection, settings).run(0.0).skipped
    assert status_of(connection, job_id) == "started"
    other.release()
    assert Cleanup.create(connection, settings).run(0.0).recovered == [job_id]


def test_backstop_kills_a_wedged_horse_and_fails_its_job(connection: redis.Redis, settings: Settings) -> None:
    """A live worker here whose horse ignored the alarm: the horse is killed with the reason
    stored; if the worker does not record the failure, the cleanup does, after a wait."""
    name = "dq.test.wedged"
    register_fake_worker(connection, name, os.getpid())
    job_id = insert_started_job(connection, settings, worker_name=name, started_ago=settings.job_timeout + 6)
    horse = ProcessInfo(pid=424242, ppid=os.getpid(), pgid=424242, argv=("rq", "worker", "--name", name))
    killed: list[list[int]] = []

    def kill(pids: list[int]) -> bool:
        killed.append(pids)
        return True

    cleanup = Cleanup.create(connection, settings, processes=lambda: [horse], kill=kill)
    message = f"Processing timeout ({settings.job_timeout}s exceeded)"
    report = cleanup.run(50.0)
    assert killed == [[424242]]
    assert failure_reason(connection, job_id) == message
    assert report.timed_out == [] and status_of(connection, job_id) == "started"  # its worker's turn

    assert cleanup.run(50.0 + PARENT_RECORD_WAIT - 0.1).timed_out == []
    assert cleanup.run(50.0 + PARENT_RECORD_WAIT).timed_out == [job_id]
    assert killed == [[424242]]  # killed once
    assert status_of(connection, job_id) == "failed"
    assert error_of(connection, job_id) == message


def test_backstop_kills_a_wedged_worker_that_runs_its_job_itself_and_fails_the_job_at_once(
    connection: redis.Redis, settings: Settings
) -> None:
    """Our workers fork no horse: the worker is what ignored the alarm, so it is killed (a new
    one is started by the pool) and nobody else is left to record the failure: the cleanup does."""
    name = "dq.test.wedged"
    register_fake_worker(connection, name, os.getpid())
    job_id = insert_started_job(connection, settings, worker_name=name, started_ago=settings.job_timeout + 6)
    worker = ProcessInfo(pid=os.getpid(), ppid=1, pgid=os.getpid(), argv=("rq", "worker", "--name", name))
    killed: list[list[int]] = []

    def kill(pids: list[int]) -> bool:
        killed.append(pids)
        return True

    cleanup = Cleanup.create(connection, settings, processes=lambda: [worker], kill=kill)
    assert cleanup.run(50.0).timed_out == [job_id]
    assert killed == [[os.getpid()]]
    assert status_of(connection, job_id) == "failed"
    assert error_of(connection, job_id) == f"Processing timeout ({settings.job_timeout}s exceeded)"


def test_backstop_leaves_jobs_within_their_time_and_other_hosts_alone(
    connection: redis.Redis, settings: Settings
) -> None:
    register_fake_worker(connection, "w.here", os.getpid())
    register_fake_worker(connection, "w.remote", 1, hostname="elsewhere")
    fresh = insert_started_job(connection, settings, worker_name="w.here", started_ago=settings.job_timeout)
    remote = insert_started_job(connection, settings, worker_name="w.remote", started_ago=10 * settings.job_timeout)
    report = Cleanup.create(connection, settings, processes=lambda: []).run(0.0)
    assert report.timed_out == [] and report.recovered == []
    assert status_of(connection, fresh) == status_of(connection, remote) == "started"


def test_ended_jobs_lose_their_part_file_without_memory_of_the_supervisor(
    connection: redis.Redis, settings: Settings
) -> None:
    settings.download_dir.mkdir(parents=True)
    register_fake_worker(connection, "w.here", os.getpid())
    final = settings.download_dir / "song.flac"
    job_id = insert_started_job(connection, settings, worker_name="w.here", started_ago=1, final_path=final)
    part = part_path(final, job_id)
    part.write_bytes(b"partial")
    parts.track(connection, this_host(), part)  # as the download does when it starts
    Cleanup.create(connection, settings, processes=lambda: []).run(0.0)
    assert part.exists()  # still running
    connection.hset(f"rq:job:{job_id}", "status", "scheduled")
    Cleanup.create(connection, settings, processes=lambda: []).run(0.5)
    assert part.exists()  # waiting for its retry: it resumes from this file
    # It ended (here: by hand) without removing the part; a new supervisor (no memory) sweeps it.
    connection.hset(f"rq:job:{job_id}", "status", "failed")
    connection.delete(f"rq:wip:{settings.queue_name}")
    assert Cleanup.create(connection, settings, processes=lambda: []).run(1.0).parts_removed == [part]
    assert not part.exists()
    assert connection.smembers(f"dq:parts:{this_host()}") == set()


def test_startup_sweeps_partial_files_whose_job_is_gone(connection: redis.Redis, settings: Settings) -> None:
    (settings.download_dir / "Album").mkdir(parents=True)
    register_fake_worker(connection, "w.here", os.getpid())
    running = insert_started_job(connection, settings, worker_name="w.here", started_ago=1)
    waiting = insert_started_job(connection, settings, worker_name="w.here", started_ago=1)
    connection.hset(f"rq:job:{waiting}", "status", "scheduled")
    ended = insert_started_job(connection, settings, worker_name="w.here", started_ago=1)
    connection.hset(f"rq:job:{ended}", "status", "failed")
    album = settings.download_dir / "Album"
    of_gone = part_path(album / "old.flac", "0c3b6a5e-7a39-4d5e-9f0e-2b1f3c4d5e6f")
    of_ended = part_path(album / "ended.flac", ended)
    of_running = part_path(settings.download_dir / "running.flac", running)
    of_waiting = part_path(settings.download_dir / "waiting.flac", waiting)
    users_own = album / "notes.part"  # no job id in its name: never ours
    for path in (of_gone, of_ended, of_running, of_waiting, users_own):
        path.write_bytes(b"x")
    Cleanup.create(connection, settings, processes=lambda: []).startup()
    assert not of_gone.exists() and not of_ended.exists()
    assert of_running.exists() and of_waiting.exists() and users_own.exists()


@pytest.mark.timeout(120)
def test_cleanup_stays_cheap_with_100000_finished_and_failed_jobs(connection: redis.Redis, settings: Settings) -> None:
    """Only the StartedJobRegistry is read; the big registries see one ZREMRANGEBYSCORE each."""
    future = time.time() + 86400
    for registry in ("finished", "failed"):
        key = f"rq:{registry}:{settings.queue_name}"
        for start in range(0, 100_000, 10_000):
            connection.zadd(key, {f"{registry}-{i}": future for i in range(start, start + 10_000)})
    register_fake_worker(connection, "w.here", os.getpid())
    for _ in range(4):
        insert_started_job(connection, settings, worker_name="w.here", started_ago=1)
    cleanup = Cleanup.create(connection, settings, processes=lambda: [])
    cleanup.run(0.0)  # warm up (imports, scripts)

    connection.config_resetstat()
    started = time.perf_counter()
    cleanup.run(1.0)
    elapsed = time.perf_counter() - started
    stats = connection.info("commandstats")
    commands = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    assert not {"keys", "scan", "zscan", "sscan", "hscan"} & set(commands), commands
    assert commands.get("zrange", 0) <= 4, commands  # started registry, ready registry: small ones
    assert sum(commands.values()) < 80, commands
    assert elapsed < 0.5, elapsed
    assert connection.zcard(f"rq:finished:{settings.queue_name}") == 100_000


# --- checklist test 2, against a running supervisor ------------------------------------------------
@pytest.mark.timeout(60)
def test_checklist_2_processing_job_with_an_old_start_fails_on_the_next_cleanup(
    env: dict[str, str], connection: redis.Redis, start_service: Callable[..., Service], settings: Settings
) -> None:
    service = start_service({**env, "DQ_WORKERS": "1"}, wait_workers=0)
    wait_workers_registered(connection, service, 1)
    [(worker_name, _pid)] = spawned_workers(service)
    job_id = insert_started_job(connection, settings, worker_name=worker_name, started_ago=settings.job_timeout + 60)
    inserted = time.monotonic()
    assert wait_ended(connection, [job_id], 10)[job_id] == "failed"
    assert time.monotonic() - inserted < 3 * settings.cleanup_interval + 2
    assert error_of(connection, job_id) == f"Processing timeout ({settings.job_timeout}s exceeded)"
    assert "recovering job" not in service.log()


@pytest.mark.timeout(60)
def test_backstop_against_a_real_wedged_worker(
    env: dict[str, str],
    connection: redis.Redis,
    start_service: Callable[..., Service],
    settings: Settings,
    fault_server: FaultServer,
) -> None:
    """A stopped worker (SIGSTOP) cannot run RQ's alarm handler: its job is wedged past its 2 s
    timeout. The cleanup kills the worker (it runs the job itself) at timeout + margin, records
    the message and a new worker takes its place."""
    service = start_service({**env, "DQ_WORKERS": "1"}, wait_workers=0)
    wait_workers_registered(connection, service, 1)
    [(_name, worker)] = spawned_workers(service)
    started = time.monotonic()
    job_id = enqueue_track(
        connection, dataclasses.replace(settings, job_timeout=2), fault_server.url("/slow/100000/w.flac")
    )
    wait_status(connection, job_id, "started", timeout=5)
    assert Path(f"/proc/{worker}/task/{worker}/children").read_text().split() == []  # no horse
    os.kill(worker, signal.SIGSTOP)
    assert wait_ended(connection, [job_id], 30)[job_id] == "failed"
    took = time.monotonic() - started
    assert 2 + cleanup_module.BACKSTOP_MARGIN - 1 <= took < 2 + cleanup_module.BACKSTOP_MARGIN + 8, took
    assert error_of(connection, job_id) == "Processing timeout (2s exceeded)"
    assert not pid_running(worker)
    assert wait_until(lambda: len(spawned_workers(service)) == 2, 5), service.log()  # a new one took its place
    assert "recovering job" not in service.log()


def test_a_job_stranded_between_queue_and_worker_goes_back_to_the_queue(
    connection: redis.Redis, settings: Settings
) -> None:
    """A worker killed right after taking a job off the queue leaves it in RQ's intermediate
    list; the cleanup puts it back at the front (it never ran), not RQ's 10-minute failure."""
    queue = Queue(settings.queue_name, connection=connection, serializer=SERIALIZER)
    first = queue.enqueue("jobs.track.download_track", url="https://example.org/1.flac")
    second = queue.enqueue("jobs.track.download_track", url="https://example.org/2.flac")
    connection.lmove(queue.key, queue.intermediate_queue.key)  # what a dequeuing worker does
    assert queue.get_job_ids() == [second.id]
    cleanup = Cleanup.create(connection, settings, processes=lambda: [])
    assert cleanup.run(0.0).requeued == []  # a live worker registers it within milliseconds
    assert cleanup.run(cleanup_module.STRANDED_AFTER - 0.5).requeued == []
    assert cleanup.run(cleanup_module.STRANDED_AFTER + 0.5).requeued == [first.id]
    assert queue.get_job_ids() == [first.id, second.id]
    assert queue.intermediate_queue.get_job_ids() == []
    assert first.get_status(refresh=True) == "queued"
    # a job that was started meanwhile is left alone
    connection.lmove(queue.key, queue.intermediate_queue.key)
    connection.hset(first.key, "status", "started")
    assert cleanup.run(100.0).requeued == [] and cleanup.run(200.0).requeued == []
    assert queue.get_job_ids() == [second.id]
