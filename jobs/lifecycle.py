"""Job state changes that RQ alone gets wrong: writes that must not resurrect a deleted job.

A deletion first sets a tombstone, then stops the download, then removes the job's keys.
Every write from a running download checks the tombstone and the job key in one Lua call,
so nothing a horse does after the deletion began can recreate the job.

Tombstones are members of one sorted set, `dq:deleted` (score: when the deletion began),
not keys named after the job: once a job is deleted, no Redis key name contains its id
(`redis-cli --scan --pattern '*<id>*'` finds nothing), while a horse that starts late or
wakes up late still finds the tombstone. Entries older than TOMBSTONE_TTL are pruned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import redis
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.queue import Queue
from rq.rate_limit import release_slot
from rq.registry import StartedJobRegistry
from rq.utils import now as rq_now

from config import CANCELLED_MESSAGE
from jobs import history
from jobs.connection import SERIALIZER, reply_text
from jobs.errors import DownloadError
from jobs.paths import part_path

TOMBSTONES = "dq:deleted"
TOMBSTONE_TTL = 24 * 3600  # far longer than any horse can outlive its deletion (job timeout + 90 s)
JOB_KEY_PREFIX = "rq:job:"

_WRITE_META_IF_ALIVE = """
if redis.call('zscore', KEYS[2], ARGV[2]) or redis.call('exists', KEYS[1]) == 0 then
  return 0
end
redis.call('hset', KEYS[1], 'meta', ARGV[1])
return 1
"""


class JobDeleted(DownloadError):
    """The job was deleted while it ran; the download stops and nothing of it is written."""

    def __init__(self, job_id: str) -> None:
        super().__init__(CANCELLED_MESSAGE)
        self.job_id = job_id


def mark_deleted(
    connection: redis.Redis | redis.client.Pipeline, job_ids: Iterable[str], now: float | None = None
) -> None:
    """Set tombstones for these job (or album) ids, pruning the ones past their TTL."""
    stamp = time.time() if now is None else now
    connection.zadd(TOMBSTONES, {job_id: stamp for job_id in job_ids})
    connection.zremrangebyscore(TOMBSTONES, "-inf", stamp - TOMBSTONE_TTL)
    connection.expire(TOMBSTONES, TOMBSTONE_TTL)


def is_deleted(connection: redis.Redis, job_id: str) -> bool:
    return connection.zscore(TOMBSTONES, job_id) is not None


def write_meta_if_alive(connection: redis.Redis, job_id: str, meta: bytes) -> bool:
    """Store the job's meta unless it was deleted; False means: stop, the job is gone."""
    written = connection.eval(_WRITE_META_IF_ALIVE, 2, JOB_KEY_PREFIX + job_id, TOMBSTONES, meta, job_id)
    return bool(written)


FAILURE_REASON_PREFIX = "dq:reason:"
FAILURE_REASON_TTL = 3600


def set_failure_reason(connection: redis.Redis, job_id: str, message: str) -> None:
    """Say why a horse is about to be killed, so whoever records the failure uses this text.

    The supervisor sets it before killing a horse (shutdown grace, timeout backstop,
    recovery); the worker parent, which sees its horse die, records it instead of RQ's
    generic 'Work-horse terminated unexpectedly'.
    """
    connection.set(FAILURE_REASON_PREFIX + job_id, message, ex=FAILURE_REASON_TTL)


def failure_reason(connection: redis.Redis, job_id: str) -> str | None:
    value = connection.get(FAILURE_REASON_PREFIX + job_id)
    return value.decode() if isinstance(value, bytes) else value


# --- the safe failure of a started job ---------------------------------------------------------
# Shared by the supervisor (recovery, timeout backstop, shutdown) and deletion.

SAFE_FAILURE_ATTEMPTS = 20  # WATCH retries; a live horse writes its progress about once a second

log = logging.getLogger("dq.lifecycle")




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
    registry_key = StartedJobRegistry(queue_name, connection=connection).key
    job_key = Job.key_for(job_id)
    executions_key = f"rq:executions:{job_id}"
    for _attempt in range(SAFE_FAILURE_ATTEMPTS):
        with connection.pipeline() as pipe:
            try:
                pipe.watch(job_key, executions_key)
                if reply_text(pipe.hget(job_key, "status")) != JobStatus.STARTED.value:
                    return False
                job = Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
                entries = [reply_text(e) or "" for e in cast(list[bytes], pipe.zrange(registry_key, 0, -1))]
                execution_ids = {e.split(":", 1)[1] for e in entries if e.startswith(job_id + ":")}
                execution_ids |= {reply_text(e) or "" for e in cast(list[bytes], pipe.zrange(executions_key, 0, -1))}
                worker_names = {
                    execution_id: reply_text(pipe.hget(f"rq:execution:{job_id}:{execution_id}", "worker_name"))
                    for execution_id in execution_ids
                }
                pipe.multi()
                for execution_id, worker_name in worker_names.items():
                    composite = f"{job_id}:{execution_id}"
                    pipe.delete(f"rq:execution:{composite}")
                    pipe.zrem(registry_key, composite)
                    if worker_name:
                        pipe.srem(f"rq:worker:{worker_name}:executions", composite)
                pipe.delete(executions_key)
                job.ended_at = rq_now()
                record_job_failure(job, message, pipe)
                album_id = (job.kwargs or {}).get("album_id")
                history.record(pipe, job_id, event, message, album_id=album_id)
                pipe.execute()
            except redis.WatchError:
                continue
        # As after RQ's own failure paths: dependents learn the job ended, a rate slot is freed.
        Queue(job.origin, connection=connection, serializer=SERIALIZER).enqueue_dependents(job)
        release_slot(job)
        return True
    log.warning("job %s kept changing; not failed this time (will be retried)", job_id)
    return False


def remove_part_file(download_dir: Path, final_path: str | None) -> Path | None:
    """Remove the `.part` of a download that no longer runs; return it if one was removed.

    `final_path` is what the job's meta["path"] holds (the final file; the part is
    `<final>.part`). Meta comes from Redis, so anything outside the download dir is refused.
    """
    if not final_path:
        return None
    partial = part_path(Path(final_path))
    root = download_dir.resolve()
    try:
        directory = partial.parent.resolve()
    except OSError:
        return None
    if directory != root and root not in directory.parents:
        log.warning("not removing %s: outside the download dir %s", partial, root)
        return None
    target = directory / partial.name
    try:
        target.unlink()
    except FileNotFoundError:
        return None
    return target
