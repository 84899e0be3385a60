"""The track job: what a worker runs for one URL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rq.job import Job, get_current_job

from config import Settings
from jobs.connection import SERIALIZER
from jobs.download import Target, download
from jobs.errors import JobDeleted
from jobs.tombstones import is_deleted, write_meta_if_alive


def download_track(
    url: str,
    dest: str = "",
    name: str | None = None,
    stem: str | None = None,
    album_id: str | None = None,
) -> dict[str, Any]:
    """Download one URL to `<download dir>/<dest>/`; return where it went.

    Runs inside an RQ work horse. Raises a `jobs.errors.DownloadError` whose text is the
    user's one-line error; RQ's own timeout passes through untouched.
    """
    settings = Settings.from_env()
    job = get_current_job()
    if job is not None and is_deleted(job.connection, job.id):
        raise JobDeleted(job.id)  # deleted while a worker was picking it up: fetch nothing
    reporter = ProgressReporter(job) if job is not None else None
    result = download(
        url,
        Target(directory=dest, name=name, stem=stem),
        download_dir=settings.download_dir,
        request_timeout=settings.request_timeout,
        allow_private=settings.allow_private_networks,
        on_progress=reporter.report if reporter else None,
        on_path=reporter.set_path if reporter else None,
    )
    relative = result.path.relative_to(settings.download_dir.resolve())
    return {"path": str(relative), "bytes": result.size, "skipped": result.skipped}


class ProgressReporter:
    """Writes progress into the job's meta, never recreating a deleted job.

    The engine calls this at most about once a second; a write that finds the job gone
    raises JobDeleted, which stops the download between chunks (cooperative cancel).
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self.started = time.monotonic()

    def set_path(self, path: Path) -> None:
        self.job.meta["path"] = str(path)
        self._write()

    def report(self, done: int, total: int | None) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.job.meta["progress"] = {"bytes_done": done, "bytes_total": total, "rate": round(done / elapsed)}
        self._write()

    def _write(self) -> None:
        if not write_meta_if_alive(self.job.connection, self.job.id, SERIALIZER.dumps(self.job.meta)):
            raise JobDeleted(self.job.id)
