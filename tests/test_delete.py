"""Real deletion (`dq delete`) against real workers, Redis and the fault server: checklist test 4,
deletion while downloading (cooperative and via RQ's stop command), and the other states."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from jobs.paths import part_path
from tests.faultserver import FaultServer
from tests.helpers import (
    Service,
    assert_never_back,
    enqueue,
    listed,
    run_dq,
    spawned_workers,
    status_of,
    traces,
    wait_until,
)


def meta_path(connection: redis.Redis, job_id: str) -> str | None:
    raw = connection.hget(f"rq:job:{job_id}", "meta")
    return json.loads(raw).get("path") if raw else None


def delete(env: dict[str, str], *ids: str) -> tuple[list[str], int, float]:
    started = time.monotonic()
    result = run_dq(["delete", *ids], env)
    return result.stdout.splitlines(), result.returncode, time.monotonic() - started


@pytest.mark.timeout(90)
def test_checklist_4_delete_the_first_of_three(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service], connection: redis.Redis
) -> None:
    """Submit 3 jobs, delete the first: the list no longer shows it, nothing of it is left in Redis."""
    start_service(env)
    ids = [enqueue(env, fault_server.url(f"/slow/400000/track{n}.flac?seconds=4"))[0] for n in (1, 2, 3)]
    assert wait_until(lambda: all(status_of(connection, i) is not None for i in ids), 10)
    first = ids[0]
    lines, code, _ = delete(env, first)
    assert code == 0
    assert lines[0] in (f"{first} deleted", f"{first} cancelled")
    assert first not in listed(env)
    assert traces(connection, first) == []
    assert_never_back(connection, env, first)
    assert wait_until(lambda: all(listed(env)[i]["state"] == "completed" for i in ids[1:]), 30)
    assert first not in listed(env)


@pytest.mark.timeout(90)
def test_delete_during_a_download_stops_it(
    env: dict[str, str],
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    connection: redis.Redis,
    tmp_path: Path,
) -> None:
    start_service(env)
    [job_id] = enqueue(env, fault_server.url("/slow/3000000/long.flac?seconds=40"))
    downloads = tmp_path / "downloads"
    assert wait_until(lambda: part_path(downloads / "long.flac", job_id).exists(), 15)
    assert wait_until(lambda: fault_server.active == 1, 5)
    lines, code, elapsed = delete(env, job_id)
    assert (lines, code) == ([f"{job_id} cancelled"], 0)
    # Bytes were flowing, so the download stopped at its next progress write (~1 s).
    assert elapsed < 6, elapsed
    # The command returned only after the download stopped: the server saw the client go.
    assert wait_until(lambda: [p for p, _ in fault_server.disconnects] == ["/slow/3000000/long.flac"], 0.3)
    assert fault_server.active == 0
    assert not part_path(downloads / "long.flac", job_id).exists()
    assert not (downloads / "long.flac").exists()
    assert_never_back(connection, env, job_id)
    assert list(downloads.rglob("*.flac*")) == []


@pytest.mark.timeout(90)
def test_delete_of_a_hung_download_kills_it_with_the_stop_command(
    env: dict[str, str],
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    connection: redis.Redis,
    tmp_path: Path,
) -> None:
    """No bytes flow, so no progress write would notice the deletion: RQ's stop command must."""
    env = {**env, "DQ_REQUEST_TIMEOUT": "30"}  # the read would otherwise give up by itself after 1 s
    service = start_service(env)
    [job_id] = enqueue(env, fault_server.url("/hang-body/2000000/stuck.flac"))
    part = part_path(tmp_path / "downloads" / "stuck.flac", job_id)
    assert wait_until(lambda: part.exists() and meta_path(connection, job_id), 15)
    lines, code, elapsed = delete(env, job_id)
    assert (lines, code) == ([f"{job_id} cancelled"], 0)
    assert 1.5 < elapsed < 10, elapsed  # the cooperative wait, then the stop command
    assert wait_until(lambda: fault_server.disconnects, 0.3)
    assert fault_server.active == 0
    assert not part.exists()  # the stopped job removed its .part (or deletion did)
    assert not (tmp_path / "downloads" / "stuck.flac").exists()
    assert_never_back(connection, env, job_id)
    # Stopped in place by its worker (no fork: RQ's stop command is ours, jobs.interrupt), which lives on.
    assert f"stopping job {job_id} in place (stop command)" in service.log()
    assert len(spawned_workers(service)) == 4


@pytest.mark.timeout(60)
def test_delete_a_completed_job_keeps_its_file(
    env: dict[str, str],
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    connection: redis.Redis,
    tmp_path: Path,
) -> None:
    start_service(env)
    [job_id] = enqueue(env, fault_server.url("/bytes/5000/done.flac"))
    assert wait_until(lambda: status_of(connection, job_id) == "finished", 20)
    lines, code, elapsed = delete(env, job_id)
    assert (lines, code) == ([f"{job_id} deleted"], 0)
    assert elapsed < 5
    assert (tmp_path / "downloads" / "done.flac").stat().st_size == 5000
    assert job_id not in listed(env)
    assert traces(connection, job_id) == []


@pytest.mark.timeout(60)
def test_delete_a_failed_job(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service], connection: redis.Redis
) -> None:
    start_service(env)
    [job_id] = enqueue(env, fault_server.url("/status/404/missing.flac"))
    assert wait_until(lambda: status_of(connection, job_id) == "failed", 20)
    assert delete(env, job_id)[:2] == ([f"{job_id} deleted"], 0)
    assert traces(connection, job_id) == []


@pytest.mark.timeout(90)
def test_delete_a_queued_job_it_is_never_downloaded(
    env: dict[str, str],
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    connection: redis.Redis,
    tmp_path: Path,
) -> None:
    env = {**env, "DQ_WORKERS": "1"}
    start_service(env)
    [busy] = enqueue(env, fault_server.url("/slow/100000/first.flac?seconds=3"))
    [waiting] = enqueue(env, fault_server.url("/bytes/1000/second.flac"))
    assert wait_until(lambda: status_of(connection, busy) == "started", 15)
    assert status_of(connection, waiting) == "queued"
    assert delete(env, waiting)[:2] == ([f"{waiting} deleted"], 0)
    assert traces(connection, waiting) == []
    assert wait_until(lambda: status_of(connection, busy) == "finished", 20)
    time.sleep(1.5)  # the worker is free now: it must not find the deleted job
    assert "/bytes/1000/second.flac" not in fault_server.requests
    assert not (tmp_path / "downloads" / "second.flac").exists()
    assert traces(connection, waiting) == []


def test_unknown_id_is_not_found_and_changes_nothing(env: dict[str, str], connection: redis.Redis) -> None:
    enqueue(env, "http://example.invalid/a.flac")
    before = {key: connection.dump(key) for key in connection.scan_iter("*")}
    lines, code, _ = delete(env, "no-such-job")
    assert (lines, code) == (["no-such-job not found"], 1)
    after = {key: connection.dump(key) for key in connection.scan_iter("*")}
    assert after == before


def test_mixed_ids_delete_the_known_and_exit_1(env: dict[str, str], connection: redis.Redis) -> None:
    [job_id] = enqueue(env, "http://example.invalid/b.flac")
    lines, code, _ = delete(env, "nope", job_id)
    assert (lines, code) == (["nope not found", f"{job_id} deleted"], 1)
    assert traces(connection, job_id) == []
