"""The download engine: one URL to one file, resumable, never half a file at a final path.

Bytes go to the job's own partial file (`<final>.<job id>.part`), are fsynced, checked
against the announced length and only then claimed under the final name (`jobs.files.claim`:
atomic, never over another download's file). A later attempt resumes from the partial file
with `Range` + `If-Range`: a 206 that starts where the file ends is appended, anything else
starts again from zero. The total deadline is RQ's job timeout, which this module never catches.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from jobs.errors import (
    FileTooLarge,
    NotAFile,
)
from jobs.files import (
    claim,
    first_missing_dir,
    fsync_dir,
    numbered,
    regular_size,
)
from jobs.http import (
    LOW_SPEED_LIMIT,
    RANGE_NOT_SATISFIABLE,
    content_length,
    new_session,
    open_response,
)
from jobs.paths import (
    confined,
    file_in,
    filename_from_content_disposition,
    filename_from_url,
    part_path,
    sanitize_filename,
)
from jobs.stream import ProgressCallback, Stream, check_space

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
HTML_SUFFIXES = (".html", ".htm")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)

OwnerLookup = Callable[[Path], str | None]


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    skipped: bool  # the complete file was already there
    resumed_from: int = 0  # bytes an earlier attempt had written and this one kept


@dataclass(frozen=True)
class Target:
    """Where a download goes: a folder and either an exact name or a stem to add an extension to."""

    directory: str = ""  # relative to the download dir
    name: str | None = None
    stem: str | None = None
    owner: str | None = None  # the job id, which names the partial file
    replace: bool = False  # --force: replace the file at the final path, whoever wrote it


@dataclass(frozen=True)
class Resume:
    """What an earlier attempt left: where it was going and the validator of what it got."""

    final: Path
    validator: str | None


@dataclass(frozen=True)
class Started:
    """Heard before the first byte is written: enough for a later attempt to resume."""

    final: Path
    validator: str | None  # strong ETag, else Last-Modified; None: the server gives no way to resume
    created_dir: Path | None  # the top-most folder this download creates, removed again if left empty


def choose_path(target: Target, url: str, response: requests.Response, download_dir: Path) -> Path:
    if target.name:
        filename = sanitize_filename(target.name)
    else:
        filename = filename_from_content_disposition(response.headers.get("Content-Disposition")) or filename_from_url(
            response.url or url
        )
        if target.stem:
            ext = os.path.splitext(filename)[1]
            filename = sanitize_filename(target.stem + ext)
    filename = filename or "download"
    directory = confined(download_dir, target.directory) if target.directory else download_dir.resolve()
    return file_in(directory, filename)


def validator_of(response: requests.Response) -> str | None:
    """What `If-Range` may carry: a strong ETag (RFC 9110 forbids weak ones there), else Last-Modified."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified") or None


def _is_html_page(target: Target, url: str, response: requests.Response) -> bool:
    """A web page where a file was asked for: a login page, an error page, a folder listing."""
    media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if media_type not in HTML_TYPES:
        return False
    asked_for = [
        target.name or "",
        filename_from_url(url),
        filename_from_content_disposition(response.headers.get("Content-Disposition")),
    ]
    return not any(name.lower().endswith(HTML_SUFFIXES) for name in asked_for)


def _resumed_at(response: requests.Response, offset: int, validator: str | None) -> int | None:
    """The full size when `response` is a 206 continuing exactly at `offset` of the same file."""
    if response.status_code != 206:
        return None
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None or int(match.group(1)) != offset or match.group(3) == "*":
        return None
    answered = validator_of(response)
    if answered is not None and validator is not None and answered != validator:
        return None
    return int(match.group(3))


def _complete_copy(final: Path, total: int, url: str, owner_of: OwnerLookup | None) -> Path | None:
    """A file this URL's earlier download left complete (`Name.ext` or one of its numbered copies).

    A file at the name itself whose writer is unknown (the user's own, or from before owners
    were recorded) counts when its size matches, as it always did.
    """
    for number in range(1, 100):
        candidate = numbered(final, number)
        if not os.path.lexists(candidate):
            return None
        owner = owner_of(candidate) if owner_of is not None else None
        known_same = owner == url or (owner is None and number == 1)
        if known_same and regular_size(candidate) == total:  # a symlink is never our copy
            return candidate
    return None


def download(
    url: str,
    target: Target,
    *,
    download_dir: Path,
    request_timeout: float,
    allow_private: bool = False,
    on_progress: ProgressCallback | None = None,
    on_start: Callable[[Started], None] | None = None,
    resume: Resume | None = None,
    keep_partial: bool = False,
    min_free_bytes: int = 0,
    max_file_bytes: int | None = None,
    owner_of: OwnerLookup | None = None,
    session: requests.Session | None = None,
    clock: Callable[[], float] = time.monotonic,
    low_speed_limit: int = LOW_SPEED_LIMIT,
) -> Downloaded:
    """Download `url` into `download_dir/target.directory`; raise a DownloadError on failure.

    `keep_partial`: when the download fails in a way another attempt may cure, keep the
    partial file for `resume` (if the server gave a validator). `owner_of` tells which URL
    wrote an existing file, so a download replaces its own earlier file and no other.
    """
    owner = target.owner or str(uuid.uuid4())
    own_session = session is None
    session = session or new_session(allow_private)
    try:
        offset, response, total = _open(session, url, resume, owner, request_timeout)
        with response:
            if offset:
                assert resume is not None
                final = resume.final
            else:
                final = choose_path(target, url, response, download_dir)
                if _is_html_page(target, url, response):
                    raise NotAFile()
                if total is not None and (copy := _complete_copy(final, total, url, owner_of)) is not None:
                    if on_progress is not None:
                        on_progress(total, total)
                    return Downloaded(copy, total, skipped=True)
            validator = resume.validator if offset and resume is not None else validator_of(response)
            if max_file_bytes is not None and total is not None and total > max_file_bytes:
                raise FileTooLarge(total, max_file_bytes)
            check_space(final.parent, (total - offset if total is not None else 0) + min_free_bytes)
            created_dir = first_missing_dir(download_dir, final.parent)
            final.parent.mkdir(parents=True, exist_ok=True)
            if on_start is not None:
                on_start(Started(final, validator, created_dir))
            stream = Stream(response, part_path(final, owner), offset, total, request_timeout, min_free_bytes)
            stream.max_file_bytes = max_file_bytes
            stream.keep_on_failure = keep_partial and validator is not None
            size = stream.run(on_progress, clock, low_speed_limit)

        def replaces(path: Path) -> bool:
            return (target.replace and path == final) or (owner_of is not None and owner_of(path) == url)

        saved = claim(stream.partial, final, replaces)
        fsync_dir(saved.parent)
        return Downloaded(saved, size, skipped=False, resumed_from=offset)
    finally:
        if own_session:
            session.close()


def _open(
    session: requests.Session,
    url: str,
    resume: Resume | None,
    owner: str,
    request_timeout: float,
) -> tuple[int, requests.Response, int | None]:
    """(bytes kept from the earlier attempt, the response, the file's full size if known)."""
    partial = part_path(resume.final, owner) if resume is not None else None
    validator = resume.validator if resume is not None else None
    offset = (regular_size(partial) or 0) if validator and partial is not None else 0
    if offset and validator and partial is not None:
        headers = {"Range": f"bytes={offset}-", "If-Range": validator}
        response = open_response(session, url, request_timeout=request_timeout, headers=headers)
        full_size = _resumed_at(response, offset, validator)
        if full_size is not None:
            return offset, response, full_size
        if response.status_code not in (RANGE_NOT_SATISFIABLE, 206):
            partial.unlink()
            return 0, response, content_length(response)  # a 200: the whole file again, use it
        response.close()  # a 416 or a 206 from elsewhere in the file: ask again for all of it
    if partial is not None:
        partial.unlink(missing_ok=True)
    response = open_response(session, url, request_timeout=request_timeout)
    return 0, response, content_length(response)
