"""RQ_KEY_PREFIX end to end: a real download, a deletion and a crash recovery on a service
whose RQ keys live under another prefix; nothing of ours may fall back to `rq:`."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from jobs import messages
from jobs.paths import part_path
from tests.faultserver import FaultServer, pattern_bytes
from tests.helpers import Service, dq_stats, enqueue, listed, run_dq, wait_until

PREFIX = "dqtest"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def state_of(env: dict[str, str], job_id: str) -> str | None:
    return listed(env).get(job_id, {}).get("state")


def test_download_deletion_and_recovery_under_another_key_prefix(
    connection: redis.Redis,
    env: dict[str, str],
    fault_server: FaultServer,
    start_service: Callable[..., Service],
) -> None:
    env = {**env, "RQ_KEY_PREFIX": PREFIX}
    downloads = Path(env["DQ_DOWNLOAD_DIR"])
    # This test process imported rq without the prefix: count workers through `dq` itself.
    start_service(env, wait_workers=0)
    assert wait_until(lambda: dq_stats(env)["worker"]["workers"] == 4, timeout=30)

    [done] = enqueue(env, fault_server.url("/bytes/200000/one.flac"))
    assert wait_until(lambda: state_of(env, done) == "completed", timeout=20)
    assert (downloads / "one.flac").read_bytes() == pattern_bytes(200000)

    [deleted] = enqueue(env, fault_server.url("/slow/2000000/two.flac?seconds=30"))
    assert wait_until(lambda: part_path(downloads / "two.flac", deleted).exists(), timeout=20)
    result = run_dq(["delete", deleted], env)
    assert result.stdout.split() == [deleted, "cancelled"], result.stderr
    assert list(connection.scan_iter(f"*{deleted}*")) == []

    [crashed] = enqueue(env, fault_server.url("/slow/2000000/three.flac?seconds=30"))
    assert wait_until(lambda: part_path(downloads / "three.flac", crashed).exists(), timeout=20)
    worker_name = connection.hget(f"{PREFIX}:job:{crashed}", "worker_name")
    assert worker_name, "the started job names its worker under the prefix"
    worker_pid = int(connection.hget(f"{PREFIX}:worker:{worker_name.decode()}", "pid") or 0)
    os.kill(worker_pid, signal.SIGKILL)
    assert wait_until(lambda: state_of(env, crashed) == "failed", timeout=20)
    assert listed(env)[crashed]["error"] == messages.RECOVERED
    assert not part_path(downloads / "three.flac", crashed).exists()

    assert [key for key in connection.scan_iter("rq:*")] == []
    assert any(True for _ in connection.scan_iter(f"{PREFIX}:job:*"))
