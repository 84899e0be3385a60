"""Metrics: failure causes by type, the Redis counters and the collector's Prometheus text, and a
job completed by a real worker process counted by a scrape in this one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from rq.timeouts import JobTimeoutException
from rq.utils import utcformat

from config import Settings
from jobs import errors, health, keys, metrics, published
from jobs.workers import this_host
from tests.helpers import RETRY_SETTINGS, enqueue, enqueue_track, wait_listed_ended, wait_until

CONTRACT_NAMES = (
    "dq_jobs",
    "dq_active_downloads",
    "dq_workers",
    "dq_bytes_downloaded_total",
    "dq_job_duration_seconds_bucket",
    "dq_job_duration_seconds_count",
    "dq_job_duration_seconds_sum",
    "dq_failures_total",
    "dq_retries_total",
    "dq_oldest_queued_seconds",
)


def scrape(connection: redis.Redis, settings: Settings) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """render() parsed: (sample name, sorted labels) → value."""
    body, content_type = metrics.render(connection, settings)
    assert content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


# --- causes, by type ------------------------------------------------------------------------------
@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (None, "died"),
        (JobTimeoutException("x"), "processing_timeout"),
        (errors.DownloadTimeout(30), "timeout"),
        (errors.ConnectionFailed("refused"), "connection"),
        (errors.IncompleteBody("short"), "incomplete"),
        (errors.HeldBack("h:1", 0.0), "backoff"),
        (errors.HTTPStatusError(404), "http_4xx"),
        (errors.HTTPStatusError(503, 2.0), "http_5xx"),
        (errors.InvalidRequest("bad"), "invalid"),
        (errors.RefusedJob("os.system"), "refused"),
        (errors.PlaylistError("nope"), "playlist"),
        (errors.DiskFull(1, 2), "disk_full"),
        (errors.FileTooLarge(5, 1), "too_large"),
        (errors.OversizedBody("more"), "too_large"),
        (errors.NotAFile(), "not_a_file"),
        (errors.JobDeleted("id"), "deleted"),
        (errors.DownloadError("?"), "other"),
        (ZeroDivisionError("bug"), "unexpected"),
    ],
)
def test_cause_by_type(error: BaseException | None, cause: str) -> None:
    assert metrics.cause_of(error) == cause
    assert cause in metrics.CAUSES


@pytest.mark.timeout(5)
def test_cause_never_read_from_the_message() -> None:
    text = "HTTP 404 Not Found"
    assert metrics.cause_of(errors.ConnectionFailed(text)) == "connection"
    assert metrics.cause_of(errors.InvalidRequest(text)) == "invalid"


@pytest.mark.timeout(5)
def test_buckets_and_bytes() -> None:
    assert metrics.bucket_of(0.05) == 0.1 and metrics.bucket_of(1) == 1 and metrics.bucket_of(1.01) == 2.5
    assert metrics.bucket_of(10_000) is None
    assert metrics.downloaded_bytes({"bytes": 10, "skipped": False}) == 10
    assert metrics.downloaded_bytes({"bytes": 10, "skipped": True}) == 0
    assert metrics.downloaded_bytes(None) == metrics.downloaded_bytes({"bytes": "10"}) == 0


# --- the collector over real Redis ---------------------------------------------------------------
@pytest.mark.timeout(10)
def test_collector_exports_the_recorded_figures(connection: redis.Redis, settings: Settings) -> None:
    empty = scrape(connection, settings)
    for name in CONTRACT_NAMES:
        assert any(key[0] == name for key in empty), name
    assert not any(key[0].startswith(("process_", "python_")) for key in empty)
    assert value(empty, "dq_bytes_downloaded_total") == 0
    assert value(empty, "dq_job_duration_seconds_count") == 0

    metrics.record_completed(connection, 0.7, {"path": "a.flac", "bytes": 1000, "skipped": False})
    metrics.record_completed(connection, 0.9, {"path": "b.flac", "bytes": 500, "skipped": False})
    metrics.record_completed(connection, 42.0, {"path": "a.flac", "bytes": 1000, "skipped": True})
    metrics.record_completed(connection, 5000.0, None)  # above the last bucket
    metrics.record_failure(connection, "http_4xx")
    metrics.record_failure(connection, "http_4xx")
    metrics.record_failure(connection, "disk_full")
    with connection.pipeline() as pipeline:
        metrics.record_retry(pipeline)
        pipeline.execute()
    samples = scrape(connection, settings)
    assert value(samples, "dq_bytes_downloaded_total") == 1500
    assert value(samples, "dq_job_duration_seconds_count") == 4
    assert value(samples, "dq_job_duration_seconds_sum") == pytest.approx(5043.6)
    assert value(samples, "dq_job_duration_seconds_bucket", le="0.5") == 0
    assert value(samples, "dq_job_duration_seconds_bucket", le="1.0") == 2
    assert value(samples, "dq_job_duration_seconds_bucket", le="60.0") == 3
    assert value(samples, "dq_job_duration_seconds_bucket", le="600.0") == 3
    assert value(samples, "dq_job_duration_seconds_bucket", le="+Inf") == 4
    assert value(samples, "dq_failures_total", cause="http_4xx") == 2
    assert value(samples, "dq_failures_total", cause="disk_full") == 1
    assert value(samples, "dq_failures_total", cause="timeout") == 0
    assert value(samples, "dq_retries_total") == 1


@pytest.mark.timeout(10)
def test_collector_reads_queue_and_heartbeat(connection: redis.Redis, env: dict[str, str]) -> None:
    settings = Settings.from_env({**env, "DQ_QUEUE_WARN": "1"})
    first = enqueue_track(connection, settings, "https://example.org/a.flac")
    enqueue_track(connection, settings, "https://example.org/b.flac")
    waited = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=100)
    connection.hset(keys.job(first), "enqueued_at", utcformat(waited))
    published.publish(connection, settings)
    health.beat(connection, settings)
    seconds, micros = connection.time()
    connection.set(keys.heartbeat(this_host()), repr(seconds + micros / 1e6 - 5))
    samples = scrape(connection, settings)
    assert value(samples, "dq_jobs", state="queued") == 2
    assert value(samples, "dq_jobs", state="failed") == 0
    assert value(samples, "dq_oldest_queued_seconds") == pytest.approx(100, abs=3)
    assert value(samples, "dq_supervisor_heartbeat_age_seconds", host=this_host()) == pytest.approx(5, abs=1)
    assert value(samples, "dq_workers") == 0 and value(samples, "dq_active_downloads") == 0
    assert value(samples, "dq_queue_warning") == 1


# --- a real worker process -----------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_metrics_count_a_completed_job_on_another_worker_process(
    env: dict[str, str], settings: Settings, connection: redis.Redis, fault_server, start_service
) -> None:
    """/metrics counts a completed job on another worker process, a retry and a failure by cause."""
    env = {**env, **RETRY_SETTINGS, "DQ_RETRIES": "1", "DQ_WORKERS": "2"}
    start_service(env, wait_workers=2)
    before = scrape(connection, settings)
    assert value(before, "dq_bytes_downloaded_total") == 0
    assert value(before, "dq_workers") == 2

    [done] = enqueue(env, fault_server.url("/bytes/5000/one.flac"))
    [flaky] = enqueue(env, fault_server.url("/flaky/1/3000/two.flac"))
    [missing] = enqueue(env, fault_server.url("/status/404/three.flac"))
    views = wait_listed_ended(env, [done, flaky, missing], timeout=30)
    assert [views[i]["state"] for i in (done, flaky, missing)] == ["completed", "completed", "failed"]

    def counted() -> bool:
        samples = scrape(connection, settings)
        return value(samples, "dq_job_duration_seconds_count") >= 2

    assert wait_until(counted, timeout=5)
    after = scrape(connection, settings)
    assert value(after, "dq_bytes_downloaded_total") == 8000
    assert value(after, "dq_job_duration_seconds_count") == 2
    assert value(after, "dq_job_duration_seconds_sum") > 0
    assert value(after, "dq_job_duration_seconds_bucket", le="+Inf") == 2
    assert value(after, "dq_retries_total") == 1
    assert value(after, "dq_failures_total", cause="http_4xx") == 1
    assert value(after, "dq_jobs", state="completed") == 2
    assert value(after, "dq_jobs", state="failed") == 1
    assert value(after, "dq_supervisor_heartbeat_age_seconds", host=this_host()) < 3 * settings.cleanup_interval
