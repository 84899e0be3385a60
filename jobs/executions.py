"""A job's RQ executions: finding every trace of them, and removing them in one go.

RQ 3 records each run of a job as an execution: its hash, its id in the job's executions
set, `<job id>:<execution id>` in the StartedJobRegistry and in its worker's executions
set. Whoever ends a job behind its worker's back (the safe failure, a deletion) must drop
all four, or the job looks started for ever.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import redis

from jobs import keys
from jobs.connection import reply_text


def find_executions(
    connection: redis.Redis | redis.client.Pipeline, job_id: str, queue_name: str
) -> dict[str, str | None]:
    """execution id → worker name, for every execution the job's set or the started registry names.

    `connection` may be a pipeline in WATCH (immediate) mode; reads only.
    """
    prefix = job_id + ":"
    members = cast(list[bytes], connection.zrange(keys.started(queue_name), 0, -1))
    ids = {text[len(prefix) :] for text in (reply_text(m) or "" for m in members) if text.startswith(prefix)}
    ids |= {reply_text(m) or "" for m in cast(list[bytes], connection.zrange(keys.executions(job_id), 0, -1))}
    return {
        execution_id: reply_text(connection.hget(keys.execution(job_id, execution_id), "worker_name"))
        for execution_id in ids
    }


def find_executions_of_many(
    connection: redis.Redis, job_ids: Sequence[str], queue_name: str
) -> dict[str, dict[str, str | None]]:
    """`find_executions` for many jobs of one queue in three round trips, whatever their number."""
    wanted = set(job_ids)
    ids: dict[str, set[str]] = {job_id: set() for job_id in job_ids}
    for member in cast(list[bytes], connection.zrange(keys.started(queue_name), 0, -1)):
        job_id, _, execution_id = (reply_text(member) or "").partition(":")
        if job_id in wanted:
            ids[job_id].add(execution_id)
    with connection.pipeline(transaction=False) as pipeline:
        for job_id in job_ids:
            pipeline.zrange(keys.executions(job_id), 0, -1)
        for job_id, members in zip(job_ids, pipeline.execute(), strict=True):
            ids[job_id] |= {reply_text(m) or "" for m in members}
        pairs = [(job_id, execution_id) for job_id in job_ids for execution_id in sorted(ids[job_id])]
        for job_id, execution_id in pairs:
            pipeline.hget(keys.execution(job_id, execution_id), "worker_name")
        workers = pipeline.execute()
    found: dict[str, dict[str, str | None]] = {job_id: {} for job_id in job_ids}
    for (job_id, execution_id), worker in zip(pairs, workers, strict=True):
        found[job_id][execution_id] = reply_text(worker)
    return found


def remove_executions(
    pipeline: redis.client.Pipeline, job_id: str, queue_name: str, found: dict[str, str | None]
) -> None:
    """Queue the removal of these executions (from `find_executions`) and of the job's set."""
    for execution_id, worker_name in found.items():
        composite = f"{job_id}:{execution_id}"
        pipeline.delete(keys.execution(job_id, execution_id))
        pipeline.zrem(keys.started(queue_name), composite)
        if worker_name:
            pipeline.srem(keys.worker_executions(worker_name), composite)
    pipeline.delete(keys.executions(job_id))
