"""Starting failed jobs again (`bin/retry`, the API's `PATCH {"action": "retry"}`).

A retried job gets a fresh attempt budget and goes to the end of the queue through RQ's own
`FailedJobRegistry.requeue`. An album id retries the album's failed jobs (its playlist job,
its tracks). Outcomes per id, in input order: "retried", "not found" (unknown or deleted),
"not failed" (queued, running, waiting for a retry, completed: nothing to do).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from jobs import album, history, keys
from jobs.connection import SERIALIZER
from jobs.enqueue import TrackRequest
from jobs.tombstones import is_deleted

RETRIED, NOT_FOUND, NOT_FAILED = "retried", "not found", "not failed"
RETRIED_MESSAGE = "retried by user"
_ATTEMPT_FIELDS = ("attempts", "next_attempt_at", "last_error")


def retry_jobs(connection: redis.Redis, ids: Sequence[str]) -> list[tuple[str, str]]:
    return [(item_id, _retry_one(connection, item_id)) for item_id in ids]


def _retry_one(connection: redis.Redis, item_id: str) -> str:
    if item_id.startswith(album.ALBUM_ID_PREFIX):
        record = album.load(connection, item_id)
        if record is None:
            return NOT_FOUND
        outcomes = [_retry_job(connection, job_id) for job_id in record.job_ids]
        return RETRIED if RETRIED in outcomes else NOT_FAILED
    return _retry_job(connection, item_id)


def _retry_job(connection: redis.Redis, job_id: str) -> str:
    try:
        job = Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
    except NoSuchJobError:
        return NOT_FOUND
    if is_deleted(connection, job_id):
        return NOT_FOUND
    if job.get_status(refresh=False) != JobStatus.FAILED:
        return NOT_FAILED
    for name in _ATTEMPT_FIELDS:
        job.meta.pop(name, None)
    progress = job.meta.get("progress")
    if isinstance(progress, dict):
        job.meta["progress"] = {"bytes_done": 0, "bytes_total": progress.get("bytes_total")}
    registry = FailedJobRegistry(job.origin, connection=connection, serializer=SERIALIZER)
    try:
        registry.requeue(job)  # saves the job (its meta too) and puts it at the end of its queue
    except InvalidJobOperation:
        return NOT_FAILED  # another retry took it first
    kwargs = job.kwargs or {}
    with connection.pipeline(transaction=False) as pipe:
        if "url" in kwargs and job.meta.get("kind") == "track":
            identity = TrackRequest(kwargs["url"], kwargs.get("dest", ""), kwargs.get("name")).identity
            pipe.hset(keys.ACTIVE_URLS, identity, job.id)  # the same URL enqueued now joins this job
        history.record(pipe, job.id, history.ENQUEUED, RETRIED_MESSAGE, album_id=kwargs.get("album_id"))
        pipe.execute()
    return RETRIED
