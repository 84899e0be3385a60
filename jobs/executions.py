"""A job's RQ executions: finding every trace of them, and removing them in one go.

RQ 3 records each run of a job as an execution: its hash, its id in the job's executions
set, `<job id>:<execution id>` in the StartedJobRegistry and in its worker's executions
set. Whoever ends a job behind its worker's back (the safe failure, a deletion) must drop
all four, or the job looks started for ever.
"""

from __future__ import annotations

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
