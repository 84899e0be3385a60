"""Failing a job no worker will finish, the way RQ would, without racing its worker.

Two parts, both used by the supervisor (recovery, timeout backstop, shutdown):

- the failure reason: before the supervisor kills a horse it says why, so whoever records
  the failure (the horse's worker, which sees it die, or the supervisor) uses that text;
- the safe failure of a started job, one WATCHed transaction (see `fail_started_job`).
"""

from __future__ import annotations

import logging

import redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.rate_limit import release_slot
from rq.utils import now as rq_now

from jobs import history, keys, rq_compat
from jobs.connection import SERIALIZER, reply_text
from jobs.executions import find_executions, remove_executions

FAILURE_REASON_TTL = 3600
SAFE_FAILURE_ATTEMPTS = 20  # WATCH retries; a live horse writes its progress about once a second

log = logging.getLogger("dq.lifecycle")


def set_failure_reason(connection: redis.Redis, job_id: str, message: str) -> None:
    """Say why a horse is about to be killed, so whoever records the failure uses this text.

    The supervisor sets it before killing a horse (shutdown grace, timeout backstop,
    recovery); the worker parent, which sees its horse die, records it instead of RQ's
    generic 'Work-horse terminated unexpectedly'.
    """
    connection.set(keys.failure_reason(job_id), message, ex=FAILURE_REASON_TTL)


def failure_reason(connection: redis.Redis, job_id: str) -> str | None:
    return reply_text(connection.get(keys.failure_reason(job_id)))


def fail_started_job(
    connection: redis.Redis,
    queue_name: str,
    job_id: str,
    message: str,
    *,
    event: str = history.FAILED,
) -> bool:
    """Fail a job that is `started` with `message`; False when it was not started (any more).

    RQ's `FailedJobRegistry.add()` alone leaves the job `started` and its execution in the
    StartedJobRegistry. Here, in one WATCHed transaction: the status is re-checked, every
    execution of the job is dropped (its key, its StartedJobRegistry entry, the worker's
    index), the failure is recorded the way RQ records it (status, FailedJobRegistry, a
    failure Result whose text is `message`) and a history `event` is appended. Whoever also
    tries to end the job (its worker, another supervisor) either commits first, and then
    this returns False, or sees the job failed. Callers must make sure no horse still runs
    the job (kill it first), or it could later store its own outcome.
    """
    job_key = keys.job(job_id)
    for _attempt in range(SAFE_FAILURE_ATTEMPTS):
        with connection.pipeline() as pipe:
            try:
                pipe.watch(job_key, keys.executions(job_id))
                if reply_text(pipe.hget(job_key, "status")) != JobStatus.STARTED.value:
                    return False
                job = Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
                found = find_executions(pipe, job_id, queue_name)
                pipe.multi()
                remove_executions(pipe, job_id, queue_name, found)
                job.ended_at = rq_now()
                rq_compat.record_failure(job, message, pipe)
                history.record(pipe, job_id, event, message, album_id=(job.kwargs or {}).get("album_id"))
                pipe.execute()
            except redis.WatchError:
                continue
        # As after RQ's own failure paths: dependents learn the job ended, a rate slot is freed.
        Queue(job.origin, connection=connection, serializer=SERIALIZER).enqueue_dependents(job)
        release_slot(job)
        return True
    log.warning("job %s kept changing; not failed this time (will be retried)", job_id)
    return False
