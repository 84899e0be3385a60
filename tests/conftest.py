"""Fixtures and pytest hooks: a real Redis server for the session, the fault-injecting HTTP
server, and `dq supervise` / `dq dashboard` started as real processes. Helpers live in helpers.py."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import redis
import requests

from config import Settings
from jobs.worker import DownloadWorker
from supervisor.redis_server import RedisServer
from tests.faultserver import FaultServer
from tests.helpers import DQ, FAST_SETTINGS, ROOT, Dashboard, Service, live_workers, wait_until


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-screenshot",
        action="store_true",
        default=False,
        help="copy the browser test's dashboard screenshot to tests/screenshots/ (the README's picture)",
    )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    directory = tmp_path_factory.mktemp("redis")
    server = RedisServer(directory, socket_path=directory / "redis.sock", persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def connection(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def env(tmp_path: Path, redis_server: RedisServer, connection: redis.Redis) -> dict[str, str]:
    """The environment for commands and supervisors in one test: its own dirs, the test Redis."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DQ_") and key != "REDIS_URL"}
    environment.update(FAST_SETTINGS)
    environment["REDIS_URL"] = redis_server.url
    environment["DQ_DOWNLOAD_DIR"] = str(tmp_path / "downloads")
    environment["DQ_STATE_DIR"] = str(tmp_path / "state")
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer()
    server.start()
    yield server
    server.stop()


def spawn_dq(command: str, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[str]:
    """`dq <command>` as a real process in its own session, its output (both streams) to `log_path`."""
    log_file = open(log_path, "w")  # noqa: SIM115 (the child holds it; ours closes below)
    try:
        return subprocess.Popen(
            [DQ, command],
            env=dict(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            start_new_session=True,
        )
    finally:
        log_file.close()


def stop_process(process: subprocess.Popen[str], timeout: float, kill: Callable[[], None] | None = None) -> None:
    """SIGTERM, then `kill` (default: SIGKILL of the process) if it is still there after `timeout`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        if kill is not None:
            kill()
        else:
            process.kill()
            process.wait(10)


@pytest.fixture
def burst_worker(
    env: dict[str, str], settings: Settings, connection: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], DownloadWorker]:
    """Run our worker class in this process until the queue is empty: `work(burst=True)`.

    Its horses still fork (the job timeout, the parent-death signal and the failure path
    are RQ's real ones); the job code reads the test's settings from the environment.
    """
    for key, value in env.items():
        if key.startswith("DQ_") or key == "REDIS_URL":
            monkeypatch.setenv(key, value)

    def run() -> DownloadWorker:
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        worker = DownloadWorker([settings.queue_name], connection=connection)
        try:
            worker.work(burst=True, logging_level="WARNING")
        finally:
            for sig, handler in handlers.items():  # RQ installs its own in work()
                signal.signal(sig, handler)
        return worker

    return run


@pytest.fixture
def start_service(tmp_path: Path, connection: redis.Redis) -> Iterator[Callable[..., Service]]:
    """Start `dq supervise` (default) as a real process; always cleaned up after the test."""
    started: list[Service] = []

    def start(
        env: Mapping[str, str],
        command: str = "supervise",
        wait_workers: int | None = None,
        log_name: str | None = None,
    ) -> Service:
        log_path = tmp_path / (log_name or f"{command}-{len(started)}.log")
        process = spawn_dq(command, env, log_path)
        service = Service(process, log_path)
        started.append(service)
        expected = wait_workers if wait_workers is not None else int(env.get("DQ_WORKERS", "4"))
        if expected:
            ok = wait_until(lambda: live_workers(connection, env) >= expected, timeout=30)
            assert ok, f"{expected} workers did not come up:\n{service.log()}"
        return service

    yield start
    for service in started:
        # Workers run in their own sessions and die with the supervisor (parent-death signal).
        stop_process(service.process, 15, service.kill_group)


@pytest.fixture
def start_dashboard(tmp_path: Path) -> Iterator[Callable[..., Dashboard]]:
    """Start `dq dashboard` with this env; returns once it answers HTTP. Stopped after the test."""
    started: list[Dashboard] = []

    def start(env: Mapping[str, str], connect_host: str = "127.0.0.1") -> Dashboard:
        log_path = tmp_path / f"dashboard-{len(started)}.log"
        process = spawn_dq("dashboard", env, log_path)
        dashboard = Dashboard(process, f"http://{connect_host}:{env['DQ_DASHBOARD_PORT']}/", log_path)
        started.append(dashboard)

        def answers() -> bool:
            assert process.poll() is None, f"dq dashboard exited {process.returncode}:\n{dashboard.log()}"
            try:
                requests.get(dashboard.url("static/favicon.ico"), timeout=2)
            except requests.ConnectionError:
                return False
            return True

        assert wait_until(answers, timeout=30, interval=0.2), f"dashboard never answered:\n{dashboard.log()}"
        return dashboard

    yield start
    for dashboard in started:
        stop_process(dashboard.process, 10)
