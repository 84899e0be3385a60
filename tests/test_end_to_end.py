"""Checklist tests 1 and 5 and the failure messages, against real `rq worker` processes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.faultserver import FaultServer, pattern_bytes
from tests.helpers import Service, enqueue, run_dq, wait_listed_ended


@pytest.mark.timeout(60)
def test_track_downloads_into_dest(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    start_service(env)
    [job_id] = enqueue(env, fault_server.url("/bytes/2500000/Song%20One.flac"), "--dest", "Artist/Album")
    job = wait_listed_ended(env, [job_id], 30)[job_id]
    assert job["state"] == "completed", job
    final = tmp_path / "downloads" / "Artist" / "Album" / "Song One.flac"
    assert final.read_bytes() == pattern_bytes(2_500_000)
    assert job["progress"] == {"bytes_done": 2_500_000, "bytes_total": 2_500_000, "rate": job["progress"]["rate"]}
    assert job["path"] == "Artist/Album/Song One.flac"
    assert job["started_at"] and job["ended_at"]
    assert list((tmp_path / "downloads").rglob("*.part")) == []


@pytest.mark.timeout(60)
def test_checklist_1_hung_server_fails_with_the_timeout_message(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    """Submit a job against a server that never answers: it fails after the request timeout."""
    start_service(env)
    started = time.monotonic()
    [hung] = enqueue(env, fault_server.url("/hang/never.flac"))
    [stalled] = enqueue(env, fault_server.url("/hang-body/100000/half.flac"))
    [trickle] = enqueue(env, fault_server.url("/trickle/100000/drip.flac?interval=0.2"))
    jobs = wait_listed_ended(env, [hung, stalled, trickle], 30)
    elapsed = time.monotonic() - started
    for job_id in (hung, stalled, trickle):
        assert jobs[job_id]["state"] == "failed"
        assert jobs[job_id]["error"] == "Download timeout (1s)"
    # request timeout 1 s, job timeout 8 s: the request limit fired, not the job budget
    assert elapsed < 8, elapsed
    assert list((tmp_path / "downloads").rglob("*")) == [] or all(
        p.is_dir() for p in (tmp_path / "downloads").rglob("*")
    )


@pytest.mark.timeout(60)
def test_processing_timeout_message(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    """A download that keeps making progress but outlives the job timeout."""
    env = dict(env, DQ_JOB_TIMEOUT="3")
    start_service(env)
    [job_id] = enqueue(env, fault_server.url("/slow/2000000/long.flac?seconds=20"))
    job = wait_listed_ended(env, [job_id], 25)[job_id]
    assert job["state"] == "failed"
    assert job["error"] == "Processing timeout (3s exceeded)"
    assert list((tmp_path / "downloads").rglob("long.flac*")) == []
    assert fault_server.wait_until(lambda s: s.active == 0, 5), "the connection was closed"


@pytest.mark.timeout(60)
def test_error_lines(env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]) -> None:
    start_service(env)
    ids = enqueue(
        env,
        fault_server.url("/status/404/missing.flac"),
        fault_server.url("/status/503/busy.flac"),
        fault_server.url("/truncate/100000/short.flac"),
        "http://127.0.0.1:1/refused.flac",
    )
    jobs = wait_listed_ended(env, ids, 30)
    assert [jobs[i]["error"] for i in ids] == [
        "HTTP 404 Not Found",
        "HTTP 503 Service Unavailable",
        "Incomplete download: got 50000 of 100000 bytes",
        "Connection refused (127.0.0.1:1)",
    ]
    plain = run_dq(["jobs", "--state", "failed"], env).stdout
    assert "error: HTTP 404 Not Found" in plain


@pytest.mark.timeout(90)
def test_checklist_5_concurrency_never_exceeds_4(
    env: dict[str, str],
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    connection: redis.Redis,
) -> None:
    """Submit 10 jobs and watch the stats: active downloads reach 4 and never exceed it."""
    start_service(env)
    assert json.loads(run_dq(["stats", "--json"], env).stdout)["worker"]["workers"] == 4
    ids = enqueue(env, *[fault_server.url(f"/slow/200000/t{i}.flac?seconds=2") for i in range(10)])
    samples: list[dict[str, Any]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            samples.append(json.loads(run_dq(["stats", "--json"], env).stdout))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        jobs = wait_listed_ended(env, ids, 60)
    finally:
        stop.set()
        watcher.join(10)
    assert all(jobs[i]["state"] == "completed" for i in ids)
    assert fault_server.max_active == 4
    active = [sample["worker"]["activeDownloads"] for sample in samples]
    assert max(active) <= 4 and max(active) >= 3, active
    assert all(sample["worker"]["maxConcurrent"] == 4 for sample in samples)
    assert all(sample["queue"]["processing"] <= 4 for sample in samples)
    final = samples[-1] if samples else json.loads(run_dq(["stats", "--json"], env).stdout)
    assert final["queue"]["total"] == 10
