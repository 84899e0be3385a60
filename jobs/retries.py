"""Retries: whether a failed attempt is tried again, when, and how a waiting retry comes back.

One decision for every place an attempt can end (the job's own exception, a process that
died, a job recovered from a crash, the timeout backstop, the shutdown): `decide` reads the
attempts made so far from the job's meta and says retry-at or fail. A retry is stored as RQ
stores a scheduled job (status `scheduled`, a member of the queue's ScheduledJobRegistry
scored by when it is due), so a waiting retry holds no worker and survives any crash: it
lives in Redis alone. `promote_due` (run by every supervisor, many times a second) moves the
due ones back to the queue in one Lua call each round, skipping deleted ones, so two
supervisors on one Redis never move a job twice.

The job's meta carries the figures the read model shows: `attempts` (made so far),
`max_attempts`, `next_attempt_at` (unix time) and `last_error`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import redis
from rq.job import Job, JobStatus
from rq.timeouts import JobTimeoutException

from config import Settings
from jobs import history, keys, messages
from jobs.connection import SERIALIZER, reply_text
from jobs.errors import DownloadError, HeldBack, HTTPStatusError

JITTER = 0.2  # each computed delay is stretched by up to this fraction (not a server's Retry-After)
BACKOFF_STATUSES = (429, 503)  # a Retry-After with these holds back every job for the host
PROMOTE_BATCH = 500  # due retries moved per call; the next tick takes the rest

# Due retries back to the queue, only if still scheduled and not deleted (see module docstring).
_PROMOTE_DUE = """
local ids = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local moved = {}
for _, id in ipairs(ids) do
  redis.call('zrem', KEYS[1], id)
  local key = ARGV[2] .. id
  if redis.call('hget', key, 'status') == 'scheduled' and not redis.call('zscore', KEYS[3], id) then
    redis.call('hset', key, 'status', 'queued')
    redis.call('rpush', KEYS[2], id)
    moved[#moved + 1] = id
  end
end
if #moved > 0 then
  redis.call('sadd', KEYS[4], KEYS[2])
end
return moved
"""


@dataclass(frozen=True)
class Failure:
    """How one attempt ended, as the retry decision needs it."""

    line: str  # the user's one-line error
    retryable: bool
    retry_after: float | None = None  # the server's Retry-After, seconds
    held_until: float | None = None  # the host is held back until then (unix time): no attempt used
    backoff: bool = False  # a 429/503 with Retry-After: hold back every job for this host


def failure_of(error: BaseException | None, job_timeout: float) -> Failure:
    """The Failure for an exception a job raised (in its worker)."""
    if isinstance(error, JobTimeoutException):
        return Failure(messages.processing_timeout(job_timeout), retryable=True)
    if isinstance(error, HeldBack):
        return Failure(str(error), retryable=True, held_until=error.until)
    if isinstance(error, HTTPStatusError):
        backoff = error.status in BACKOFF_STATUSES and error.retry_after is not None
        return Failure(str(error), error.retryable, retry_after=error.retry_after, backoff=backoff)
    if isinstance(error, DownloadError):
        return Failure(str(error), error.retryable)
    if error is None:
        return Failure(messages.FAILED, retryable=False)
    return Failure(messages.unexpected(error), retryable=False)  # a bug: trying again will not help


def died(line: str) -> Failure:
    """A job whose process died, a crash, a stop by the timeout backstop or the shutdown: all retryable."""
    return Failure(line, retryable=True)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    delays: tuple[float, ...]
    retry_after_max: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.max_attempts, settings.retry_delays or (0.0,), settings.retry_after_max)

    def delay(self, retry_number: int, retry_after: float | None, jitter: Callable[[], float]) -> float:
        """Seconds before retry number `retry_number` (1 for the first retry)."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        base = self.delays[min(retry_number, len(self.delays)) - 1]
        return base * (1 + JITTER * jitter())


@dataclass(frozen=True)
class Decision:
    retry: bool
    attempts: int  # attempts made, this one included (unless it was held back)
    due: float | None = None  # unix time the next attempt may start


def attempts_made(meta: Mapping[str, Any]) -> int:
    value = meta.get("attempts")
    return value if isinstance(value, int) and value >= 0 else 0


def decide(
    meta: Mapping[str, Any],
    failure: Failure,
    policy: RetryPolicy,
    now: float,
    jitter: Callable[[], float] = random.random,
) -> Decision:
    made = attempts_made(meta)
    if failure.held_until is not None and policy.max_attempts > 1:
        return Decision(True, made, max(now, failure.held_until))
    made += 1
    if not failure.retryable or made >= policy.max_attempts:
        return Decision(False, made)
    return Decision(True, made, now + policy.delay(made, failure.retry_after, jitter))


def host_of(url: str) -> str:
    """`host:port` as per-host backoff and its messages name a server."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def note_outcome(job: Job, decision: Decision, failure: Failure, policy: RetryPolicy) -> None:
    """Put the decision's figures into `job.meta` (the caller stores it)."""
    job.meta.update(
        attempts=decision.attempts,
        max_attempts=policy.max_attempts,
        next_attempt_at=decision.due if decision.retry else None,
        last_error=failure.line,
    )


def schedule(
    pipeline: redis.client.Pipeline,
    job: Job,
    decision: Decision,
    failure: Failure,
    policy: RetryPolicy,
    *,
    event: str | None = None,
) -> None:
    """Store `job` as waiting for its retry, inside `pipeline` (in MULTI).

    The caller has already dropped its execution (the started registry entry). `event` (a
    crash's `recovered`, the shutdown's `interrupted`) goes into the history before `retrying`.
    """
    assert decision.retry and decision.due is not None
    note_outcome(job, decision, failure, policy)
    album_id = (job.kwargs or {}).get("album_id")
    job.set_status(JobStatus.SCHEDULED, pipeline=pipeline)
    # The meta field of RQ's job hash (see jobs.rq_compat): Job.save_meta takes no pipeline.
    pipeline.hset(keys.job(job.id), "meta", SERIALIZER.dumps(job.meta))
    # Scored by the exact due time: RQ's ScheduledJobRegistry.schedule rounds down to whole
    # seconds, which would let a retry start before a server's Retry-After has passed.
    pipeline.zadd(keys.scheduled(job.origin), {job.id: decision.due})
    if event is not None:
        history.record(pipeline, job.id, event, failure.line, album_id=album_id)
    wait = max(0.0, decision.due - time.time())
    history.record(
        pipeline,
        job.id,
        history.RETRYING,
        messages.retry_line(decision.attempts + 1, policy.max_attempts, wait, failure.line),
        album_id=album_id,
    )


def promote_due(connection: redis.Redis, queue_name: str, now: float | None = None) -> list[str]:
    """Move retries that are due back to the end of the queue; return their ids."""
    stamp = time.time() if now is None else now
    lua_keys = [keys.scheduled(queue_name), keys.queue(queue_name), keys.TOMBSTONES, keys.QUEUES]
    moved = connection.eval(_PROMOTE_DUE, len(lua_keys), *lua_keys, repr(stamp), keys.job(""), PROMOTE_BATCH)
    return [reply_text(job_id) or "" for job_id in cast(list[bytes], moved or [])]


# --- per-host backoff ------------------------------------------------------------------------
def hold_host(connection: redis.Redis | redis.client.Pipeline, where: str, seconds: float, now: float) -> None:
    """Hold back every job for `where` for `seconds` (a server's Retry-After, already capped)."""
    if seconds <= 0:
        return
    connection.set(keys.backoff(where), repr(now + seconds), px=max(1, math.ceil(seconds * 1000)))


def held_until(reply: Any, now: float) -> float | None:
    """The end of a host's backoff from its key's value, or None when there is none (any more)."""
    text = reply_text(reply)
    try:
        until = float(text) if text else None
    except ValueError:
        return None
    return until if until is not None and until > now else None
