"""Albums: many track jobs saved into one folder, with a state derived from their tracks.

An album is not one RQ job (20 lossless tracks can take longer than one job timeout) and
not an RQ `Group` either: a Group is an unordered set of job ids, and an album needs more
(its name and folder, its track order and titles, the playlist it came from, the playlist
entries that could not be used). So an album is a small record in Redis next to ordinary
track jobs, each with its own timeout, run by whichever worker is free:

    dq:album:<album id>   hash: name, folder, url, source, created_at, playlist_job,
                          tracks (JSON [{id, url, title, position}]), invalid (JSON [...])
    dq:albums             sorted set of album ids, scored by creation time

Each track job carries `album_id` in its kwargs and meta. An album made from a playlist
starts with one playlist job (`jobs.playlist.fetch_playlist`) that fetches and parses the
playlist in a worker, then adds the tracks to the record and the queue in one transaction.

Album states: queued, processing, completed (every track completed), failed (every track
failed, or the playlist could not be used), partial (some failed, the rest completed).
An album whose jobs have all expired or been deleted is dropped from the index when listed.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis
from rq.job import Job
from rq.utils import as_text

from config import Settings
from jobs import history
from jobs.errors import InvalidRequest
from jobs.lifecycle import TOMBSTONES, is_deleted
from jobs.paths import check_dest, check_url, filename_from_url, sanitize_filename

ALBUM_PREFIX = "dq:album:"
ALBUMS = "dq:albums"
ALBUM_ID_PREFIX = "album-"
PLAYLIST_FUNC = "jobs.playlist.fetch_playlist"
DEFAULT_PLAYLIST_NAME = "playlist"

SOURCE_TRACKS, SOURCE_PLAYLIST = "tracks", "playlist"
QUEUED, PROCESSING, COMPLETED, FAILED, PARTIAL = "queued", "processing", "completed", "failed", "partial"
ENDED = (COMPLETED, FAILED, PARTIAL)


@dataclass(frozen=True)
class AlbumTrack:
    """One entry of an album, in list order; `title` names the file (`NN - Title.ext`)."""

    url: str
    title: str | None = None
    position: int = 0


@dataclass(frozen=True)
class InvalidEntry:
    """A playlist entry that could not become a track; it counts as a failed track."""

    line: int
    entry: str
    error: str
    position: int = 0
    title: str | None = None


@dataclass
class AlbumRecord:
    id: str
    name: str
    folder: str  # relative to the download dir: <dest>/<name>
    source: str
    created_at: float
    url: str | None = None
    playlist_job: str | None = None
    tracks: list[dict[str, Any]] = field(default_factory=list)  # {id, url, title, position}
    invalid: list[dict[str, Any]] = field(default_factory=list)  # {line, entry, error, position, title}

    @property
    def job_ids(self) -> list[str]:
        """Every job of the album: the playlist job (if any) first, then the tracks in order."""
        ids = [self.playlist_job] if self.playlist_job else []
        return ids + [track["id"] for track in self.tracks]

    def to_hash(self) -> dict[Any, Any]:
        return {
            "name": self.name,
            "folder": self.folder,
            "source": self.source,
            "created_at": f"{self.created_at:.6f}",
            "url": self.url or "",
            "playlist_job": self.playlist_job or "",
            "tracks": json.dumps(self.tracks),
            "invalid": json.dumps(self.invalid),
        }

    @classmethod
    def from_hash(cls, album_id: str, raw: dict[Any, Any]) -> AlbumRecord:
        fields = {as_text(key): as_text(value) for key, value in raw.items()}
        return cls(
            id=album_id,
            name=fields.get("name", ""),
            folder=fields.get("folder", ""),
            source=fields.get("source", SOURCE_TRACKS),
            created_at=float(fields.get("created_at") or 0),
            url=fields.get("url") or None,
            playlist_job=fields.get("playlist_job") or None,
            tracks=json.loads(fields.get("tracks") or "[]"),
            invalid=json.loads(fields.get("invalid") or "[]"),
        )




def album_key(album_id: str) -> str:
    return ALBUM_PREFIX + album_id


def new_album_id() -> str:
    return ALBUM_ID_PREFIX + uuid.uuid4().hex[:16]


def load(connection: redis.Redis, album_id: str) -> AlbumRecord | None:
    raw = cast(dict[Any, Any], connection.hgetall(album_key(album_id)))
    return AlbumRecord.from_hash(album_id, raw) if raw else None


def exists(connection: redis.Redis, album_id: str) -> bool:
    return bool(connection.exists(album_key(album_id)))


def remove_record(connection: redis.Redis | redis.client.Pipeline, album_id: str) -> None:
    connection.delete(album_key(album_id))
    connection.zrem(ALBUMS, album_id)


# --- names ---------------------------------------------------------------------------------
def album_name(name: str) -> str:
    """The album's folder name: one safe path component, or InvalidRequest."""
    clean = sanitize_filename(name)
    if not clean:
        raise InvalidRequest(f"--album must name a folder, got {name!r}")
    return clean


def playlist_album_name(url: str) -> str:
    """A playlist album's default folder: the playlist's file name without its extension."""
    stem = os.path.splitext(filename_from_url(url))[0]
    return sanitize_filename(stem) or DEFAULT_PLAYLIST_NAME


def album_folder(dest: str, name: str) -> str:
    dest = check_dest(dest)
    return f"{dest}/{name}" if dest else name


def number_width(count: int) -> int:
    return max(2, len(str(count)))


def track_stem(position: int, width: int, title: str | None) -> str | None:
    """`NN - Title` when a title is known (the engine adds the extension), else None."""
    if not title or not title.strip():
        return None
    return sanitize_filename(f"{position:0{width}d} - {title.strip()}") or None


# --- enqueue -------------------------------------------------------------------------------
def _track_requests(album_id: str, folder: str, tracks: Sequence[AlbumTrack], width: int) -> list[Any]:
    from jobs.queue import TrackRequest

    return [
        TrackRequest(
            url=track.url, dest=folder, stem=track_stem(track.position, width, track.title), album_id=album_id
        ).checked()
        for track in tracks
    ]


def _queue_tracks(
    pipeline: redis.client.Pipeline,
    connection: redis.Redis,
    settings: Settings,
    record: AlbumRecord,
    tracks: Sequence[AlbumTrack],
    width: int,
) -> list[Job]:
    """Add track jobs to `pipeline` (already in MULTI) and to `record.tracks`."""
    from jobs.queue import get_queue, track_job_data

    requests_ = _track_requests(record.id, record.folder, tracks, width)
    queue = get_queue(connection, settings)
    jobs = queue.enqueue_many([track_job_data(r, settings) for r in requests_], pipeline=pipeline)
    for job, track in zip(jobs, tracks, strict=True):
        record.tracks.append({"id": job.id, "url": track.url, "title": track.title, "position": track.position})
        history.record(pipeline, job.id, history.ENQUEUED, track.url, album_id=record.id)
    return jobs


def enqueue_album(
    connection: redis.Redis, settings: Settings, name: str, urls: Sequence[str], dest: str = ""
) -> tuple[AlbumRecord, list[Job]]:
    """One album of these URLs under `<dest>/<name>/`, all enqueued in one transaction.

    Every URL is checked first: one bad URL refuses the whole album (InvalidRequest).
    """
    name = album_name(name)
    folder = album_folder(dest, name)
    tracks = [AlbumTrack(url=check_url(url), position=index) for index, url in enumerate(urls, start=1)]
    if not tracks:
        raise InvalidRequest("an album needs at least one URL")
    record = AlbumRecord(id=new_album_id(), name=name, folder=folder, source=SOURCE_TRACKS, created_at=time.time())
    _track_requests(record.id, folder, tracks, number_width(len(tracks)))  # validate before writing
    with connection.pipeline() as pipeline:
        history.record(
            pipeline, record.id, history.ENQUEUED, f"album {record.name}: {len(tracks)} tracks", album_id=record.id
        )
        jobs = _queue_tracks(pipeline, connection, settings, record, tracks, number_width(len(tracks)))
        pipeline.hset(album_key(record.id), mapping=record.to_hash())
        pipeline.zadd(ALBUMS, {record.id: record.created_at})
        pipeline.execute()
    return record, jobs


def enqueue_playlist(
    connection: redis.Redis, settings: Settings, url: str, name: str | None = None, dest: str = ""
) -> tuple[AlbumRecord, Job]:
    """An album whose tracks a worker reads from the M3U/M3U8 playlist at `url`."""
    from jobs.queue import FAILURE_TTL, RESULT_TTL, get_queue

    url = check_url(url)
    folder_name = album_name(name) if name else playlist_album_name(url)
    record = AlbumRecord(
        id=new_album_id(),
        name=folder_name,
        folder=album_folder(dest, folder_name),
        source=SOURCE_PLAYLIST,
        created_at=time.time(),
        url=url,
    )
    queue = get_queue(connection, settings)
    data = queue.prepare_data(
        PLAYLIST_FUNC,
        kwargs={"album_id": record.id, "url": url},
        timeout=settings.job_timeout,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
        description=f"playlist {url}",
        meta={"kind": "playlist", "album_id": record.id},
    )
    with connection.pipeline() as pipeline:
        history.record(
            pipeline, record.id, history.ENQUEUED, f"album {record.name}: playlist {url}", album_id=record.id
        )
        [job] = queue.enqueue_many([data], pipeline=pipeline)
        record.playlist_job = job.id
        history.record(pipeline, job.id, history.ENQUEUED, f"playlist {url}", album_id=record.id)
        pipeline.hset(album_key(record.id), mapping=record.to_hash())
        pipeline.zadd(ALBUMS, {record.id: record.created_at})
        pipeline.execute()
    return record, job


class AlbumGone(Exception):
    """The album was deleted before its playlist's tracks could be added."""


def add_playlist_tracks(
    connection: redis.Redis,
    settings: Settings,
    album_id: str,
    tracks: Sequence[AlbumTrack],
    invalid: Sequence[InvalidEntry],
    width: int,
) -> list[Job]:
    """Add a fetched playlist's tracks to its album, unless the album is being deleted.

    WATCHes the album record and the tombstones: a deletion that began after the check
    aborts the transaction, so a deleted album never gets tracks enqueued behind its back.
    """
    while True:
        with connection.pipeline() as pipeline:
            try:
                pipeline.watch(album_key(album_id), TOMBSTONES)
                raw = cast(dict[Any, Any], pipeline.hgetall(album_key(album_id)))
                if not raw or pipeline.zscore(TOMBSTONES, album_id) is not None:
                    raise AlbumGone(album_id)
                record = AlbumRecord.from_hash(album_id, raw)
                record.tracks = []
                record.invalid = [asdict(entry) for entry in invalid]
                pipeline.multi()
                jobs = _queue_tracks(pipeline, connection, settings, record, tracks, width)
                pipeline.hset(album_key(album_id), mapping=record.to_hash())
                pipeline.execute()
                return jobs
            except redis.WatchError:
                continue  # something changed (often an unrelated deletion): look again


# --- views ---------------------------------------------------------------------------------
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
    connection: redis.Redis, record: AlbumRecord, known: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    """The album as `bin/jobs --json` shows it; None when none of its jobs is left."""
    from jobs.queue import fetch_jobs, job_view

    known = dict(known or {})
    missing = [job_id for job_id in record.job_ids if job_id not in known]
    for job in fetch_jobs(connection, missing):
        known[job.id] = job_view(job)
    playlist = known.get(record.playlist_job or "")
    tracks = [(track, known[track["id"]]) for track in record.tracks if track["id"] in known]
    if playlist is None and not tracks and not (record.invalid and record.source == SOURCE_PLAYLIST):
        return None

    failed_tracks: list[dict[str, Any]] = []
    for track, view in tracks:
        if view["state"] == FAILED:
            failed_tracks.append(
                {"id": view["id"], "url": track["url"], "title": track.get("title"), "error": view.get("error")}
            )
    for entry in record.invalid:
        failed_tracks.append(
            {"id": None, "url": entry["entry"], "title": entry.get("title"),
             "error": f"line {entry['line']}: {entry['error']}"}
        )
    states = [view["state"] for _, view in tracks] + [FAILED] * len(record.invalid)
    error: str | None = None
    if playlist is not None and playlist["state"] != COMPLETED:
        state = playlist["state"]
        error = playlist.get("error")
    else:
        state = derive_state(states)
        if state in (FAILED, PARTIAL):
            error = f"{states.count(FAILED)} of {len(states)} tracks failed"

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
        "url": record.url,
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


def album_ids(connection: redis.Redis) -> list[str]:
    return [as_text(member) for member in cast(list[bytes], connection.zrange(ALBUMS, 0, -1))]


def with_albums(connection: redis.Redis, views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Job views plus one view per album; playlist jobs are shown through their album.

    Albums none of whose jobs is left (expired or deleted one by one) are dropped here.
    """
    known = {view["id"]: view for view in views}
    albums = []
    for album_id in album_ids(connection):
        record = load(connection, album_id)
        view = album_view(connection, record, known) if record is not None else None
        if view is None:
            if not is_deleted(connection, album_id):  # a deletion in progress removes it itself
                remove_record(connection, album_id)
            continue
        albums.append(view)
    return [view for view in views if view.get("kind") != "playlist"] + albums


def views_of(connection: redis.Redis, ids: Iterable[str]) -> list[dict[str, Any]]:
    """Views of these jobs and albums, in order; ids that no longer exist are left out."""
    from jobs.queue import fetch_jobs, job_view

    views = []
    for item_id in ids:
        record = load(connection, item_id) if item_id.startswith(ALBUM_ID_PREFIX) else None
        if record is not None:
            view = album_view(connection, record)
            if view is not None:
                views.append(view)
            continue
        views.extend(job_view(job) for job in fetch_jobs(connection, [item_id]))
    return views


def failure_lines(view: dict[str, Any]) -> list[str]:
    """Indented lines naming an album's failed tracks and why, for `bin/jobs`."""
    lines = []
    for track in view.get("failed_tracks") or []:
        label = track.get("title") or track.get("url") or ""
        where = track["id"] or "not enqueued"
        lines.append(f"    failed track {where}: {label}: {track.get('error') or 'failed'}")
    return lines

