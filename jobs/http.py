"""One HTTP request as downloads need it: checked hops, bounded waits, errors a user can read.

- connect timeout and idle (read) timeout: `request_timeout` each, enforced by the socket;
- low-speed abort: fewer than `LOW_SPEED_LIMIT` bytes/s over a whole `request_timeout`
  window fails as a timeout (curl's --speed-limit/--speed-time), so a server that trickles
  a byte at a time cannot eat the job's budget;
- redirects followed by hand, so every hop passes the URL and address checks;
- library errors mapped to `jobs.errors` by their type (never by message text).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Mapping
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from jobs import messages
from jobs.errors import ConnectionFailed, DownloadTimeout, HTTPStatusError, InvalidRequest
from jobs.urllib3_compat import GlobalOnlyAdapter
from jobs.urls import check_url

LOW_SPEED_LIMIT = 1024  # bytes per second, averaged over one request-timeout window
MAX_REDIRECTS = 10
USER_AGENT = "download-queue/0.1"
RANGE_NOT_SATISFIABLE = 416


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


def content_length(response: requests.Response) -> int | None:
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


def wraps(error: BaseException, *types: type[BaseException]) -> bool:
    return any(isinstance(cause, types) for cause in _causes(error))


def connection_message(url: str, error: BaseException) -> str:
    """The one line for a failed connection, chosen by the type of what went wrong."""
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    if wraps(error, ConnectionRefusedError):
        return messages.connection_refused(where)
    if wraps(error, urllib3.exceptions.NameResolutionError, socket.gaierror):
        return messages.host_not_found(where)
    if wraps(error, ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
        return messages.connection_reset(where)
    if wraps(error, ssl.SSLError, urllib3.exceptions.SSLError, requests.exceptions.SSLError):
        return messages.tls_error(where)
    return messages.connection_failed(where)


def new_session(allow_private: bool) -> requests.Session:
    """A session for downloads; unless `allow_private`, every socket it opens must be connected
    to a globally routable address (checked on the socket itself, on every hop)."""
    session = requests.Session()
    if not allow_private:
        adapter = GlobalOnlyAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


def open_response(
    session: requests.Session,
    url: str,
    *,
    request_timeout: float,
    headers: Mapping[str, str] | None = None,
) -> requests.Response:
    """GET with streaming, following redirects by hand so every hop's URL is checked; `session`
    comes from `new_session`, which checks the address each hop connects to.

    With a `Range` among `headers`, a 416 is returned too: the caller decides what it means.
    """
    sent = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT, **(headers or {})}
    for _ in range(MAX_REDIRECTS + 1):
        url = check_url(url)
        try:
            response = session.get(
                url,
                stream=True,
                allow_redirects=False,
                timeout=(request_timeout, request_timeout),
                headers=sent,
            )
        except (TimeoutError, requests.exceptions.Timeout) as error:
            raise DownloadTimeout(request_timeout) from error
        except requests.exceptions.ConnectionError as error:
            if wraps(error, urllib3.exceptions.ReadTimeoutError):
                raise DownloadTimeout(request_timeout) from error
            raise ConnectionFailed(connection_message(url, error)) from error
        if response.is_redirect and "Location" in response.headers:
            location = urljoin(url, response.headers["Location"])
            response.close()
            url = location
            continue
        if response.status_code == RANGE_NOT_SATISFIABLE and "Range" in sent:
            return response
        if response.status_code >= 400:
            retry_after = _retry_after(response)
            response.close()
            raise HTTPStatusError(response.status_code, retry_after)
        return response
    raise InvalidRequest(messages.too_many_redirects(MAX_REDIRECTS))
