"""Worker care: dead workers are replaced (with backoff), workers never outlive their
supervisor, and `bin/stats` tells how many really run and download."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import redis

from config import Settings
from supervisor.pool import RESTART_BACKOFF, WorkerPool
from supervisor.processes import horse_pids, list_processes
from tests.faultserver import FaultServer
from tests.helpers import (
    SLOW,
    Service,
    downloading,
    dq_stats,
    enqueue,
    pid_running,
    spawned_workers,
    wait_until,
    wait_workers_registered,
    worker_of,
    worker_pid,
)


@dataclass
class CrashingPool(WorkerPool):
    """A pool whose 'workers' exit at once, as a worker with a broken setup would."""

    def command(self, name: str) -> list[str]:
        return [sys.executable, "-c", "raise SystemExit(3)"]


def test_a_worker_that_dies_young_is_restarted_with_growing_backoff(settings: Settings) -> None:
    pool = CrashingPool(Settings(**{**settings.__dict__, "workers": 1}), env=dict(os.environ))
    now = 100.0
    pool.step(now)
    spawn_times = [now]
    for _ in range(4):
        worker = pool.live[0]
        worker.process.wait(10)
        dead = pool.step(now)  # reaped; not respawned yet
        assert [w.name for w in dead] == [worker.name]
        assert pool.live == []
        delay = pool.slots[0].restart_at - now
        assert pool.step(now + delay - 0.01) == [] and pool.live == []
        now += delay
        pool.step(now)
        assert len(pool.live) == 1
        spawn_times.append(now)
    gaps = [round(b - a, 2) for a, b in zip(spawn_times, spawn_times[1:], strict=False)]
    assert gaps == list(RESTART_BACKOFF[:4])
    pool.kill_all()
    pool.live[0].process.wait(10)


def test_a_worker_that_lived_long_restarts_at_once(settings: Settings) -> None:
    pool = CrashingPool(Settings(**{**settings.__dict__, "workers": 1}), env=dict(os.environ))
    pool.step(0.0)
    pool.live[0].process.wait(10)
    pool.step(1000.0)  # it "lived" 1000 s: healthy, no backoff
    assert len(pool.live) == 1 and pool.slots[0].failures == 0
    pool.live[0].process.wait(10)
    pool.step(1000.0)


@pytest.mark.timeout(60)
def test_a_killed_idle_worker_is_replaced(
    env: dict[str, str], connection: redis.Redis, start_service: Callable[..., Service]
) -> None:
    service = start_service(env)
    wait_workers_registered(connection, service, 4)
    name, pid = spawned_workers(service)[0]
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: len(spawned_workers(service)) == 5, 10), service.log()
    wait_workers_registered(connection, service, 4)
    live = [n for n, p in spawned_workers(service) if pid_running(p)]
    assert name not in live and len(live) == 4


@pytest.mark.timeout(60)
def test_workers_and_their_downloads_die_with_the_supervisor(
    env: dict[str, str],
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    settings: Settings,
) -> None:
    service = start_service(env)
    [job_id] = enqueue(env, fault_server.url(SLOW.format(name="long")))
    assert wait_until(lambda: downloading(connection, [job_id], settings.download_dir), 20)
    name = worker_of(connection, job_id)
    running = worker_pid(connection, name)
    assert horse_pids(name, running, list_processes()) == []  # the worker downloads itself
    workers = [pid for _name, pid in spawned_workers(service)]
    assert running in workers

    os.kill(service.pid, signal.SIGKILL)
    # Parent-death signal: nothing of it keeps running (measured here: well under a second).
    assert wait_until(lambda: not any(pid_running(p) for p in workers), 3)
    assert wait_until(lambda: fault_server.active == 0, 3)


@pytest.mark.timeout(60)
def test_stats_show_workers_and_downloads_as_they_really_are(
    env: dict[str, str],
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    settings: Settings,
) -> None:
    service = start_service(env)
    ids = enqueue(env, *(fault_server.url(SLOW.format(name=f"s{i}")) for i in range(2)))
    assert wait_until(lambda: downloading(connection, ids, settings.download_dir), 20)
    assert dq_stats(env)["worker"] == {"running": True, "activeDownloads": 2, "maxConcurrent": 4, "workers": 4}

    # Killed without a word: the workers' keys stay in Redis for minutes, yet nothing runs.
    service.kill_group()
    assert wait_until(lambda: not any(pid_running(p) for _n, p in spawned_workers(service)), 3)
    assert connection.keys("rq:worker:dq.*")
    assert dq_stats(env)["worker"] == {"running": False, "activeDownloads": 0, "maxConcurrent": 4, "workers": 0}


def test_worker_processes_run_in_their_own_session(settings: Settings) -> None:
    """A terminal's Ctrl-C (SIGINT to the foreground process group) never reaches a worker."""
    pool = WorkerPool(settings, env=dict(os.environ))
    pool.command = lambda name: [sys.executable, "-c", "import time; time.sleep(30)"]  # type: ignore[method-assign]
    pool.step(0.0)
    try:
        for worker in pool.live:
            assert os.getsid(worker.pid) == worker.pid != os.getsid(0)
    finally:
        pool.kill_all()
        for worker in pool.live:
            worker.process.wait(10)
