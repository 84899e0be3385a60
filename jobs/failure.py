"""Failing a job no worker will finish, the way RQ would, without racing its worker.

Two parts, both used by the supervisor (recovery, timeout backstop, shutdown):

- the failure reason: before the supervisor kills the process running a job it says why, so
  whoever records the failure (the supervisor, or a forking worker whose horse it killed)
  uses that text;
- the safe end of a started job's attempt, one WATCHed transaction (see `end_started_job`):
  its retry when attempts remain (`jobs.retries`), else its failure.
"""

from __future__ import annotations

import logging
import time

import redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.rate_limit import release_slot
from rq.utils import now as rq_now

from jobs import history, keys, retries, rq_compat
from jobs.connection import SERIALIZER, reply_text
from jobs.executions import find_executions, remove_executions

FAILURE_REASON_TTL = 3600
SAFE_FAILURE_ATTEMPTS = 20  # WATCH retries; a live download writes its progress about once a second

log = logging.getLogger("dq.lifecycle")


def set_failure_reason(connection: redis.Redis, job_id: str, message: str) -> None:
    """Say why a job's process is about to be killed, so whoever records the failure uses this text.

    The supervisor sets it before killing (shutdown grace, timeout backstop); a worker that
    sees a job end without a word (`jobs.worker`) records it instead of RQ's generic
    'Work-horse terminated unexpectedly'.
    """
    connection.set(keys.failure_reason(job_id), message, ex=FAILURE_REASON_TTL)


def failure_reason(connection: redis.Redis, job_id: str) -> str | None:
    return reply_text(connection.get(keys.failure_reason(job_id)))


FAILED, RETRYING = "failed", "retrying"  # what end_started_job did


def end_started_job(
    connection: redis.Redis,
    queue_name: str,
    job_id: str,
    failure: retries.Failure,
    policy: retries.RetryPolicy,
    *,
    event: str = history.FAILED,
) -> str | None:
    """End the attempt of a job that is `started`: schedule its retry or fail it.

    Returns RETRYING or FAILED, or None when the job was not started (any more).

    RQ's `FailedJobRegistry.add()` alone leaves the job `started` and its execution in the
    StartedJobRegistry. Here, in one WATCHed transaction: the status is re-checked, every
    execution of the job is dropped (its key, its StartedJobRegistry entry, the worker's
    index), then either the retry is stored (`jobs.retries.schedule`, with `event` and
    `retrying` in the history) or the failure is recorded the way RQ records it (status,
    FailedJobRegistry, a failure Result whose text is the failure's line) with `event`.
    Whoever also tries to end the job (its worker, another supervisor) either commits first,
    and then this returns None, or sees the job ended. Callers must make sure no process still
    runs the job (kill it first), or it could later store its own outcome.
    """
    job_key = keys.job(job_id)
    for _attempt in range(SAFE_FAILURE_ATTEMPTS):
        with connection.pipeline() as pipe:
            try:
                pipe.watch(job_key, keys.executions(job_id))
                if reply_text(pipe.hget(job_key, "status")) != JobStatus.STARTED.value:
                    return None
                job = Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
                decision = retries.decide(job.meta, failure, policy, time.time())
                found = find_executions(pipe, job_id, queue_name)
                pipe.multi()
                remove_executions(pipe, job_id, queue_name, found)
                job.ended_at = rq_now()
                if decision.retry:
                    retries.schedule(
                        pipe, job, decision, failure, policy, event=None if event == history.FAILED else event
                    )
                else:
                    retries.note_outcome(job, decision, failure, policy)
                    pipe.hset(job_key, "meta", SERIALIZER.dumps(job.meta))
                    rq_compat.record_failure(job, failure.line, pipe)
                    history.record(pipe, job_id, event, failure.line, album_id=(job.kwargs or {}).get("album_id"))
                pipe.execute()
            except redis.WatchError:
                continue
        if decision.retry:
            return RETRYING
        # As after RQ's own failure paths: dependents learn the job ended, a rate slot is freed.
        Queue(job.origin, connection=connection, serializer=SERIALIZER).enqueue_dependents(job)
        release_slot(job)
        return FAILED
    log.warning("job %s kept changing; not ended this time (will be tried again)", job_id)
    return None
