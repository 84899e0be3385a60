"""Retries, resume and per-host backoff against real workers, a real supervisor and real sockets.

The service runs with retries on (RETRY_SETTINGS: 3 retries, 0.2 s then 0.4 s apart); every
other test file runs Phase 1's single attempt (DQ_RETRIES=0).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from config import Settings
from jobs import messages
from tests.faultserver import FaultServer, pattern_bytes
from tests.helpers import (
    RETRY_SETTINGS,
    Service,
    downloading,
    enqueue,
    listed,
    run_dq,
    status_of,
    wait_listed_ended,
    wait_until,
    worker_of,
    worker_pid,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def retry_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, **RETRY_SETTINGS}


def history(env: dict[str, str], job_id: str) -> list[tuple[str, str]]:
    import json

    result = run_dq(["jobs", "--history", job_id, "--json"], env)
    assert result.returncode == 0, result.stderr
    return [(event["event"], event["message"]) for event in json.loads(result.stdout)]


def requests_for(server: FaultServer, fragment: str) -> list[Any]:
    return [entry for entry in server.request_log if fragment in entry.path]


def test_a_flaky_server_is_retried_until_the_file_is_whole(
    retry_env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    start_service(retry_env)
    [job_id] = enqueue(retry_env, fault_server.url("/flaky/2/300000/flaky.flac?status=503"))
    job = wait_listed_ended(retry_env, [job_id], 30)[job_id]
    assert job["state"] == "completed", job
    assert (tmp_path / "downloads" / "flaky.flac").read_bytes() == pattern_bytes(300_000)
    assert len(requests_for(fault_server, "/flaky/")) == 3  # one request per attempt, no HEAD
    assert job["attempts"] == 2 and job["max_attempts"] == 4
    assert job["last_error"] == "HTTP 503 Service Unavailable"
    events = [event for event, _message in history(retry_env, job_id)]
    assert events.count("retrying") == 2 and events[-1] == "completed", events
    assert list((tmp_path / "downloads").rglob("*.part")) == []


def test_a_waiting_retry_is_listed_queued_and_holds_no_worker(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service], connection: redis.Redis
) -> None:
    # The wait must outlast the checks below: four `dq` commands took over 4 s on a loaded CI run.
    slow_env = {**env, "DQ_RETRIES": "3", "DQ_RETRY_DELAYS": "12", "DQ_WORKERS": "1"}
    start_service(slow_env)
    [waiting] = enqueue(slow_env, fault_server.url("/flaky/1/1000/later.flac?status=503"))
    assert wait_until(lambda: status_of(connection, waiting) == "scheduled", 15)
    view = listed(slow_env)[waiting]
    assert (view["state"], view["status"], view["attempts"], view["max_attempts"]) == ("queued", "scheduled", 1, 4)
    assert view["next_attempt_at"] and view["last_error"] == "HTTP 503 Service Unavailable"
    text = run_dq(["jobs"], slow_env).stdout
    assert "retry 2/4 in " in text and "HTTP 503 Service Unavailable" in text, text
    # The only worker is free for other work meanwhile.
    [other] = enqueue(slow_env, fault_server.url("/bytes/1000/other.flac"))
    assert wait_listed_ended(slow_env, [other], 3)[other]["state"] == "completed"
    assert status_of(connection, waiting) == "scheduled"
    assert wait_listed_ended(slow_env, [waiting], 30)[waiting]["state"] == "completed"


def test_an_interrupted_transfer_resumes_with_range_and_if_range(
    retry_env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    size = 2_000_000
    start_service(retry_env)
    [job_id] = enqueue(retry_env, fault_server.url(f"/cut/700000/{size}/cut.flac"))
    job = wait_listed_ended(retry_env, [job_id], 30)[job_id]
    assert job["state"] == "completed", job
    assert (tmp_path / "downloads" / "cut.flac").read_bytes() == pattern_bytes(size)
    first, second = requests_for(fault_server, "/cut/")
    assert "Range" not in first.headers
    offset = int(second.headers["Range"].removeprefix("bytes=").removesuffix("-"))
    assert offset > 0 and second.headers.get("If-Range")
    assert first.bytes_sent + second.bytes_sent < 1.5 * size


def test_retry_after_holds_back_the_job_and_every_job_for_that_host(
    retry_env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    start_service(retry_env)
    [busy] = enqueue(retry_env, fault_server.url("/flaky/1/1000/busy.flac?status=429&retry_after=3"))
    assert wait_until(lambda: len(requests_for(fault_server, "/flaky/")) == 1, 10)
    first_at = requests_for(fault_server, "/flaky/")[0].at
    time.sleep(0.5)
    [same_host] = enqueue(retry_env, fault_server.url("/bytes/1000/same-host.flac"))
    jobs = wait_listed_ended(retry_env, [busy, same_host], 20)
    assert jobs[busy]["state"] == jobs[same_host]["state"] == "completed"
    [retried] = requests_for(fault_server, "/flaky/")[1:]
    assert retried.at - first_at >= 3.0, retried.at - first_at
    [held] = requests_for(fault_server, "same-host")
    assert held.at - first_at >= 3.0, "the other job for that host waited too"
    assert jobs[same_host]["attempts"] == 0  # held back: no attempt used


def test_a_final_error_is_not_retried(
    retry_env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    start_service(retry_env)
    [job_id] = enqueue(retry_env, fault_server.url("/status/404/missing.flac"))
    job = wait_listed_ended(retry_env, [job_id], 20)[job_id]
    assert (job["state"], job["error"], job["attempts"]) == ("failed", "HTTP 404 Not Found", 1)
    time.sleep(1.0)  # longer than every retry delay: nothing more comes
    assert len(requests_for(fault_server, "/status/404")) == 1


def test_out_of_attempts_the_job_fails_with_the_last_message(
    retry_env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    start_service(retry_env)
    [job_id] = enqueue(retry_env, fault_server.url("/status/503/down.flac"))
    job = wait_listed_ended(retry_env, [job_id], 30)[job_id]
    assert (job["state"], job["error"], job["attempts"]) == ("failed", "HTTP 503 Service Unavailable", 4)
    assert len(requests_for(fault_server, "/status/503")) == 4
    assert "HTTP 503 Service Unavailable (after 4 attempts)" in run_dq(["jobs"], retry_env).stdout


def test_a_worker_killed_mid_download_is_retried_and_resumes(
    retry_env: dict[str, str],
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    connection: redis.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    size = 1_200_000
    start_service(retry_env)
    # 200 kB/s: long enough to be killed mid-way, with bytes on disk to resume from.
    [job_id] = enqueue(retry_env, fault_server.url(f"/bytes/{size}/victim.flac?rate=200000"))
    assert wait_until(lambda: downloading(connection, [job_id], settings.download_dir), 20)
    assert wait_until(lambda: sum(p.stat().st_size for p in settings.download_dir.rglob("*.part")) > 200_000, 10)
    os.kill(worker_pid(connection, worker_of(connection, job_id)), signal.SIGKILL)
    job = wait_listed_ended(retry_env, [job_id], 40)[job_id]
    assert job["state"] == "completed", job
    assert (tmp_path / "downloads" / "victim.flac").read_bytes() == pattern_bytes(size)
    events = history(retry_env, job_id)
    assert ("recovered", messages.RECOVERED) in events, events
    assert [event for event, _ in events].index("recovered") < [event for event, _ in events].index("retrying")
    second = requests_for(fault_server, "victim.flac")[-1]
    assert second.headers.get("Range", "").startswith("bytes=") and not second.headers["Range"].startswith("bytes=0-")
    assert list((tmp_path / "downloads").rglob("*.part")) == []


def test_two_urls_with_one_final_name_keep_both_files(
    retry_env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    start_service(retry_env)
    ids = enqueue(
        retry_env,
        fault_server.url("/bytes/300000/a/track.flac"),
        fault_server.url("/bytes/500000/b/track.flac"),
        "--dest",
        "Album",
    )
    jobs = wait_listed_ended(retry_env, ids, 30)
    assert all(job["state"] == "completed" for job in jobs.values()), jobs
    album = tmp_path / "downloads" / "Album"
    assert sorted(path.name for path in album.iterdir()) == ["track (2).flac", "track.flac"]
    sizes = sorted(len(path.read_bytes()) for path in album.iterdir())
    assert sizes == [300_000, 500_000]
    for path in album.iterdir():
        assert path.read_bytes() == pattern_bytes(path.stat().st_size)


def test_the_same_url_twice_is_one_download(
    retry_env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    url = fault_server.url("/bytes/200000/once.flac?rate=400000")
    first = enqueue(retry_env, url)
    again = enqueue(retry_env, url)
    assert again == first  # the earlier job's id, exit 0
    forced = enqueue(retry_env, url, "--force")
    assert forced != first
    start_service(retry_env)
    jobs = wait_listed_ended(retry_env, first + forced, 30)
    assert all(job["state"] == "completed" for job in jobs.values())
    assert len(requests_for(fault_server, "once.flac")) == 2


def test_a_download_interrupted_by_shutdown_is_tried_again_after_restart(
    retry_env: dict[str, str],
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    connection: redis.Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    size = 1_000_000
    quick_stop = {**retry_env, "DQ_SHUTDOWN_GRACE": "1"}
    service = start_service(quick_stop)
    [job_id] = enqueue(quick_stop, fault_server.url(f"/cut/{size}/{size}/stopped.flac?rate=150000"))
    assert wait_until(lambda: downloading(connection, [job_id], settings.download_dir), 20)
    assert service.terminate() == 0
    view = listed(quick_stop)[job_id]
    assert (view["state"], view["status"]) == ("queued", "scheduled"), view
    assert view["last_error"] == messages.shutdown(1)
    assert [path.name for path in settings.download_dir.rglob("*.part")] == [f"stopped.flac.{job_id}.part"]
    start_service(quick_stop)
    job = wait_listed_ended(quick_stop, [job_id], 40)[job_id]
    assert job["state"] == "completed", job
    assert (tmp_path / "downloads" / "stopped.flac").read_bytes() == pattern_bytes(size)
    assert requests_for(fault_server, "stopped.flac")[-1].headers.get("Range", "").startswith("bytes=")
    assert list((tmp_path / "downloads").rglob("*.part")) == []


def test_bin_retry_starts_a_failed_job_again_with_a_fresh_budget(
    retry_env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    start_service(retry_env)
    # A 404 is final: the job fails at once; the file appears on the server later (a retry finds it).
    [job_id] = enqueue(retry_env, fault_server.url("/flaky/1/4000/late.flac?status=404"))
    [done] = enqueue(retry_env, fault_server.url("/bytes/1000/done.flac"))
    jobs = wait_listed_ended(retry_env, [job_id, done], 20)
    assert (jobs[job_id]["state"], jobs[job_id]["attempts"]) == ("failed", 1)
    result = run_dq(["retry", job_id[:8], done, "0" * 8], retry_env)
    assert result.stdout.splitlines() == [f"{job_id} retried", f"{done} not failed", f"{'0' * 8} not found"]
    assert result.returncode == 1
    job = wait_listed_ended(retry_env, [job_id], 20)[job_id]
    assert job["state"] == "completed" and job["attempts"] in (0, None), job
    assert (tmp_path / "downloads" / "late.flac").read_bytes() == pattern_bytes(4000)
    assert ("enqueued", "retried by user") in history(retry_env, job_id)
    assert run_dq(["retry", job_id], retry_env).stdout.strip() == f"{job_id} not failed"


def test_bin_retry_with_an_album_id_retries_its_failed_tracks(
    retry_env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    start_service(retry_env)
    urls = [fault_server.url("/bytes/1000/one.flac"), fault_server.url("/flaky/1/2000/two.flac?status=403")]
    album_id, *tracks = enqueue(retry_env, *urls, "--album", "Retried")
    assert wait_listed_ended(retry_env, tracks, 20)[tracks[1]]["state"] == "failed"
    result = run_dq(["retry", album_id], retry_env)
    assert (result.returncode, result.stdout.strip()) == (0, f"{album_id} retried")
    assert all(job["state"] == "completed" for job in wait_listed_ended(retry_env, tracks, 20).values())
    assert len(requests_for(fault_server, "one.flac")) == 1  # the completed track was left alone
