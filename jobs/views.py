"""The read model: jobs and albums as `bin/jobs --json`, the dashboard and the API show them.

User-facing states are the original app's: queued → processing → completed | failed, plus
`partial` for an album some of whose tracks failed. Everything here reads RQ's own
registries and our album records; no counter is kept on the side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

import redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.results import Result

from config import Settings
from jobs import album, messages
from jobs.connection import SERIALIZER
from jobs.tombstones import is_deleted
from jobs.urls import redacted

QUEUED, PROCESSING, COMPLETED, FAILED = "queued", "processing", "completed", "failed"
STATES = (QUEUED, PROCESSING, COMPLETED, FAILED)
PARTIAL = "partial"  # albums only: some tracks failed, the rest completed
ENDED = (COMPLETED, FAILED, PARTIAL)

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


def _shown_url(url: str | None) -> str | None:
    """Every URL a view shows, without its `user:password@` (the job keeps it to download)."""
    return redacted(url) if url else url


def started_job_ids(connection: redis.Redis, settings: Settings) -> list[str]:
    # cleanup=False: reading must not fail jobs as a side effect (RQ's default does).
    return StartedJobRegistry(settings.queue_name, connection=connection).get_job_ids(cleanup=False)


def all_job_ids(connection: redis.Redis, settings: Settings) -> list[str]:
    queue = Queue(settings.queue_name, connection=connection, serializer=SERIALIZER)
    name = settings.queue_name
    ids: list[str] = []
    ids += queue.get_job_ids()
    ids += ScheduledJobRegistry(name, connection=connection).get_job_ids(cleanup=False)  # waiting retries
    ids += started_job_ids(connection, settings)
    ids += FinishedJobRegistry(name, connection=connection).get_job_ids(cleanup=False)
    ids += FailedJobRegistry(name, connection=connection).get_job_ids(cleanup=False)
    return list(dict.fromkeys(ids))


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value.tzinfo is None else value.isoformat().replace("+00:00", "Z")


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


def _iso_or_none(stamp: object) -> str | None:
    return _iso_from_timestamp(stamp) if isinstance(stamp, int | float) else None


def job_view(job: Job, max_attempts: int | None = None) -> dict[str, Any]:
    """A job as `bin/jobs --json` shows it.

    `max_attempts`: what to show before a worker has recorded the job's own (its first attempt
    has not ended yet); the settings' figure.
    """
    kwargs = job.kwargs or {}
    meta = job.meta or {}
    progress = meta.get("progress") or {}
    state = state_of(job)
    view: dict[str, Any] = {
        "id": job.id,
        "kind": meta.get("kind", "track"),
        "state": state,
        "status": _status_text(job),
        "url": _shown_url(kwargs.get("url")),
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
        # The retries (jobs.retries): attempts made so far, and while it waits, when the next is due.
        "attempts": int(meta.get("attempts") or 0),
        "max_attempts": meta.get("max_attempts") or max_attempts,
        "next_attempt_at": _iso_or_none(meta.get("next_attempt_at")) if state == QUEUED else None,
        "last_error": meta.get("last_error"),
    }
    result = job.return_value(refresh=False) if state == COMPLETED else None
    if isinstance(result, dict) and "path" in result:
        view["path"] = result["path"]
        if state == COMPLETED and result.get("bytes") is not None:
            view["progress"]["bytes_done"] = result["bytes"]
            view["progress"]["bytes_total"] = view["progress"]["bytes_total"] or result["bytes"]
    # The saved file's name, once known: the final path a running download writes to (its meta),
    # then where the completed job put it. None while queued or when nothing was written.
    saved = view.get("path") or meta.get("path")
    view["file"] = PurePath(saved).name if isinstance(saved, str) and saved else None
    return view


def fetch_jobs(connection: redis.Redis, ids: Iterable[str]) -> list[Job]:
    return [job for job in Job.fetch_many(list(ids), connection=connection, serializer=SERIALIZER) if job]


def list_jobs(connection: redis.Redis, settings: Settings, state: str | None = None) -> list[dict[str, Any]]:
    """Every job and album still kept, oldest first; albums carry their derived state."""
    jobs = fetch_jobs(connection, all_job_ids(connection, settings))
    views = [job_view(job, settings.max_attempts) for job in jobs]
    views = with_albums(connection, views)
    if state is not None:
        views = [view for view in views if view["state"] == state]
    views.sort(key=lambda view: view["enqueued_at"] or "")
    return views


# --- albums ------------------------------------------------------------------------------
def _iso_from_timestamp(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")


def derive_state(states: Sequence[str]) -> str:
    """An album's state from its tracks' states (invalid playlist entries count as failed)."""
    total = len(states)
    completed = states.count(COMPLETED)
    failed = states.count(FAILED)
    if total and completed == total:
        return COMPLETED
    if total and failed == total:
        return FAILED
    if total and completed + failed == total:
        return PARTIAL
    if PROCESSING in states or completed or failed:
        return PROCESSING
    return QUEUED


def album_view(
    connection: redis.Redis, record: album.AlbumRecord, known: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    """The album as `bin/jobs --json` shows it; None when none of its jobs is left.

    `known`: job views already read, by id; the album's other jobs are read and added to it.
    """
    known = {} if known is None else known
    missing = [job_id for job_id in record.job_ids if job_id not in known]
    for job in fetch_jobs(connection, missing):
        known[job.id] = job_view(job)
    playlist = known.get(record.playlist_job or "")
    tracks = [(track, known[track["id"]]) for track in record.tracks if track["id"] in known]
    if playlist is None and not tracks and not (record.invalid and record.source == album.SOURCE_PLAYLIST):
        return None

    failed_tracks: list[dict[str, Any]] = []
    for track, view in tracks:
        if view["state"] == FAILED:
            failed_tracks.append(
                {
                    "id": view["id"],
                    "url": _shown_url(track["url"]),
                    "title": track.get("title"),
                    "error": view.get("error"),
                }
            )
    for entry in record.invalid:
        failed_tracks.append(
            {
                "id": None,
                "url": _shown_url(entry["entry"]),
                "title": entry.get("title"),
                "error": messages.playlist_entry(entry["line"], entry["error"]),
            }
        )
    states = [view["state"] for _, view in tracks] + [FAILED] * len(record.invalid)
    error: str | None = None
    if playlist is not None and playlist["state"] != COMPLETED:
        state = playlist["state"]
        error = playlist.get("error")
    else:
        state = derive_state(states)
        if state in (FAILED, PARTIAL):
            error = messages.tracks_failed(states.count(FAILED), len(states))

    views = [view for _, view in tracks]
    totals = [view["progress"].get("bytes_total") for view in views]
    started = [v["started_at"] for v in ([playlist] if playlist else []) + views if v.get("started_at")]
    ended = [v["ended_at"] for v in views if v.get("ended_at")]
    return {
        "id": record.id,
        "kind": "album",
        "name": record.name,
        "state": state,
        "status": state,
        "url": _shown_url(record.url),
        "dest": record.folder,
        "error": error,
        "progress": {
            "bytes_done": sum(int(view["progress"].get("bytes_done") or 0) for view in views),
            "bytes_total": sum(totals) if views and all(t is not None for t in totals) else None,
            "rate": sum(int(view["progress"].get("rate") or 0) for view in views if view["state"] == PROCESSING),
        },
        "album_id": None,
        "enqueued_at": _iso_from_timestamp(record.created_at),
        "started_at": min(started) if started else None,
        "ended_at": max(ended) if ended and state in ENDED else None,
        "tracks": {"total": len(states), "completed": states.count(COMPLETED), "failed": states.count(FAILED)},
        "failed_tracks": failed_tracks,
        "track_ids": [track["id"] for track, _ in tracks],
        "playlist_job": record.playlist_job,
    }


def with_albums(connection: redis.Redis, views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Job views plus one view per album; playlist jobs are shown through their album.

    Albums none of whose jobs is left (expired or deleted one by one) are dropped here.
    """
    known = {view["id"]: view for view in views}
    albums = []
    for album_id in album.album_ids(connection):
        record = album.load(connection, album_id)
        view = album_view(connection, record, known) if record is not None else None
        if view is None:
            if not is_deleted(connection, album_id):  # a deletion in progress removes it itself
                album.remove_record(connection, album_id)
            continue
        albums.append(view)
    return [view for view in views if view.get("kind") != "playlist"] + albums


def views_of(
    connection: redis.Redis, ids: Iterable[str], known: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Views of these jobs and albums, in order; ids that no longer exist are left out.

    Every job view read (an album's tracks too) is added to `known`, and none is read twice.
    """
    known = {} if known is None else known
    ids = list(ids)
    tracks = [i for i in ids if not i.startswith(album.ALBUM_ID_PREFIX) and i not in known]
    known.update({job.id: job_view(job) for job in fetch_jobs(connection, tracks)})  # one round trip
    views = []
    for item_id in ids:
        record = album.load(connection, item_id) if item_id.startswith(album.ALBUM_ID_PREFIX) else None
        if record is not None:
            view = album_view(connection, record, known)
            if view is not None:
                views.append(view)
            continue
        if item_id in known:
            views.append(known[item_id])
    return views


def waited_views(
    connection: redis.Redis, job_ids: list[str]
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The jobs and albums waited for (an album's own tracks not among them), and each album's
    track views in album order (a playlist's once a worker has read it)."""
    known: dict[str, dict[str, Any]] = {}
    views = views_of(connection, job_ids, known)  # reads every album's tracks into `known` too
    albums = {view["id"]: view for view in views if view.get("kind") == "album"}
    top = [view for view in views if view.get("album_id") not in albums]
    tracks_of = {key: [known[t] for t in one.get("track_ids") or [] if t in known] for key, one in albums.items()}
    return top, tracks_of
