"""Graceful shutdown against real processes: SIGTERM lets short downloads finish, stops long
ones after the grace with the shutdown message, leaves queued jobs queued, exits 0."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
import redis

from config import Settings
from jobs.failure import failure_reason
from tests.faultserver import FaultServer
from tests.helpers import (
    SLOW,
    Service,
    downloading,
    enqueue,
    error_of,
    pid_running,
    spawned_workers,
    status_of,
    wait_ended,
    wait_until,
)


@pytest.mark.timeout(60)
def test_sigterm_lets_a_short_download_finish(
    env: dict[str, str],
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    settings: Settings,
) -> None:
    service = start_service({**env, "DQ_WORKERS": "1"})
    running, queued = enqueue(
        env, fault_server.url("/slow/40000/short.flac?seconds=2"), fault_server.url("/bytes/1000/later.flac")
    )
    assert wait_until(lambda: downloading(connection, [running], settings.download_dir), 20)

    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(settings.shutdown_grace + 10) == 0, service.log()

    assert status_of(connection, running) == "finished"
    assert status_of(connection, queued) == "queued"
    assert (settings.download_dir / "short.flac").stat().st_size == 40000
    assert list(settings.download_dir.rglob("*.part")) == []
    assert not any(pid_running(pid) for _name, pid in spawned_workers(service))


@pytest.mark.timeout(60)
def test_sigterm_stops_a_long_download_after_the_grace(
    env: dict[str, str],
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    settings: Settings,
) -> None:
    service = start_service({**env, "DQ_WORKERS": "2"})
    long_ids = enqueue(env, *(fault_server.url(SLOW.format(name=f"long{i}")) for i in range(2)))
    [queued] = enqueue(env, fault_server.url("/bytes/1000/later.flac"))
    assert wait_until(lambda: downloading(connection, long_ids, settings.download_dir), 20)

    signalled = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(settings.shutdown_grace + 15) == 0, service.log()
    took = time.monotonic() - signalled

    message = f"Interrupted by shutdown ({settings.shutdown_grace:g}s grace exceeded)"
    assert took >= settings.shutdown_grace - 0.5, took
    for job_id in long_ids:
        assert status_of(connection, job_id) == "failed"
        assert error_of(connection, job_id) == message
        assert failure_reason(connection, job_id) == message
    assert status_of(connection, queued) == "queued"
    assert list(settings.download_dir.rglob("*.part")) == []
    assert not any(pid_running(pid) for _name, pid in spawned_workers(service))
    assert "shutdown grace of 4s ran out" in service.log()


@pytest.mark.timeout(60)
def test_second_signal_stops_now_with_the_same_message(
    env: dict[str, str],
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    settings: Settings,
) -> None:
    service = start_service({**env, "DQ_WORKERS": "1", "DQ_SHUTDOWN_GRACE": "30"})
    [job_id] = enqueue(env, fault_server.url(SLOW.format(name="long")))
    [queued] = enqueue(env, fault_server.url("/bytes/1000/later.flac"))
    assert wait_until(lambda: downloading(connection, [job_id], settings.download_dir), 20)

    service.process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    second = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(15) == 0, service.log()

    assert time.monotonic() - second < 5
    assert wait_ended(connection, [job_id], 5)[job_id] == "failed"
    assert error_of(connection, job_id) == "Interrupted by shutdown (30s grace exceeded)"
    assert status_of(connection, queued) == "queued"
    assert list(settings.download_dir.rglob("*.part")) == []


@pytest.mark.timeout(90)
def test_queued_jobs_run_after_the_next_start(
    env: dict[str, str],
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
) -> None:
    service = start_service({**env, "DQ_WORKERS": "1"})
    assert service.terminate() == 0
    ids = enqueue(env, *(fault_server.url(f"/bytes/2000/q{i}.flac") for i in range(3)))
    assert all(status_of(connection, job_id) == "queued" for job_id in ids)
    start_service({**env, "DQ_WORKERS": "1"}, wait_workers=0)
    assert set(wait_ended(connection, ids, 30).values()) == {"finished"}
