"""Prometheus metrics: counters every worker adds to in Redis, and the collector `/metrics` reads.

The figures live in Redis, not in one process's memory, so they are right across the
worker processes of every host (and survive a worker's restart):

    dq:metrics           hash (`jobs.keys.METRICS`): `bytes_downloaded`, `retries`,
                         `failures:<cause>` (a job that ended failed, by CAUSES)
    dq:metrics:duration  hash (`jobs.keys.DURATIONS`): the completed jobs' duration histogram:
                         `bucket:<upper bound>` (not cumulative: the smallest bucket a job fell
                         in; above the last bound only `count`), `sum`, `count`

A failure's cause is judged by the exception's type (never its text); a job whose process died
without reporting is `died`. Failures the supervisor records itself (a crash recovered after
its worker died) are not counted here. The reading side, `render`, builds a fresh registry per
scrape with `RedisCollector` alone (no process metrics of the serving process): its own reads
take two pipelined round trips, plus what `jobs.stats.stats` reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from rq.timeouts import JobTimeoutException
from rq.utils import str_to_date

from config import Settings
from jobs import errors, health, keys
from jobs.connection import reply_text
from jobs.stats import stats

# Upper bounds (seconds) of the job-duration histogram's buckets.
BUCKETS: tuple[float, ...] = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
BYTES = "bytes_downloaded"
RETRIES = "retries"
_FAILURE_PREFIX = "failures:"

# Every cause label `dq_failures_total` carries (each exported, 0 until it happens).
CAUSES = (
    "timeout",  # no answer / too slow for the request timeout (DownloadTimeout)
    "processing_timeout",  # the job timeout (RQ's JobTimeoutException)
    "connection",  # refused, reset, DNS, TLS (ConnectionFailed)
    "incomplete",  # fewer bytes than Content-Length (IncompleteBody)
    "backoff",  # the host asked us to wait and no retry was left (HeldBack)
    "http_4xx",
    "http_5xx",
    "invalid",  # bad URL, private address, path outside the download dir (InvalidRequest)
    "refused",  # a job naming a function that is not ours (RefusedJob)
    "playlist",  # a playlist that cannot be used (PlaylistError)
    "disk_full",
    "too_large",  # over DQ_MAX_FILE_MB, or more bytes than Content-Length promised
    "not_a_file",  # a web page where a file was asked for
    "deleted",
    "died",  # its process died without reporting (killed, OOM, the timeout backstop)
    "other",  # any other download error
    "unexpected",  # an exception that is no download error: a bug
)
DIED = "died"

# Most specific first: the first class the error is an instance of names its cause.
_CAUSE_BY_TYPE: tuple[tuple[type[BaseException], str], ...] = (
    (JobTimeoutException, "processing_timeout"),
    (errors.DownloadTimeout, "timeout"),
    (errors.ConnectionFailed, "connection"),
    (errors.IncompleteBody, "incomplete"),
    (errors.HeldBack, "backoff"),
    (errors.RefusedJob, "refused"),
    (errors.InvalidRequest, "invalid"),
    (errors.PlaylistError, "playlist"),
    (errors.DiskFull, "disk_full"),
    (errors.FileTooLarge, "too_large"),
    (errors.OversizedBody, "too_large"),
    (errors.NotAFile, "not_a_file"),
    (errors.JobDeleted, "deleted"),
    (errors.DownloadError, "other"),
)

Writer = redis.Redis | redis.client.Pipeline


# --- recording (called by the workers) ---------------------------------------------------------
def cause_of(error: BaseException | None) -> str:
    """The `cause` label for an attempt that raised `error` (None: its process died)."""
    if error is None:
        return DIED
    if isinstance(error, errors.HTTPStatusError):
        return "http_5xx" if error.status >= 500 else "http_4xx"
    for kind, cause in _CAUSE_BY_TYPE:
        if isinstance(error, kind):
            return cause
    return "unexpected"


def bucket_of(seconds: float) -> float | None:
    """The smallest bucket bound `seconds` fits under; None above the last one."""
    return next((bound for bound in BUCKETS if seconds <= bound), None)


def _bucket_field(bound: float) -> str:
    return f"bucket:{bound:g}"


def downloaded_bytes(result: Any) -> int:
    """Bytes a completed track job fetched, from its return value (a skipped one fetched none)."""
    if not isinstance(result, Mapping) or result.get("skipped"):
        return 0
    size = result.get("bytes")
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 0


def seconds_between(started: datetime | None, ended: datetime | None) -> float | None:
    """A job's running time (RQ's `started_at` to `ended_at`), None when either is unknown."""
    if started is None or ended is None:
        return None
    return (ended - started).total_seconds()


def record_completed(connection: Writer, seconds: float | None, result: Any = None) -> None:
    """A job completed after `seconds` of running, returning `result` (joins the caller's pipeline)."""
    size = downloaded_bytes(result)
    if size:
        connection.hincrby(keys.METRICS, BYTES, size)
    if seconds is not None and seconds >= 0:
        bound = bucket_of(seconds)
        if bound is not None:
            connection.hincrby(keys.DURATIONS, _bucket_field(bound), 1)
        connection.hincrbyfloat(keys.DURATIONS, "sum", seconds)
        connection.hincrby(keys.DURATIONS, "count", 1)


def record_failure(connection: Writer, cause: str) -> None:
    """A job ended failed (no retry left) for `cause` (one of CAUSES)."""
    connection.hincrby(keys.METRICS, _FAILURE_PREFIX + (cause if cause in CAUSES else "other"), 1)


def record_retry(connection: Writer) -> None:
    """A failed attempt was scheduled to be tried again (may join the caller's pipeline)."""
    connection.hincrby(keys.METRICS, RETRIES, 1)


# --- reading (the /metrics scrape) -------------------------------------------------------------
def _as_float(value: Any) -> float:
    try:
        return float(reply_text(value) or 0)
    except ValueError:
        return 0.0


def _decoded(raw: Any) -> dict[str, float]:
    return {reply_text(name) or "": _as_float(value) for name, value in cast(dict[Any, Any], raw or {}).items()}


def _enqueued_at(reply: Any) -> float | None:
    text = reply_text(reply)
    if not text:
        return None
    try:
        return str_to_date(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def read(connection: redis.Redis, settings: Settings) -> dict[str, Any]:
    """Every figure the collector exports, read from Redis."""
    with connection.pipeline(transaction=False) as pipeline:
        pipeline.time()
        pipeline.hgetall(keys.METRICS)
        pipeline.hgetall(keys.DURATIONS)
        pipeline.lindex(keys.queue(settings.queue_name), 0)
        pipeline.hkeys(keys.PUBLISHED)
        now_reply, counters, durations, head, fields = pipeline.execute()
    hosts = health.supervisor_hosts(fields)
    head_id = reply_text(head)
    with connection.pipeline(transaction=False) as pipeline:
        pipeline.hget(keys.job(head_id or ""), "enqueued_at")
        pipeline.mget([keys.heartbeat(host) for host in hosts] or [keys.heartbeat("")])
        enqueued_reply, beat_replies = pipeline.execute()
    now = health.redis_time(now_reply)
    enqueued = _enqueued_at(enqueued_reply) if head_id else None
    beats = {host: health.parse_beat(reply) for host, reply in zip(hosts, beat_replies, strict=False)}
    return {
        "now": now,
        "stats": stats(connection, settings),
        "counters": _decoded(counters),
        "durations": _decoded(durations),
        "oldest_queued": max(0.0, now - enqueued) if enqueued is not None else 0.0,
        "heartbeat_ages": {host: max(0.0, now - beat) for host, beat in beats.items() if beat is not None},
    }


def families(figures: Mapping[str, Any], settings: Settings) -> Iterable[Metric]:
    """The metric families for `figures` (as `read` returns them)."""
    queue, worker = figures["stats"]["queue"], figures["stats"]["worker"]
    jobs = GaugeMetricFamily("dq_jobs", "Jobs by state (queued includes nothing waiting for a retry)", labels=["state"])
    for state in ("queued", "processing", "completed", "failed"):
        jobs.add_metric([state], queue[state])
    yield jobs
    yield GaugeMetricFamily("dq_active_downloads", "Downloads running now", value=worker["activeDownloads"])
    yield GaugeMetricFamily("dq_workers", "Workers live (all hosts)", value=worker["workers"])
    yield GaugeMetricFamily("dq_workers_expected", "DQ_WORKERS of the reading process", value=settings.workers)
    counters: dict[str, float] = figures["counters"]
    yield CounterMetricFamily(
        "dq_bytes_downloaded", "Bytes of completed downloads (all workers)", value=counters.get(BYTES, 0)
    )
    yield CounterMetricFamily(
        "dq_retries", "Failed attempts scheduled to be tried again", value=counters.get(RETRIES, 0)
    )
    failures = CounterMetricFamily("dq_failures", "Jobs that ended failed, by cause", labels=["cause"])
    for cause in CAUSES:
        failures.add_metric([cause], counters.get(_FAILURE_PREFIX + cause, 0))
    yield failures
    durations: dict[str, float] = figures["durations"]
    cumulative, buckets = 0.0, []
    for bound in BUCKETS:
        cumulative += durations.get(_bucket_field(bound), 0)
        buckets.append((floatToGoString(bound), cumulative))
    buckets.append(("+Inf", max(cumulative, durations.get("count", 0))))
    yield HistogramMetricFamily(
        "dq_job_duration_seconds",
        "Running time of completed jobs",
        buckets=buckets,
        sum_value=durations.get("sum", 0),
    )
    yield GaugeMetricFamily(
        "dq_oldest_queued_seconds", "Age of the job next in the queue (0: empty)", value=figures["oldest_queued"]
    )
    ages = GaugeMetricFamily(
        "dq_supervisor_heartbeat_age_seconds", "Seconds since each host's supervisor last ran", labels=["host"]
    )
    for host, age in sorted(figures["heartbeat_ages"].items()):
        ages.add_metric([host], age)
    yield ages
    limits = GaugeMetricFamily("dq_queue_limit", "DQ_QUEUE_WARN and DQ_QUEUE_MAX", labels=["kind"])
    limits.add_metric(["warn"], settings.queue_warn)
    limits.add_metric(["max"], settings.queue_max)
    yield limits
    yield GaugeMetricFamily(
        "dq_queue_warning",
        "1 while more than DQ_QUEUE_WARN jobs are queued",
        value=1 if queue["queued"] > settings.queue_warn else 0,
    )


class RedisCollector:
    """A prometheus_client collector that reads every figure from Redis at each scrape."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings

    def collect(self) -> Iterable[Metric]:
        return list(families(read(self.connection, self.settings), self.settings))


def render(connection: redis.Redis, settings: Settings) -> tuple[bytes, str]:
    """The `/metrics` answer: body and content type. Raises redis' ConnectionError when Redis
    is unreachable (answer 503 then)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(connection, settings))
    return generate_latest(registry), CONTENT_TYPE_LATEST
