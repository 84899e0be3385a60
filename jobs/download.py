"""The HTTP download engine: one URL to one file, with the four limits downloaders need.

- connect timeout and idle (read) timeout: `request_timeout` each, enforced by the socket;
- low-speed abort: fewer than `LOW_SPEED_LIMIT` bytes/s over a whole `request_timeout`
  window fails as a timeout (curl's --speed-limit/--speed-time), so a server that trickles
  a byte at a time cannot eat the job's budget;
- total deadline: RQ's job timeout, which this module never catches.

Bytes go to `<final>.part`, are fsynced, checked against Content-Length and only then
renamed into place: a file at its final path is always complete.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from jobs import messages
from jobs.errors import (
    ConnectionFailed,
    DownloadTimeout,
    HTTPStatusError,
    IncompleteBody,
    InvalidRequest,
)
from jobs.paths import (
    check_url,
    confined,
    filename_from_content_disposition,
    filename_from_url,
    part_path,
    refuse_private_address,
    sanitize_filename,
)

CHUNK_BYTES = 1024 * 1024
LOW_SPEED_LIMIT = 1024  # bytes per second, averaged over one request-timeout window
PROGRESS_INTERVAL = 1.0  # seconds between progress reports
MAX_REDIRECTS = 10
USER_AGENT = "download-queue/0.1"

ProgressCallback = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    skipped: bool  # the complete file was already there


@dataclass(frozen=True)
class Target:
    """Where a download goes: a folder and either an exact name or a stem to add an extension to."""

    directory: str = ""  # relative to the download dir
    name: str | None = None
    stem: str | None = None


class StallGuard:
    """Raises DownloadTimeout when a window of `window` seconds saw fewer than limit*window bytes."""

    def __init__(self, window: float, clock: Callable[[], float], limit: int) -> None:
        self.window = window
        self.clock = clock
        self.minimum_bytes = limit * window
        self.window_start = clock()
        self.window_bytes = 0

    def add(self, count: int) -> None:
        self.window_bytes += count
        now = self.clock()
        if now - self.window_start >= self.window:
            if self.window_bytes < self.minimum_bytes:
                raise DownloadTimeout(self.window)
            self.window_start = now
            self.window_bytes = 0


def _content_length(response: requests.Response) -> int | None:
    raw = response.headers.get("Content-Length")
    if raw is None or response.headers.get("Content-Encoding", "identity") != "identity":
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


def _retry_after(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def _causes(error: BaseException) -> list[BaseException]:
    """The error and everything it wraps: requests wraps urllib3, which wraps the socket's error."""
    found: list[BaseException] = []
    pending = [error]
    while pending:
        current = pending.pop()
        if current in found:
            continue
        found.append(current)
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        for linked in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(linked, BaseException):
                pending.append(linked)
    return found


def _wraps(error: BaseException, *types: type[BaseException]) -> bool:
    return any(isinstance(cause, types) for cause in _causes(error))


def _connection_message(url: str, error: BaseException) -> str:
    """The one line for a failed connection, chosen by the type of what went wrong."""
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    if _wraps(error, ConnectionRefusedError):
        return messages.connection_refused(where)
    if _wraps(error, urllib3.exceptions.NameResolutionError, socket.gaierror):
        return messages.host_not_found(where)
    if _wraps(error, ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        return messages.connection_reset(where)
    if _wraps(error, ssl.SSLError, urllib3.exceptions.SSLError, requests.exceptions.SSLError):
        return messages.tls_error(where)
    return messages.connection_failed(where)


def open_response(
    session: requests.Session, url: str, *, request_timeout: float, allow_private: bool
) -> requests.Response:
    """GET with streaming, following redirects by hand so every hop is checked."""
    for _ in range(MAX_REDIRECTS + 1):
        url = check_url(url)
        if not allow_private:
            refuse_private_address(url)
        try:
            response = session.get(
                url,
                stream=True,
                allow_redirects=False,
                timeout=(request_timeout, request_timeout),
                headers={"Accept-Encoding": "identity", "User-Agent": USER_AGENT},
            )
        except (TimeoutError, requests.exceptions.Timeout) as error:
            raise DownloadTimeout(request_timeout) from error
        except requests.exceptions.ConnectionError as error:
            if _wraps(error, urllib3.exceptions.ReadTimeoutError):
                raise DownloadTimeout(request_timeout) from error
            raise ConnectionFailed(_connection_message(url, error)) from error
        if response.is_redirect and "Location" in response.headers:
            location = urljoin(url, response.headers["Location"])
            response.close()
            url = location
            continue
        if response.status_code >= 400:
            retry_after = _retry_after(response)
            response.close()
            raise HTTPStatusError(response.status_code, response.reason or "", retry_after)
        return response
    raise InvalidRequest(messages.too_many_redirects(MAX_REDIRECTS))


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
    return confined(directory, filename)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def download(
    url: str,
    target: Target,
    *,
    download_dir: Path,
    request_timeout: float,
    allow_private: bool = False,
    on_progress: ProgressCallback | None = None,
    on_path: Callable[[Path], None] | None = None,
    session: requests.Session | None = None,
    clock: Callable[[], float] = time.monotonic,
    low_speed_limit: int = LOW_SPEED_LIMIT,
) -> Downloaded:
    """Download `url` into `download_dir/target.directory`; raise a DownloadError on failure.

    `on_path` hears the final path as soon as it is known (before any byte is written),
    so a canceller can find the `.part` file.
    """
    own_session = session is None
    session = session or requests.Session()
    try:
        response = open_response(session, url, request_timeout=request_timeout, allow_private=allow_private)
        with response:
            final = choose_path(target, url, response, download_dir)
            if on_path is not None:
                on_path(final)
            total = _content_length(response)
            if total is not None and final.is_file() and final.stat().st_size == total:
                if on_progress is not None:
                    on_progress(total, total)
                return Downloaded(final, total, skipped=True)
            final.parent.mkdir(parents=True, exist_ok=True)
            size = _stream_to_part(response, final, total, request_timeout, on_progress, clock, low_speed_limit)
        return Downloaded(final, size, skipped=False)
    finally:
        if own_session:
            session.close()


def _stream_to_part(
    response: requests.Response,
    final: Path,
    total: int | None,
    request_timeout: float,
    on_progress: ProgressCallback | None,
    clock: Callable[[], float],
    low_speed_limit: int,
) -> int:
    partial = part_path(final)
    done = 0
    finished = False
    guard = StallGuard(request_timeout, clock, low_speed_limit)
    last_report = clock()
    if on_progress is not None:
        on_progress(0, total)
    try:
        with open(partial, "wb") as out:
            while True:
                try:
                    # read1 returns whatever has arrived, so a trickle still reaches the guard.
                    chunk = response.raw.read1(CHUNK_BYTES, decode_content=False)
                except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as error:
                    raise DownloadTimeout(request_timeout) from error
                except urllib3.exceptions.ProtocolError as error:
                    if total is not None and _wraps(error, http.client.IncompleteRead):
                        raise IncompleteBody(messages.incomplete(done, total)) from error
                    raise ConnectionFailed(_connection_message(response.url, error)) from error
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if total is not None and done > total:
                    raise IncompleteBody(messages.oversized(total))
                guard.add(len(chunk))
                now = clock()
                if on_progress is not None and now - last_report >= PROGRESS_INTERVAL:
                    last_report = now
                    on_progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and done != total:
            raise IncompleteBody(messages.incomplete(done, total))
        os.replace(partial, final)
        _fsync_dir(final.parent)
        finished = True
        if on_progress is not None:
            on_progress(done, total if total is not None else done)
        return done
    finally:
        # Also on RQ's JobTimeoutException or a stop: no .part outlives its download.
        if not finished:
            partial.unlink(missing_ok=True)
