"""Every line a user reads about why a job ended: built here and nowhere else.

These are the job's `error` (`bin/jobs`, the dashboard, the API) and the history's event
messages; the texts are the contract in DESIGN.md ("States and messages"), numbers as
configured. Input errors (a bad URL, `--dest`, a setting) are worded by the check that
raises them, since they are not a job's state.
"""

from __future__ import annotations

import math
from http import HTTPStatus

DELETED = "Deleted by user"
CANCELLED = "Cancelled by user during processing"
RECOVERED = "Recovered from server crash while processing"
DIED = "Download process died unexpectedly"
FAILED = "Failed"  # an exception that says nothing at all


def seconds(value: float) -> str:
    """How a duration reads in messages: `30` for 30.0, `0.5` for 0.5."""
    return f"{value:g}"


def download_timeout(request_timeout: float) -> str:
    return f"Download timeout ({seconds(request_timeout)}s)"


def processing_timeout(job_timeout: float) -> str:
    return f"Processing timeout ({seconds(job_timeout)}s exceeded)"


def shutdown(grace: float) -> str:
    return f"Interrupted by shutdown ({seconds(grace)}s grace exceeded)"


def http_status(status: int) -> str:
    """`HTTP 404 Not Found`: the standard phrase whatever the server sent with the code, and the
    code alone for one without a standard phrase (a server's own phrase is never shown: it is
    the server's text, HTML included, in our dashboard and logs)."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def connection_refused(where: str) -> str:
    return f"Connection refused ({where})"


def host_not_found(where: str) -> str:
    return f"Host not found ({where})"


def connection_reset(where: str) -> str:
    return f"Connection reset ({where})"


def tls_error(where: str) -> str:
    return f"TLS error ({where})"


def connection_failed(where: str) -> str:
    return f"Connection failed ({where})"


def incomplete(done: int, total: int) -> str:
    return f"Incomplete download: got {done} of {total} bytes"


def oversized(total: int) -> str:
    return f"Server sent more than the {total} bytes it announced"


def disk_full(free_bytes: int, needed_bytes: int) -> str:
    """MB are 1,000,000 bytes, whole: free space rounded down, what is needed rounded up."""
    free = free_bytes // 1_000_000
    needed = -(-needed_bytes // 1_000_000)
    return f"Disk full ({free} MB free, {needed} MB needed)"


def file_too_large(size_bytes: int | None, limit_bytes: int) -> str:
    """DQ_MAX_FILE_MB's refusal; `size_bytes` None for a body without a length that grew past it."""
    limit = f"{limit_bytes / 1_000_000:g}"
    if size_bytes is None:
        return f"File too large (over the {limit} MB limit)"
    return f"File too large ({-(-size_bytes // 1_000_000)} MB, limit {limit} MB)"


NOT_A_FILE = "Server sent an HTML page, not a file"


def held_back(where: str) -> str:
    return f"Held back: {where} asked clients to wait"


def after_attempts(error: str, attempts: int) -> str:
    """A failed job's error as `bin/jobs` shows it once more than one attempt was made."""
    return f"{error} (after {attempts} attempts)" if attempts > 1 else error


def retry_line(next_attempt: int, max_attempts: int, wait_seconds: float | None, last_error: str | None) -> str:
    """`retry 2/4 in 1s: HTTP 503 Service Unavailable` (no `in` once the wait is over)."""
    when = f" in {math.ceil(wait_seconds)}s" if wait_seconds is not None and wait_seconds > 0 else ""
    return f"retry {next_attempt}/{max_attempts}{when}" + (f": {last_error}" if last_error else "")


def too_many_redirects(limit: int) -> str:
    return f"too many redirects (more than {limit})"


def private_address(host: str, address: object) -> str:
    return f"refused: {host} resolves to a private address ({address}); set DQ_ALLOW_PRIVATE_NETWORKS=1 to allow it"


# Where the workers' setting is made: what the enqueue-time refusal tells the user to change.
PRIVATE_NETWORKS_WHERE = (
    "set DQ_ALLOW_PRIVATE_NETWORKS=1 in bin/up's environment, supervisord's environment= or the systemd env file"
)


PROXY_UNCHECKED = (
    "refused: through a proxy the server's address cannot be checked; unset the proxy, or set "
    "DQ_ALLOW_PRIVATE_NETWORKS=1 if the proxy refuses private addresses itself"
)


def private_network_refused(host: str, address: object, *, literal: bool, published: bool) -> str:
    """A URL refused at enqueue because its host is private and the workers would refuse it.

    `published`: judged by the running supervisors' setting (else by the enqueuing command's own).
    """
    if literal:
        what = f"{host} is a private address ({address})"
    else:
        what = f"{host} resolves only to private addresses ({address})"
    if published:
        return f"refused: {what}; the workers do not allow private networks: {PRIVATE_NETWORKS_WHERE}, then restart"
    return f"refused: {what}; private networks are not allowed: {PRIVATE_NETWORKS_WHERE}"


def function_not_allowed(name: str) -> str:
    return f"Refused: job function not allowed ({name})"


def unexpected(error: BaseException) -> str:
    """An exception no download error covers: its type and the first line of its text."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


# --- albums and playlists ----------------------------------------------------------------
def tracks_failed(failed: int, total: int) -> str:
    return f"{failed} of {total} tracks failed"


def playlist_entry(line: int, error: str) -> str:
    """A playlist entry that could not become a track, as its failed track reads."""
    return f"line {line}: {error}"


def playlist_unfetchable(reason: object) -> str:
    return f"Playlist could not be fetched: {reason}"


def playlist_is_web_page(content_type: str) -> str:
    return f"Not an M3U playlist: the server sent a web page ({content_type})"


PLAYLIST_IS_MARKUP = "Not an M3U playlist: the server sent markup"
PLAYLIST_EMPTY = "Playlist has no usable entry: it lists no tracks"


def playlist_too_large(limit_bytes: int) -> str:
    return f"Playlist is larger than {limit_bytes // 1_000_000} MB"


def playlist_too_many(entries: int, limit: int) -> str:
    return f"Playlist has {entries} entries, more than {limit}"


def playlist_unusable(refused: int, first_line: int, first_error: str | None) -> str:
    return f"Playlist has no usable entry: {refused} refused, the first at line {first_line}: {first_error}"


def queue_full(queued: int, limit: int) -> str:
    return f"Queue full ({queued} queued, limit {limit})"


def queue_long(queued: int, limit: int) -> str:
    return f"Queue is long ({queued} queued, warning above {limit})"


# --- health (`bin/health`, `/health`) ------------------------------------------------------
def health_redis_ok(url: str) -> str:
    return f"Redis answers at {url}"


def health_redis_down(url: str, error: object) -> str:
    return f"Redis is not reachable at {url} ({error})"


HEALTH_NOT_CHECKED = "not checked: Redis is not reachable"
HEALTH_NO_HEARTBEAT = "no supervisor heartbeat: no supervisor runs (start bin/up or bin/supervise)"


def health_heartbeat(ages: dict[str, float | None], limit: float) -> str:
    """Each host's heartbeat age, e.g. `supervisor heartbeat 0.4s ago (web1); none from db2 (limit 6s)`."""
    seen = [f"{age:.1f}s ago ({host})" for host, age in sorted(ages.items()) if age is not None]
    missing = [host for host, age in sorted(ages.items()) if age is None]
    text = "supervisor heartbeat " + (", ".join(seen) if seen else "missing")
    if missing:
        text += f"; none from {', '.join(missing)}"
    return f"{text} (limit {limit:g}s)"


def health_workers(live: int, expected: int) -> str:
    return f"{live} of {expected} workers live"


def health_queue(queued: int, limit: int) -> str:
    return f"{queued} queued (warning above {limit})"
