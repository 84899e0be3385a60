"""Putting work on the queue: track jobs, albums of tracks, playlist albums.

Every request is validated before anything is written, and each call writes in one
transaction, so a refused request (InvalidRequest) changes nothing and an accepted one is
whole: the jobs, their `enqueued` history events and the album record appear together.
Validation includes the workers' private-network setting (`jobs.published`): a URL they would
refuse as private is refused here, before it is queued.

A track whose URL, destination and name are those of a job still queued, running or waiting
for a retry is not enqueued again: the earlier job stands for it (`jobs.keys.ACTIVE_URLS`
remembers the last job per request; whether it still lives is read from the job itself, so
an entry left by a job that ended is simply replaced). `force` enqueues it anyway.

Backpressure: an enqueue that would take the queue past `DQ_QUEUE_MAX` jobs (queued plus
waiting for a retry) is refused whole with QueueFull; `backlog_warning` says when the queue is
past `DQ_QUEUE_WARN`. The count is read just before the write, so two enqueues racing at the
limit can pass it by one batch: it protects Redis's memory, not an exact figure.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

import redis
from rq.queue import Queue

from config import Settings
from jobs import history, keys, messages
from jobs.album import SOURCE_PLAYLIST, SOURCE_TRACKS, AlbumRecord, AlbumTrack, InvalidEntry, new_album_id
from jobs.connection import SERIALIZER, reply_text
from jobs.errors import InvalidRequest, QueueFull
from jobs.naming import album_folder, album_name, number_width, playlist_album_name, track_stem
from jobs.parts import LIVE_STATUSES
from jobs.paths import check_dest, check_name
from jobs.published import refuse_private_urls
from jobs.rq_compat import write_queued
from jobs.tombstones import is_deleted
from jobs.urls import check_url, redacted

TRACK_FUNC = "jobs.track.download_track"
PLAYLIST_FUNC = "jobs.playlist.fetch_playlist"


@dataclass(frozen=True)
class TrackRequest:
    url: str
    dest: str = ""
    name: str | None = None
    stem: str | None = None
    album_id: str | None = None
    force: bool = False  # replace the file of an earlier job for the same URL and destination
    # Set by `checked`: the CLI checks each line as it reads it (to name the line), and
    # `enqueue_tracks` need not check 10,000 URLs a second time.
    valid: bool = field(default=False, compare=False, repr=False)

    @property
    def identity(self) -> str:
        """What makes two requests the same download: URL (exactly), destination and name."""
        return f"{self.dest}\0{self.name or ''}\0{self.url}"

    def checked(self) -> TrackRequest:
        """This request with URL, dest and name validated; raises InvalidRequest."""
        if self.valid:
            return self
        return TrackRequest(
            url=check_url(self.url),
            dest=check_dest(self.dest),
            name=check_name(self.name) if self.name else None,
            stem=self.stem,
            album_id=self.album_id,
            force=self.force,
            valid=True,
        )


def get_queue(connection: redis.Redis, settings: Settings) -> Queue:
    return Queue(settings.queue_name, connection=connection, serializer=SERIALIZER)


def queued_count(connection: redis.Redis | redis.client.Pipeline, settings: Settings) -> int:
    """Jobs waiting for a worker: in the queue, or waiting for their retry.

    `connection` may be a pipeline WATCHing keys (immediate mode, before MULTI).
    """
    if isinstance(connection, redis.client.Pipeline):
        in_queue = cast(int, connection.llen(keys.queue(settings.queue_name)))
        return in_queue + cast(int, connection.zcard(keys.scheduled(settings.queue_name)))
    with connection.pipeline(transaction=False) as pipe:
        pipe.llen(keys.queue(settings.queue_name))
        pipe.zcard(keys.scheduled(settings.queue_name))
        in_queue, retrying = pipe.execute()
    return int(in_queue) + int(retrying)


def make_room(connection: redis.Redis | redis.client.Pipeline, settings: Settings, adding: int) -> None:
    """Raise QueueFull when `adding` more jobs would take the queue past DQ_QUEUE_MAX."""
    if adding <= 0:
        return
    queued = queued_count(connection, settings)
    if queued + adding > settings.queue_max:
        raise QueueFull(queued, settings.queue_max)


def backlog_warning(connection: redis.Redis, settings: Settings) -> str | None:
    """The warning an enqueue answers with while more than DQ_QUEUE_WARN jobs are queued."""
    queued = queued_count(connection, settings)
    if queued <= settings.queue_warn:
        return None
    return messages.queue_long(queued, settings.queue_warn)


def track_job_data(request: TrackRequest, settings: Settings, job_id: str | None = None) -> Any:
    kwargs: dict[str, Any] = {"url": request.url, "dest": request.dest}
    for key in ("name", "stem", "album_id"):
        value = getattr(request, key)
        if value is not None:
            kwargs[key] = value
    if request.force:
        kwargs["force"] = True
    meta: dict[str, Any] = {"kind": "track", "progress": {"bytes_done": 0, "bytes_total": None}}
    if request.album_id is not None:
        meta["album_id"] = request.album_id
    return Queue.prepare_data(
        TRACK_FUNC,
        kwargs=kwargs,
        timeout=settings.job_timeout,
        result_ttl=settings.keep_completed,
        failure_ttl=settings.keep_failed,
        description=redacted(request.url),  # RQ logs and the dashboard show it
        meta=meta,
        job_id=job_id,
    )


def enqueue_tracks(
    connection: redis.Redis, settings: Settings, requests: Sequence[TrackRequest], *, force: bool = False
) -> list[str]:
    """Validate every request first, then enqueue them all in one transaction (all or nothing).

    Returns one job id per request, in order: the new job's, or the earlier job's still queued
    or running for the same download (see the module docstring), unless `force`.
    Raises QueueFull (nothing enqueued) when the new jobs would not fit under DQ_QUEUE_MAX.
    """
    checked = [replace(request.checked(), force=force or request.force) for request in requests]
    refuse_private_urls(connection, settings, [request.url for request in checked])
    queue = get_queue(connection, settings)
    identities = [request.identity for request in checked]
    while True:
        with connection.pipeline() as pipeline:
            try:
                pipeline.watch(keys.ACTIVE_URLS)
                earlier = {} if force else _live_jobs(connection, pipeline, identities)
                fresh: dict[str, TrackRequest] = {}
                for request, identity in zip(checked, identities, strict=True):
                    if identity not in earlier:
                        fresh.setdefault(identity, request)  # the same download twice in one batch: once
                make_room(pipeline, settings, len(fresh))
                pipeline.multi()
                made = write_queued(pipeline, queue, [track_job_data(r, settings) for r in fresh.values()])
                history.record_many(
                    pipeline,
                    history.ENQUEUED,
                    [(i, redacted(r.url), r.album_id) for i, r in zip(made, fresh.values(), strict=True)],
                )
                if made:
                    pipeline.hset(keys.ACTIVE_URLS, mapping=dict(zip(fresh, made, strict=True)))
                pipeline.execute()
            except redis.WatchError:
                continue  # another enqueue went first: look again
        by_identity = {**dict(zip(fresh, made, strict=True)), **earlier}
        return [by_identity[identity] for identity in identities]


def _live_jobs(connection: redis.Redis, watching: redis.client.Pipeline, identities: list[str]) -> dict[str, str]:
    """The earlier jobs' ids (still queued, running or waiting for a retry) for these requests."""
    unique = list(dict.fromkeys(identities))
    ids = [reply_text(reply) for reply in cast(list[Any], watching.hmget(keys.ACTIVE_URLS, unique))]
    candidates = [(identity, job_id) for identity, job_id in zip(unique, ids, strict=True) if job_id]
    if not candidates:
        return {}
    with connection.pipeline(transaction=False) as pipe:
        for _identity, job_id in candidates:
            pipe.hget(keys.job(job_id), "status")
            is_deleted(pipe, job_id)
        replies = pipe.execute()
    return {
        identity: job_id
        for index, (identity, job_id) in enumerate(candidates)
        if reply_text(replies[2 * index]) in LIVE_STATUSES and replies[2 * index + 1] is None
    }


def _track_requests(album_id: str, folder: str, tracks: Sequence[AlbumTrack], width: int) -> list[TrackRequest]:
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
) -> list[str]:
    """Add track jobs to `pipeline` (already in MULTI) and to `record.tracks`; their ids."""
    requests_ = _track_requests(record.id, record.folder, tracks, width)
    queue = get_queue(connection, settings)
    ids = write_queued(pipeline, queue, [track_job_data(r, settings) for r in requests_])
    for job_id, track in zip(ids, tracks, strict=True):
        record.tracks.append({"id": job_id, "url": track.url, "title": track.title, "position": track.position})
    history.record_many(
        pipeline, history.ENQUEUED, [(i, redacted(t.url), record.id) for i, t in zip(ids, tracks, strict=True)]
    )
    return ids


def enqueue_album(
    connection: redis.Redis, settings: Settings, name: str, urls: Sequence[str], dest: str = ""
) -> tuple[AlbumRecord, list[str]]:
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
    refuse_private_urls(connection, settings, [track.url for track in tracks])
    make_room(connection, settings, len(tracks))
    with connection.pipeline() as pipeline:
        history.record(
            pipeline, record.id, history.ENQUEUED, f"album {record.name}: {len(tracks)} tracks", album_id=record.id
        )
        track_ids = _queue_tracks(pipeline, connection, settings, record, tracks, number_width(len(tracks)))
        pipeline.hset(keys.album(record.id), mapping=record.to_hash())
        pipeline.zadd(keys.ALBUMS, {record.id: record.created_at})
        pipeline.execute()
    return record, track_ids


def enqueue_playlist(
    connection: redis.Redis, settings: Settings, url: str, name: str | None = None, dest: str = ""
) -> tuple[AlbumRecord, str]:
    """An album whose tracks a worker reads from the M3U/M3U8 playlist at `url`."""
    url = check_url(url)
    refuse_private_urls(connection, settings, [url])
    make_room(connection, settings, 1)
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
        result_ttl=settings.keep_completed,
        failure_ttl=settings.keep_failed,
        description=f"playlist {redacted(url)}",
        meta={"kind": "playlist", "album_id": record.id},
    )
    with connection.pipeline() as pipeline:
        history.record(
            pipeline, record.id, history.ENQUEUED, f"album {record.name}: playlist {redacted(url)}", album_id=record.id
        )
        [job_id] = write_queued(pipeline, queue, [data])
        record.playlist_job = job_id
        history.record(pipeline, job_id, history.ENQUEUED, f"playlist {redacted(url)}", album_id=record.id)
        pipeline.hset(keys.album(record.id), mapping=record.to_hash())
        pipeline.zadd(keys.ALBUMS, {record.id: record.created_at})
        pipeline.execute()
    return record, job_id


class AlbumGone(Exception):
    """The album was deleted before its playlist's tracks could be added."""


def add_playlist_tracks(
    connection: redis.Redis,
    settings: Settings,
    album_id: str,
    tracks: Sequence[AlbumTrack],
    invalid: Sequence[InvalidEntry],
    width: int,
) -> list[str]:
    """Add a fetched playlist's tracks to its album, unless the album is being deleted.

    WATCHes the album record and the tombstones: a deletion that began after the check
    aborts the transaction, so a deleted album never gets tracks enqueued behind its back.
    """
    while True:
        with connection.pipeline() as pipeline:
            try:
                pipeline.watch(keys.album(album_id), keys.TOMBSTONES)
                raw = cast(dict[Any, Any], pipeline.hgetall(keys.album(album_id)))
                if not raw or is_deleted(pipeline, album_id):
                    raise AlbumGone(album_id)
                record = AlbumRecord.from_hash(album_id, raw)
                record.tracks = []
                record.invalid = [asdict(entry) for entry in invalid]
                pipeline.multi()
                track_ids = _queue_tracks(pipeline, connection, settings, record, tracks, width)
                pipeline.hset(keys.album(album_id), mapping=record.to_hash())
                pipeline.execute()
                return track_ids
            except redis.WatchError:
                continue  # something changed (often an unrelated deletion): look again
