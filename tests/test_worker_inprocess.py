"""The worker class in-process: `DownloadWorker(...).work(burst=True)` against the session
Redis and the fault server, in seconds. What an RQ upgrade would break shows up here first:
the stored failure line, a deletion while the job runs, a success with its history."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq.job import Job

from config import Settings
from jobs import history, messages
from jobs.connection import SERIALIZER
from jobs.deletion import CANCELLED, delete_jobs
from jobs.enqueue import TrackRequest, enqueue_tracks
from jobs.paths import part_path
from jobs.views import error_line
from jobs.worker import DownloadWorker
from supervisor.redis_server import RedisServer
from tests.faultserver import FaultServer, pattern_bytes
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)


def job_of(connection: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=connection, serializer=SERIALIZER)


def events_of(connection: redis.Redis, job_id: str) -> list[tuple[str | None, str]]:
    return [(event["event"], event["message"]) for event in history.read(connection, job_id)]


def test_success_stores_the_result_and_the_history(
    connection: redis.Redis, settings: Settings, fault_server: FaultServer, burst_worker: Callable[[], DownloadWorker]
) -> None:
    [job_id] = enqueue_tracks(connection, settings, [TrackRequest(fault_server.url("/bytes/300000/song.flac"))])
    burst_worker()
    done = job_of(connection, job_id)
    assert done.get_status() == "finished"
    assert done.return_value() == {"path": "song.flac", "bytes": 300000, "skipped": False}
    assert (settings.download_dir / "song.flac").read_bytes() == pattern_bytes(300000)
    assert [event for event, _ in events_of(connection, job_id)] == ["enqueued", "started", "completed"]


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("/status/404", "HTTP 404 Not Found"),
        ("/status/503", "HTTP 503 Service Unavailable"),
        ("/hang", messages.download_timeout(1)),
        ("/truncate/100000", "Incomplete download: got 50000 of 100000 bytes"),
    ],
)
def test_a_failure_is_stored_with_its_one_line_error_first(
    connection: redis.Redis,
    settings: Settings,
    fault_server: FaultServer,
    burst_worker: Callable[[], DownloadWorker],
    path: str,
    line: str,
) -> None:
    [job_id] = enqueue_tracks(connection, settings, [TrackRequest(fault_server.url(path))])
    burst_worker()
    failed = job_of(connection, job_id)
    assert failed.get_status() == "failed"
    assert error_line(failed) == line
    assert "Traceback" in (failed.latest_result().exc_string or "")  # RQ's traceback follows the line
    assert events_of(connection, job_id)[-1] == ("failed", line)


def test_rq_job_timeout_reads_as_the_processing_timeout(
    connection: redis.Redis, settings: Settings, fault_server: FaultServer, burst_worker: Callable[[], DownloadWorker]
) -> None:
    short = dataclasses.replace(settings, job_timeout=2)
    # 3 KiB/s keeps the low-speed guard (1 KiB/s) quiet; 60 KiB would take 20 s.
    [job_id] = enqueue_tracks(connection, short, [TrackRequest(fault_server.url("/bytes/61440?rate=3072"))])
    burst_worker()
    assert error_line(job_of(connection, job_id)) == "Processing timeout (2s exceeded)"
    assert not list(Path(settings.download_dir).rglob("*.part"))


def test_deletion_while_running_stops_the_download_and_leaves_nothing(
    connection: redis.Redis,
    redis_server: RedisServer,
    settings: Settings,
    fault_server: FaultServer,
    burst_worker: Callable[[], DownloadWorker],
) -> None:
    [job_id] = enqueue_tracks(
        connection, settings, [TrackRequest(fault_server.url("/slow/2000000/big.bin?seconds=20"))]
    )
    outcome: list[tuple[str, str]] = []

    def delete_once_downloading() -> None:
        other = redis.Redis.from_url(redis_server.url)
        assert wait_until(lambda: part_path(settings.download_dir / "big.bin", job_id).exists(), timeout=15)
        outcome.extend(delete_jobs(other, settings, [job_id]))
        other.close()

    deleter = threading.Thread(target=delete_once_downloading)
    deleter.start()
    burst_worker()
    deleter.join(30)
    assert outcome == [(job_id, CANCELLED)]
    assert [key for key in connection.scan_iter(f"*{job_id}*")] == []
    assert not part_path(settings.download_dir / "big.bin", job_id).exists()
    assert not (settings.download_dir / "big.bin").exists()
    assert events_of(connection, job_id)[-1] == ("cancelled", messages.CANCELLED)
