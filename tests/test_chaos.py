"""Chaos: 150 downloads while workers, work horses and the supervisor itself are SIGKILLed at
random, with retries on (DQ_RETRIES=5). Every job must end completed with its whole file, no
partial file may be left, and nothing may be lost. The figures are printed (run with -s)."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.faultserver import FaultServer, pattern_bytes
from tests.helpers import Service, enqueue, listed, pid_running, spawned_workers, wait_until

JOBS = 150
KILLS = 30


def horses_of(worker_pids: list[int]) -> list[int]:
    """The work horses: children of the workers (a fork leading its own process group)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) in worker_pids:
            found.append(int(entry))
    return found


@pytest.mark.timeout(300)
def test_random_kills_lose_nothing_and_leave_no_partial_file(
    env: dict[str, str],
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    connection: redis.Redis,
    tmp_path: Path,
) -> None:
    chaos_env = {
        **env,
        "DQ_RETRIES": "5",
        "DQ_RETRY_DELAYS": "0.2,0.5",
        "DQ_JOB_TIMEOUT": "30",
        "DQ_REQUEST_TIMEOUT": "3",
    }
    rng = random.Random(20261202)
    sizes = {f"chaos-{i:03d}.bin": rng.randrange(100_000, 400_000) for i in range(JOBS)}
    lines = "\n".join(fault_server.url(f"/bytes/{size}/{name}?rate=800000") for name, size in sizes.items())
    url_file = tmp_path / "urls.txt"
    url_file.write_text(lines + "\n")
    ids = enqueue(chaos_env, "--from-file", str(url_file))
    assert len(ids) == JOBS

    service = start_service(chaos_env)
    kills: Counter[str] = Counter()
    started = time.monotonic()
    while sum(kills.values()) < KILLS and time.monotonic() - started < 60:
        time.sleep(rng.uniform(0.2, 0.6))
        workers = [pid for _name, pid in spawned_workers(service) if pid_running(pid)]
        # The supervisor (and its workers and horses with it) at three points of the run for
        # sure; horses and workers at random in between.
        due_supervisor_kill = sum(kills.values()) >= 8 * (kills["supervisor"] + 1) and kills["supervisor"] < 3
        kind = "supervisor" if due_supervisor_kill else rng.choices(["horse", "worker"], weights=[6, 4])[0]
        if kind == "supervisor":
            os.kill(service.pid, signal.SIGKILL)
            service.process.wait(10)
            kills["supervisor"] += 1
            service = start_service(chaos_env, log_name=f"supervise-after-kill-{kills['supervisor']}.log")
            continue
        victims = horses_of(workers) if kind == "horse" else workers
        if victims:
            try:
                os.kill(rng.choice(victims), signal.SIGKILL)
            except ProcessLookupError:
                continue
            kills[kind] += 1

    def all_ended() -> bool:
        views = listed(chaos_env)
        return all(views.get(job_id, {}).get("state") in ("completed", "failed") for job_id in ids)

    assert wait_until(all_ended, 180, interval=1.0), service.log()
    views = listed(chaos_env)
    lost = [job_id for job_id in ids if job_id not in views]
    failed = {
        job_id: views[job_id].get("error")
        for job_id in ids
        if job_id in views and views[job_id]["state"] != "completed"
    }
    downloads = tmp_path / "downloads"
    wrong = [
        name
        for name, size in sizes.items()
        if not (downloads / name).is_file() or (downloads / name).read_bytes() != pattern_bytes(size)
    ]
    attempts = Counter(views[job_id]["attempts"] for job_id in ids if job_id in views)
    # The last sweep runs within a cleanup interval of the last job ending.
    wait_until(lambda: not list(downloads.rglob("*.part")), 5)
    partial = list(downloads.rglob("*.part"))
    print(
        f"\nchaos: {JOBS} jobs, {sum(kills.values())} kills ({dict(kills)}), in {time.monotonic() - started:.1f}s; "
        f"lost {len(lost)}, failed {len(failed)}, wrong files {len(wrong)}, partial files {len(partial)}; "
        f"jobs by failed attempts {dict(sorted(attempts.items()))}"
    )
    assert sum(kills.values()) >= KILLS // 2, kills
    assert lost == [] and failed == {} and wrong == [] and partial == [], (lost, failed, wrong, partial)
    assert sorted(path.name for path in downloads.iterdir()) == sorted(sizes)
