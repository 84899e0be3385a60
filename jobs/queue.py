"""The queue API that `bin/` commands, the dashboard and tests call: enqueue, list, stats.

User-facing states are the original app's: queued → processing → completed | failed.
Everything here reads RQ's own registries; no counter is kept on the side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.worker import BaseWorker, Worker

from config import Settings
from jobs import history
from jobs.connection import SERIALIZER
from jobs.paths import check_dest, check_name, check_url

TRACK_FUNC = "jobs.track.download_track"
RESULT_TTL = 24 * 3600  # completed jobs stay listed for a day
FAILURE_TTL = 7 * 24 * 3600  # failed jobs for a week

QUEUED, PROCESSING, COMPLETED, FAILED = "queued", "processing", "completed", "failed"
STATES = (QUEUED, PROCESSING, COMPLETED, FAILED)
PARTIAL = "partial"  # albums only: some tracks failed, the rest completed

_STATE_OF_STATUS = {
    JobStatus.QUEUED: QUEUED,
    JobStatus.DEFERRED: QUEUED,
    JobStatus.SCHEDULED: QUEUED,
    JobStatus.CREATED: QUEUED,
    JobStatus.STARTED: PROCESSING,
    JobStatus.FINISHED: COMPLETED,
    JobStatus.FAILED: FAILED,
    JobStatus.STOPPED: FAILED,
    JobStatus.CANCELED: FAILED,
}


@dataclass(frozen=True)
class TrackRequest:
    url: str
    dest: str = ""
    name: str | None = None
    stem: str | None = None
    album_id: str | None = None

    def checked(self) -> TrackRequest:
        """This request with URL, dest and name validated; raises InvalidRequest."""
        return TrackRequest(
            url=check_url(self.url),
            dest=check_dest(self.dest),
            name=check_name(self.name) if self.name else None,
            stem=self.stem,
            album_id=self.album_id,
        )


def get_queue(connection: redis.Redis, settings: Settings) -> Queue:
    return Queue(settings.queue_name, connection=connection, serializer=SERIALIZER)


def track_job_data(request: TrackRequest, settings: Settings, job_id: str | None = None) -> Any:
    kwargs: dict[str, Any] = {"url": request.url, "dest": request.dest}
    for key in ("name", "stem", "album_id"):
        value = getattr(request, key)
        if value is not None:
            kwargs[key] = value
    meta: dict[str, Any] = {"kind": "track", "progress": {"bytes_done": 0, "bytes_total": None}}
    if request.album_id is not None:
        meta["album_id"] = request.album_id
    return Queue.prepare_data(
        TRACK_FUNC,
        kwargs=kwargs,
        timeout=settings.job_timeout,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
        description=request.url,
        meta=meta,
        job_id=job_id,
    )


def enqueue_tracks(connection: redis.Redis, settings: Settings, requests: Sequence[TrackRequest]) -> list[Job]:
    """Validate every request first, then enqueue them all in one pipeline (all or nothing)."""
    checked = [request.checked() for request in requests]
    queue = get_queue(connection, settings)
    with connection.pipeline() as pipeline:
        jobs = queue.enqueue_many([track_job_data(r, settings) for r in checked], pipeline=pipeline)
        for job, request in zip(jobs, checked, strict=True):
            history.record(pipeline, job.id, history.ENQUEUED, request.url, album_id=request.album_id)
        pipeline.execute()
    return jobs


def started_job_ids(connection: redis.Redis, settings: Settings) -> list[str]:
    # cleanup=False: reading must not fail jobs as a side effect (RQ's default does).
    return StartedJobRegistry(settings.queue_name, connection=connection).get_job_ids(cleanup=False)


def all_job_ids(connection: redis.Redis, settings: Settings) -> list[str]:
    queue = get_queue(connection, settings)
    name = settings.queue_name
    ids: list[str] = []
    ids += queue.get_job_ids()
    ids += started_job_ids(connection, settings)
    ids += FinishedJobRegistry(name, connection=connection).get_job_ids(cleanup=False)
    ids += FailedJobRegistry(name, connection=connection).get_job_ids(cleanup=False)
    return list(dict.fromkeys(ids))


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value.tzinfo is None else value.isoformat().replace(
        "+00:00", "Z"
    )


def error_line(job: Job) -> str | None:
    """The one-line error of a failed job: the first line of its latest failure result."""
    result = Result.fetch_latest(job, serializer=SERIALIZER)
    if result is None or result.type != Result.Type.FAILED or not result.exc_string:
        return None
    return result.exc_string.strip().splitlines()[0]


def _status_text(job: Job) -> str:
    status = job.get_status(refresh=False)
    return status.value if isinstance(status, JobStatus) else str(status or "")


def state_of(job: Job) -> str:
    status = job.get_status(refresh=False)
    return _STATE_OF_STATUS.get(status, QUEUED) if status is not None else QUEUED


def job_view(job: Job) -> dict[str, Any]:
    """A job as `bin/jobs --json` shows it."""
    kwargs = job.kwargs or {}
    meta = job.meta or {}
    progress = meta.get("progress") or {}
    state = state_of(job)
    view: dict[str, Any] = {
        "id": job.id,
        "kind": meta.get("kind", "track"),
        "state": state,
        "status": _status_text(job),
        "url": kwargs.get("url"),
        "dest": kwargs.get("dest", ""),
        "error": error_line(job) if state == FAILED else None,
        "progress": {
            "bytes_done": int(progress.get("bytes_done") or 0),
            "bytes_total": progress.get("bytes_total"),
            "rate": progress.get("rate"),
        },
        "album_id": kwargs.get("album_id") or meta.get("album_id"),
        "enqueued_at": _iso(job.enqueued_at),
        "started_at": _iso(job.started_at),
        "ended_at": _iso(job.ended_at),
    }
    result = job.return_value(refresh=False) if state == COMPLETED else None
    if isinstance(result, dict) and "path" in result:
        view["path"] = result["path"]
        if state == COMPLETED and result.get("bytes") is not None:
            view["progress"]["bytes_done"] = result["bytes"]
            view["progress"]["bytes_total"] = view["progress"]["bytes_total"] or result["bytes"]
    return view


def fetch_jobs(connection: redis.Redis, ids: Iterable[str]) -> list[Job]:
    return [job for job in Job.fetch_many(list(ids), connection=connection, serializer=SERIALIZER) if job]


def list_jobs(connection: redis.Redis, settings: Settings, state: str | None = None) -> list[dict[str, Any]]:
    """Every job and album still kept, oldest first; albums carry their derived state."""
    from jobs.album import with_albums  # jobs.album builds on this module

    views = [job_view(job) for job in fetch_jobs(connection, all_job_ids(connection, settings))]
    views = with_albums(connection, views)
    if state is not None:
        views = [view for view in views if view["state"] == state]
    views.sort(key=lambda view: view["enqueued_at"] or "")
    return views


def live_workers(connection: redis.Redis, settings: Settings) -> list[BaseWorker]:
    """Workers of the queue that really run: a dead worker's key lingers for up to its TTL
    (minutes), so one registered on this host also needs a running PID."""
    from supervisor.processes import this_host, worker_alive

    queue = get_queue(connection, settings)
    host = this_host()
    workers = Worker.all(queue=queue, connection=connection, serializer=SERIALIZER)
    return [worker for worker in workers if worker_alive(worker.hostname, worker.pid, host)]


def live_worker_names(connection: redis.Redis, settings: Settings) -> set[str]:
    return {worker.name for worker in live_workers(connection, settings)}


def active_job_ids(connection: redis.Redis, settings: Settings) -> list[str]:
    """Jobs really being downloaded now: started, and their worker is alive and busy with them."""
    registry = StartedJobRegistry(settings.queue_name, connection=connection)
    pairs = registry.get_job_and_execution_ids(cleanup=False)
    if not pairs:
        return []
    workers = live_workers(connection, settings)
    busy = {w.get_current_job_id() for w in workers if w.get_state() == "busy"}
    return [job_id for job_id, _execution in pairs if job_id in busy]


def stats(connection: redis.Redis, settings: Settings) -> dict[str, Any]:
    """Queue and worker figures in the original API's shape."""
    queue = get_queue(connection, settings)
    name = settings.queue_name
    queued = queue.count
    processing = len(started_job_ids(connection, settings))
    completed = FinishedJobRegistry(name, connection=connection).get_job_count(cleanup=False)
    failed = FailedJobRegistry(name, connection=connection).get_job_count(cleanup=False)
    workers = len(live_workers(connection, settings))
    return {
        "queue": {
            "queued": queued,
            "processing": processing,
            "completed": completed,
            "failed": failed,
            "total": queued + processing + completed + failed,
        },
        "worker": {
            "running": workers > 0,
            "activeDownloads": len(active_job_ids(connection, settings)),
            "maxConcurrent": settings.workers,
            "workers": workers,
        },
    }
