"""Shared fixtures: a real Redis server for the session, the fault-injecting HTTP server,
and helpers that run `dq` commands and supervisors as real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from config import Settings
from supervisor.redis_server import RedisServer
from tests.faultserver import FaultServer

ROOT = Path(__file__).resolve().parent.parent
DQ = str(Path(sys.executable).with_name("dq"))

# Small settings so end-to-end tests run in seconds; production defaults are asserted
# separately in test_settings.py.
FAST_SETTINGS = {
    "DQ_REQUEST_TIMEOUT": "1",
    "DQ_JOB_TIMEOUT": "8",
    "DQ_CLEANUP_INTERVAL": "0.5",
    "DQ_SHUTDOWN_GRACE": "4",
    "DQ_ALLOW_PRIVATE_NETWORKS": "1",
}


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
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DQ_") and key != "REDIS_URL"
    }
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


def run_dq(
    args: list[str], env: Mapping[str, str], *, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DQ, *args], env=dict(env), input=input, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def enqueue(env: Mapping[str, str], *args: str) -> list[str]:
    """`dq enqueue ARGS`; the ids it printed (for an album: the album id first)."""
    result = run_dq(["enqueue", *args], env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def listed(env: Mapping[str, str], *args: str) -> dict[str, dict[str, Any]]:
    """`dq jobs --json ARGS`, by id."""
    result = run_dq(["jobs", "--json", *args], env)
    assert result.returncode == 0, result.stderr
    return {view["id"]: view for view in json.loads(result.stdout)}


def album_when_ended(env: Mapping[str, str], album_id: str, timeout: float) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def ended() -> bool:
        seen.update(listed(env).get(album_id, {}))
        return seen.get("state") in ("completed", "failed", "partial")

    assert wait_until(ended, timeout, interval=0.3), seen
    return seen


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@dataclass
class Service:
    """A `dq supervise` (or `dq up`) process started by a test."""

    process: subprocess.Popen[str]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill_group(self) -> None:
        """SIGKILL the whole process group (the supervisor and anything left in it)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)


def live_workers(connection: redis.Redis, env: Mapping[str, str]) -> int:
    """Workers really running (a killed worker's key lingers in Redis for minutes)."""
    from jobs.queue import live_workers as running

    return len(running(connection, Settings.from_env(env)))


@pytest.fixture
def start_service(tmp_path: Path, connection: redis.Redis) -> Iterator[Callable[..., Service]]:
    """Start `dq supervise` (default) as a real process; always cleaned up after the test."""
    started: list[Service] = []

    def start(
        env: Mapping[str, str], command: str = "supervise", wait_workers: int | None = None,
        log_name: str | None = None,
    ) -> Service:
        log_path = tmp_path / (log_name or f"{command}-{len(started)}.log")
        log_file = open(log_path, "w")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            [DQ, command], env=dict(env), stdout=log_file, stderr=subprocess.STDOUT, text=True,
            cwd=ROOT, start_new_session=True,
        )
        service = Service(process, log_path)
        started.append(service)
        expected = wait_workers if wait_workers is not None else int(env.get("DQ_WORKERS", "4"))
        if expected:
            ok = wait_until(lambda: live_workers(connection, env) >= expected, timeout=30)
            assert ok, f"{expected} workers did not come up:\n{service.log()}"
        return service

    yield start
    for service in started:
        if service.process.poll() is None:
            service.process.send_signal(signal.SIGTERM)
            try:
                service.process.wait(15)
            except subprocess.TimeoutExpired:
                service.kill_group()
        # Workers run in their own sessions and die with the supervisor (parent-death signal).
