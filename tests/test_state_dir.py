"""One service per state dir: a second supervisor, or a second Redis, on a state dir in use is
refused with a message naming the holder, and the first one keeps running untouched.

(`dq up` twice, `dq redis` while `dq up` runs, and `dq up` losing its Redis: tests/test_up.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import DQ, ROOT, Service, free_port, live_workers, run_dq, wait_until


@pytest.mark.timeout(60)
def test_a_second_supervisor_on_one_state_dir_is_refused(
    env: dict[str, str], connection: redis.Redis, start_service: Callable[..., Service]
) -> None:
    first = start_service(env)
    began = time.monotonic()
    second = run_dq(["supervise"], env, timeout=30)
    assert time.monotonic() - began < 10, "refused quickly"
    assert second.returncode == 1, second.stderr
    state_dir = env["DQ_STATE_DIR"]
    assert (
        f"the state dir {state_dir} is in use: a supervisor runs on it as pid {first.pid} (dq supervise)"
        in second.stderr
    )
    assert "started worker" not in second.stderr, "it started nothing"
    assert first.process.poll() is None
    assert live_workers(connection, env) == 4, "the first one's workers, and no more"


@pytest.mark.timeout(60)
def test_supervisors_on_different_state_dirs_run_side_by_side(
    env: dict[str, str], connection: redis.Redis, tmp_path: Path, start_service: Callable[..., Service]
) -> None:
    start_service({**env, "DQ_WORKERS": "1"})
    start_service({**env, "DQ_WORKERS": "1", "DQ_STATE_DIR": str(tmp_path / "other-state")}, wait_workers=0)
    assert wait_until(lambda: live_workers(connection, env) == 2, 30)


@pytest.fixture
def process_manager_redis(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`dq redis` as supervisord, systemd or the Procfile run it, on this test's state dir."""
    process = subprocess.Popen(
        [DQ, "redis"],
        env={k: v for k, v in env.items() if k != "REDIS_URL"},
        cwd=ROOT,
        stdout=(tmp_path / "redis.out").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = redis.Redis(unix_socket_path=str(tmp_path / "state" / "redis.sock"))

    def answers() -> bool:
        assert process.poll() is None, (tmp_path / "redis.out").read_text()
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False

    try:
        assert wait_until(answers, 20, interval=0.1)
        yield process
    finally:
        client.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(20)


@pytest.mark.timeout(60)
def test_up_is_refused_while_a_process_managers_redis_serves_the_state_dir(
    env: dict[str, str], tmp_path: Path, process_manager_redis: subprocess.Popen[bytes]
) -> None:
    pid = process_manager_redis.pid
    # `dq redis` execs into the server itself: the pid that holds the lock is Redis.
    title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")  # Redis rewrites its title
    assert Path(title.split()[0]).name in ("redis-server", "valkey-server"), title
    embedded = {k: v for k, v in env.items() if k != "REDIS_URL"}
    embedded["DQ_DASHBOARD_PORT"] = str(free_port())
    socket_path = tmp_path / "state" / "redis.sock"
    before = os.stat(socket_path).st_ino
    up = subprocess.run([DQ, "up"], env=embedded, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert up.returncode == 1, up.stderr
    assert f"the state dir {tmp_path / 'state'} is in use: its Redis is run by pid {pid} (dq redis)" in up.stderr
    assert os.stat(socket_path).st_ino == before and process_manager_redis.poll() is None
    again = run_dq(["redis"], embedded, timeout=30)
    assert again.returncode == 1 and f"pid {pid} (dq redis)" in again.stderr, again.stderr
