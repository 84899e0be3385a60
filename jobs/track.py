"""The track job: what a worker runs for one URL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import redis
from rq.job import Job, get_current_job

from config import Settings
from jobs import keys, parts, retries
from jobs.connection import SERIALIZER, reply_text
from jobs.download import Resume, Started, Target, download
from jobs.errors import HeldBack, JobDeleted
from jobs.paths import part_path
from jobs.tombstones import is_deleted, queue_meta_if_alive, write_meta_if_alive
from jobs.workers import this_host


def download_track(
    url: str,
    dest: str = "",
    name: str | None = None,
    stem: str | None = None,
    album_id: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Download one URL to `<download dir>/<dest>/`; return where it went.

    Runs in an RQ worker (`jobs.worker`). Raises a `jobs.errors.DownloadError` whose text is the
    user's one-line error; RQ's own timeout passes through untouched. A retried attempt
    resumes from the partial file an earlier one left (its path and validator are in meta).
    """
    settings = Settings.from_env()
    job = get_current_job()
    reporter = None
    resume = None
    if job is not None:
        _check_start(job.connection, job.id, url)
        reporter = ProgressReporter(job)
        resume = _resume_of(job.meta)

    def writer_of(path: Path) -> str | None:
        return owner_of(job.connection, path) if job is not None else None

    result = download(
        url,
        Target(directory=dest, name=name, stem=stem, owner=job.id if job is not None else None, replace=force),
        download_dir=settings.download_dir,
        request_timeout=settings.request_timeout,
        allow_private=settings.allow_private_networks,
        on_progress=reporter.report if reporter else None,
        on_start=reporter.started if reporter else None,
        resume=resume,
        keep_partial=settings.retries > 0,
        min_free_bytes=settings.min_free_bytes,
        max_file_bytes=settings.max_file_bytes,
        owner_of=writer_of,
    )
    if job is not None:
        job.connection.hset(keys.FILES, str(result.path), url)
    relative = result.path.relative_to(settings.download_dir.resolve())
    return {"path": str(relative), "bytes": result.size, "skipped": result.skipped}


def _check_start(connection: redis.Redis, job_id: str, url: str) -> None:
    """Before any request, in one round trip: deleted meanwhile? Its server asking us to wait?"""
    where = retries.host_of(url)
    with connection.pipeline(transaction=False) as pipe:
        is_deleted(pipe, job_id)
        pipe.get(keys.backoff(where))
        deleted_score, backoff = pipe.execute()
    if deleted_score is not None:
        raise JobDeleted(job_id)  # deleted while a worker was picking it up: fetch nothing
    until = retries.held_until(backoff, time.time())
    if until is not None:
        raise HeldBack(where, until)


def _resume_of(meta: dict[str, Any]) -> Resume | None:
    path = meta.get("path")
    if not isinstance(path, str) or not path:
        return None
    validator = meta.get("validator")
    return Resume(final=Path(path), validator=validator if isinstance(validator, str) else None)


def owner_of(connection: redis.Redis, path: Path) -> str | None:
    """The URL whose download wrote the file at `path`, if one of ours did."""
    return reply_text(cast(bytes | None, connection.hget(keys.FILES, str(path))))


class ProgressReporter:
    """Writes progress into the job's meta, never recreating a deleted job.

    The engine calls this at most about once a second; a write that finds the job gone
    raises JobDeleted, which stops the download between chunks (cooperative cancel).
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self.started_at = time.monotonic()

    def started(self, start: Started) -> None:
        """The final path is known and nothing is written yet: remember where the bytes go."""
        self.job.meta["path"] = str(start.final)
        self.job.meta["validator"] = start.validator
        if start.created_dir is not None:
            self.job.meta["created_dir"] = str(start.created_dir)
        with self.job.connection.pipeline(transaction=False) as pipe:
            parts.track(pipe, this_host(), part_path(start.final, self.job.id))
            queue_meta_if_alive(pipe, self.job.id, SERIALIZER.dumps(self.job.meta))
            _tracked, written = pipe.execute()
        if not written:
            raise JobDeleted(self.job.id)

    def report(self, done: int, total: int | None) -> None:
        elapsed = max(time.monotonic() - self.started_at, 1e-6)
        self.job.meta["progress"] = {"bytes_done": done, "bytes_total": total, "rate": round(done / elapsed)}
        self._write()

    def _write(self) -> None:
        if not write_meta_if_alive(self.job.connection, self.job.id, SERIALIZER.dumps(self.job.meta)):
            raise JobDeleted(self.job.id)
