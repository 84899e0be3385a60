"""Real deletion of jobs and albums, in every state (`bin/delete`, the dashboard's Delete).

`delete_jobs(connection, settings, ids)` returns `(id, outcome)` in input order, the outcome
being "deleted", "cancelled" or "not found"; ids may name track jobs, playlist jobs or albums.

1. Every job concerned gets a tombstone (`jobs.tombstones.mark_deleted`), and its status,
   meta and worker are read in the same transaction. From then on no write of a running
   download lands (progress, result, heartbeat, callbacks: see `jobs.worker`), and a worker
   that dequeues the job a moment later drops it before downloading.
2. queued, completed, failed, waiting for a retry (any state but started): every key of the
   job is removed at once (queue, every registry, results, executions, the job hash); a
   partial file kept for a retry goes too, and so does the folder its download created, if
   that is left empty; completed files stay. Event `deleted` with `Deleted by user`.
3. processing: the download stops by itself at its next progress write (about once a
   second while bytes flow), removing its `.part`. A download that writes nothing (a hung
   server) is stopped after COOPERATIVE_WAIT with RQ's stop command, which interrupts it in its
   worker (`jobs.interrupt`).
   We return only once the worker has let go of the job (its execution is gone from the
   started registry, which the worker does after the job stopped: it closed the
   connection and removed its partial file), or its worker is gone. Then the partial file (if
   the job's process was killed), the folder the download created (if left empty) and the job's keys
   are removed. Event `cancelled` with `Cancelled by user during processing`.
4. An album: its playlist job and all its tracks by these rules, then its record. Outcome
   `cancelled` when one of its jobs was running, else `deleted`.
5. An unknown id: `not found`, nothing changed.

The tombstone lives in one sorted set (see `jobs.tombstones`), so once this
returns no Redis key name contains the id; the event history keeps the audit trail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from rq.command import send_command
from rq.job import JobStatus

from config import Settings
from jobs import album, history, keys, messages
from jobs.connection import SERIALIZER, reply_text
from jobs.executions import find_executions_of_many, remove_executions
from jobs.parts import discard
from jobs.stream import PROGRESS_INTERVAL
from jobs.tombstones import mark_deleted

DELETED, CANCELLED, NOT_FOUND = "deleted", "cancelled", "not found"
COOPERATIVE_WAIT = 2 * PROGRESS_INTERVAL  # a download with bytes flowing stops by itself within this
STOP_WAIT = 10.0  # after the stop command: the worker stops the job within milliseconds normally
POLL_INTERVAL = 0.05

PURGE_BATCH = 1000

# Drop ARGV's ids from each list in KEYS with one pass over it: LREM per id would read a
# 10,000-job queue 10,000 times. Atomic, so a worker's BLMOVE sees the list before or after.
_REMOVE_FROM_LISTS = """
local drop = {}
for _, id in ipairs(ARGV) do drop[id] = true end
local removed = 0
for _, key in ipairs(KEYS) do
  local items = redis.call('lrange', key, 0, -1)
  local kept = {}
  for _, item in ipairs(items) do
    if drop[item] then removed = removed + 1 else kept[#kept + 1] = item end
  end
  if #kept < #items then
    redis.call('del', key)
    for i = 1, #kept, 1000 do
      redis.call('rpush', key, unpack(kept, i, math.min(i + 999, #kept)))
    end
  end
end
return removed
"""

log = logging.getLogger("dq.delete")


@dataclass
class _Target:
    """One job to delete, as read when its tombstone was set."""

    job_id: str
    status: str | None
    part_of: str | None  # the album id, if any
    kind: str
    final_path: str | None
    created_dir: str | None
    worker_name: str | None
    origin: str
    stop_sent: bool = False

    @property
    def running(self) -> bool:
        return self.status == JobStatus.STARTED.value


@dataclass
class _Request:
    """One id the caller asked to delete."""

    item_id: str
    album: album.AlbumRecord | None = None
    job_ids: list[str] = field(default_factory=list)


def delete_jobs(connection: redis.Redis, settings: Settings, ids: Sequence[str]) -> list[tuple[str, str]]:
    """Delete jobs and albums in any state; (id, outcome) for each id, in input order."""
    requests_ = [_resolve(connection, item_id) for item_id in ids]
    job_ids = list(dict.fromkeys(job_id for request in requests_ for job_id in request.job_ids))
    targets = _tombstone(connection, settings, job_ids)

    idle = [target for target in targets.values() if target.status is not None and not target.running]
    running = [target for target in targets.values() if target.running]
    # Queued ones go first, so that a worker freed by a stop below cannot pick one of them up.
    _finish(connection, idle, history.DELETED, messages.DELETED)
    for target in idle:
        discard(settings.download_dir, target.final_path, target.job_id, target.created_dir)
    _stop_all(connection, running)
    for target in running:
        discard(settings.download_dir, target.final_path, target.job_id, target.created_dir)
    _finish(connection, running, history.CANCELLED, messages.CANCELLED)
    # An album's tracks share its folder: only once every partial file is gone can it be empty.
    for target in [*idle, *running]:
        discard(settings.download_dir, target.final_path, target.job_id, target.created_dir)

    outcomes = []
    for request in requests_:
        members = [targets[job_id] for job_id in request.job_ids if job_id in targets]
        if request.album is not None:
            cancelled = any(target.running for target in members)
            with connection.pipeline() as pipeline:
                album.remove_record(pipeline, request.album.id)
                history.record(
                    pipeline,
                    request.album.id,
                    history.CANCELLED if cancelled else history.DELETED,
                    messages.CANCELLED if cancelled else messages.DELETED,
                    album_id=request.album.id,
                )
                pipeline.execute()
            outcomes.append((request.item_id, CANCELLED if cancelled else DELETED))
        elif members and members[0].status is not None:
            outcomes.append((request.item_id, CANCELLED if members[0].running else DELETED))
        else:
            outcomes.append((request.item_id, NOT_FOUND))
    return outcomes


def _resolve(connection: redis.Redis, item_id: str) -> _Request:
    """Which jobs an id stands for: an album's jobs, one job, or nothing (not found)."""
    if item_id.startswith(album.ALBUM_ID_PREFIX) and album.exists(connection, item_id):
        # The album's tombstone first: a playlist job that has not added its tracks yet
        # can no longer add them, so the track list read below is final.
        mark_deleted(connection, [item_id])
        record = album.load(connection, item_id)
        if record is not None:
            return _Request(item_id, record, record.job_ids)
    if connection.exists(keys.job(item_id)):
        return _Request(item_id, None, [item_id])
    return _Request(item_id)


def _tombstone(connection: redis.Redis, settings: Settings, job_ids: list[str]) -> dict[str, _Target]:
    """Set every tombstone and read each job's state in one transaction."""
    if not job_ids:
        return {}
    with connection.pipeline() as pipeline:
        mark_deleted(pipeline, job_ids)
        for job_id in job_ids:
            pipeline.hmget(keys.job(job_id), ["status", "meta", "worker_name", "origin"])
        replies = pipeline.execute()[-len(job_ids) :]
    targets = {}
    for job_id, (status, raw_meta, worker_name, origin) in zip(job_ids, replies, strict=True):
        meta: dict[str, Any] = SERIALIZER.loads(raw_meta) if raw_meta else {}
        targets[job_id] = _Target(
            job_id=job_id,
            status=reply_text(status),
            part_of=meta.get("album_id"),
            kind=meta.get("kind", "track"),
            final_path=meta.get("path"),
            created_dir=meta.get("created_dir"),
            worker_name=reply_text(worker_name),
            origin=reply_text(origin) or settings.queue_name,
        )
    return targets


def _stop_all(connection: redis.Redis, running: list[_Target], clock: Callable[[], float] = time.monotonic) -> None:
    """Wait until no worker runs these jobs: cooperative first, RQ's stop command as fallback."""
    pending = {target.job_id: target for target in running}
    start = clock()
    while pending:
        for job_id, target in list(pending.items()):
            if _let_go(connection, target):
                del pending[job_id]
        if not pending:
            return
        elapsed = clock() - start
        for target in pending.values():
            # A playlist job writes no progress, so nothing would stop it sooner.
            if not target.stop_sent and (elapsed >= COOPERATIVE_WAIT or target.kind == "playlist"):
                _send_stop(connection, target)
        if elapsed >= COOPERATIVE_WAIT + STOP_WAIT:
            log.warning(
                "jobs %s still not stopped after %gs; removed anyway (their writes are refused)",
                ", ".join(pending),
                elapsed,
            )
            return
        time.sleep(POLL_INTERVAL)


def _send_stop(connection: redis.Redis, target: _Target) -> None:
    target.stop_sent = True
    if target.worker_name:
        # rq.command.send_stop_job_command minus its Job.fetch (the worker may have purged the job).
        send_command(connection, target.worker_name, "stop-job", job_id=target.job_id)
        log.info("job %s: sent the stop command to worker %s", target.job_id, target.worker_name)


def _let_go(connection: redis.Redis, target: _Target) -> bool:
    """True once no live worker runs the job any more."""
    prefix = target.job_id + ":"
    entries = cast(list[bytes], connection.zrange(keys.started(target.origin), 0, -1))
    if not any((reply_text(entry) or "").startswith(prefix) for entry in entries):
        return True
    # The worker died (and the job with it): nobody will let go.
    return bool(target.worker_name) and not connection.exists(keys.worker(target.worker_name or ""))


def _finish(connection: redis.Redis, targets: Sequence[_Target], event: str, message: str) -> None:
    """Purge these jobs and record why, `PURGE_BATCH` at a time (an album can have 10,000)."""
    for start in range(0, len(targets), PURGE_BATCH):
        batch = targets[start : start + PURGE_BATCH]
        purge_jobs(connection, [(target.job_id, target.origin) for target in batch])
        with connection.pipeline(transaction=False) as pipeline:
            for target in batch:
                history.record(pipeline, target.job_id, event, message, album_id=target.part_of)
            pipeline.execute()


def purge_job(connection: redis.Redis, job_id: str, queue_name: str) -> None:
    """Remove every Redis key and registry entry of a job at once (idempotent).

    Used by deletion and by the worker when it finds it ran a deleted job (its own
    bookkeeping may have recreated some keys meanwhile).
    """
    purge_jobs(connection, [(job_id, queue_name)])


def purge_jobs(connection: redis.Redis, jobs: Sequence[tuple[str, str]]) -> None:
    """`purge_job` for many (job id, queue name) pairs: one transaction per queue, whose cost
    grows with the number of jobs and the queue's length, not with their product."""
    by_queue: dict[str, list[str]] = {}
    for job_id, queue_name in jobs:
        by_queue.setdefault(queue_name, []).append(job_id)
    for queue_name, job_ids in by_queue.items():
        found = find_executions_of_many(connection, job_ids, queue_name)
        with connection.pipeline() as pipeline:
            pipeline.eval(_REMOVE_FROM_LISTS, 2, keys.queue(queue_name), keys.intermediate_queue(queue_name), *job_ids)
            for registry_class in keys.ENDED_REGISTRIES:
                pipeline.zrem(keys.registry(registry_class, queue_name), *job_ids)
            for job_id in job_ids:
                remove_executions(pipeline, job_id, queue_name, found[job_id])
                pipeline.delete(
                    keys.job(job_id),
                    keys.job_dependents(job_id),
                    keys.job_dependencies(job_id),
                    keys.results(job_id),
                    keys.failure_reason(job_id),
                )
            pipeline.execute()
