"""Partial files: one per job (`<final name>.<job id>.part`), judged by the id in the name.

A partial file is kept exactly while its job may still write it or resume from it (queued,
running or waiting for a retry) and removed once the job ended or is gone. Nothing needs the
supervisor's memory for that: each download adds its partial file to a per-host set in Redis
when it starts (`jobs.keys.parts`), each cleanup round judges the files in that set, and the
startup sweep walks the download dir for any the set missed (Redis lost, a crash between
writes). A file whose name carries no job id (a user's own `song.part`) is never touched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import redis
from rq.job import JobStatus

from jobs import keys
from jobs.connection import reply_text
from jobs.files import remove_empty_dirs
from jobs.paths import PART_SUFFIX, in_download_dir, part_owner, remove_part_file

log = logging.getLogger("dq.parts")

# A job in one of these may still write its partial file, or resume from it.
LIVE_STATUSES = frozenset(
    {JobStatus.QUEUED.value, JobStatus.STARTED.value, JobStatus.SCHEDULED.value, JobStatus.DEFERRED.value}
)


def track(connection: redis.Redis | redis.client.Pipeline, host: str, partial: Path) -> None:
    connection.sadd(keys.parts(host), str(partial))


def discard(download_dir: Path, final_path: str | None, job_id: str, created_dir: str | None = None) -> Path | None:
    """Remove a job's partial file and the folders its download created, if they are left empty."""
    removed = remove_part_file(download_dir, final_path, job_id)
    if final_path:
        remove_empty_dirs(download_dir, Path(final_path).parent, Path(created_dir) if created_dir else None)
    return removed


def statuses(connection: redis.Redis, job_ids: list[str]) -> list[str | None]:
    """The RQ status of each job, in one round trip (None: the job is gone)."""
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(keys.job(job_id), "status")
        return [reply_text(reply) for reply in pipe.execute()]


def sweep(connection: redis.Redis, download_dir: Path, paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """Remove those of `paths` whose job no longer lives; (removed, gone from disk already)."""
    owned = [(path, owner) for path in paths if (owner := part_owner(path.name)) is not None]
    if not owned:
        return [], []
    found = statuses(connection, [owner for _path, owner in owned])
    removed, missing = [], []
    for (path, owner), status in zip(owned, found, strict=True):
        if not path.exists():
            missing.append(path)
            continue
        if status in LIVE_STATUSES or not in_download_dir(download_dir, path):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            missing.append(path)
            continue
        log.info("removed partial file %s of job %s (%s)", path, owner, status or "gone")
        removed.append(path)
    return removed, missing


def sweep_tracked(connection: redis.Redis, download_dir: Path, host: str) -> list[Path]:
    """One cleanup round's sweep: the partial files this host's downloads started."""
    members = cast(set[bytes], connection.smembers(keys.parts(host)))
    paths = [Path(reply_text(member) or "") for member in members]
    removed, missing = sweep(connection, download_dir, paths)
    done = removed + missing + [path for path in paths if part_owner(path.name) is None]
    if done:
        connection.srem(keys.parts(host), *(str(path) for path in done))
    return removed


def sweep_tree(connection: redis.Redis, download_dir: Path) -> list[Path]:
    """The startup sweep: every partial file of ours anywhere in the download dir."""
    if not download_dir.is_dir():
        return []
    found = [
        Path(directory) / name
        for directory, _dirs, files in os.walk(download_dir)
        for name in files
        if name.endswith(PART_SUFFIX)
    ]
    removed, _missing = sweep(connection, download_dir, found)
    return removed
