"""A real HTTP/1.1 server on 127.0.0.1 that misbehaves on request; the URL path picks how.

Used by the test suite to drive the download engine through slow, hung, truncated and reset
transfers over real sockets, and to count what the clients actually did (concurrency, early
hang-ups). Stdlib only, so it runs wherever the tests run.

Paths (``<n>`` is a byte count; any extra trailing segments are ignored, so the last segment
can name a file, e.g. ``/bytes/100/song.flac``):

- ``/bytes/<n>``: 200 with ``pattern_bytes(n)``. Query: ``delay=<s>`` before the headers,
  ``rate=<bytes/s>`` throttles the body, ``cd=<filename>`` adds
  ``Content-Disposition: attachment; filename="<filename>"`` (``cdraw=<value>`` sets the
  whole header value instead), ``nolength=1`` omits Content-Length (body ends at close).
- ``/slow/<n>?seconds=<s>``: n bytes spread evenly over s seconds (default 5).
- ``/hang``: reads the request, then sends nothing.
- ``/hang-body/<n>``: Content-Length n, n//2 bytes, then nothing.
- ``/trickle/<n>?interval=<s>``: Content-Length n, one byte every interval (default 0.5).
- ``/reset``: TCP RST before any response.
- ``/reset-body/<n>``: Content-Length n, n//2 bytes, then RST.
- ``/truncate/<n>``: Content-Length n, n//2 bytes, then a clean close (FIN).
- ``/status/<code>``: that status with a short text body. Query: ``retry_after=<v>`` adds
  Retry-After, ``location=<url>`` adds Location (for redirect tests).
- ``/files/<name>``: content registered with ``FaultServer.add_file``.
- ``/flaky/<k>/<n>``: the first k requests for this exact path and query fail (``status=<code>``,
  default 503, with ``retry_after=<v>`` if given; ``status=reset`` resets the connection), then
  it serves as ``/bytes/<n>``.
- ``/cut/<b>/<n>``: like ``/bytes/<n>``, but a response that starts at byte 0 stops after b
  bytes with a clean close (a short body); a ``Range`` request is answered from where it asks.
- ``/html``: a 200 web page (``Content-Type: text/html``), as login and error pages are.

``/bytes``, ``/flaky`` and ``/cut`` bodies carry an ``ETag`` and a ``Last-Modified`` and honour
``Range: bytes=N-`` with ``If-Range`` (206 with ``Content-Range``; a validator that does not
match gets the whole body, 200). Query: ``ignore_range=1`` always answers 200,
``range_status=416`` answers a Range request with 416, ``validators=0`` sends neither validator,
``etag=0`` only Last-Modified, ``ctype=<type>`` sets Content-Type.
``FaultServer.request_log`` records every request's path, headers, body bytes sent and arrival.

HEAD gets the same headers as GET and no body (``/hang`` and ``/reset`` behave as for GET).
Every response carries ``Connection: close``.
"""

from __future__ import annotations

import hashlib
import http
import select
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FaultServer", "pattern_bytes"]

# How often hanging and paced handlers look for a client that went away: small enough that a
# closed connection is noticed within ~100 ms, large enough to cost nothing.
POLL_SECONDS = 0.05
# Largest single write; keeps memory flat for big bodies and paced pieces small.
MAX_PIECE = 64 * 1024

# The pattern is built from 4 KiB blocks: a fixed pseudo-random body (so any shift that is not
# a multiple of the block size shows up) led by an 8-byte tag derived from the block index (so
# a dropped or duplicated whole block shows up too). Nothing in it is periodic or all zeros,
# which a preallocated or sparse file would be.
_BLOCK = 4096
_TAG = 8
_NOISE = b"".join(hashlib.sha256(b"faultserver-pattern-%d" % i).digest() for i in range(_BLOCK // 32))
_BLOCK_BODY = _NOISE[_TAG:]


def _block(index: int) -> bytes:
    tag = ((index * 0x9E3779B97F4A7C15) ^ 0xA5C3_5A3C_96E1_1E69) & 0xFFFF_FFFF_FFFF_FFFF
    return tag.to_bytes(_TAG, "big") + _BLOCK_BODY


def _pattern_range(start: int, end: int) -> bytes:
    if end <= start:
        return b""
    first, last = start // _BLOCK, (end - 1) // _BLOCK
    joined = b"".join(_block(i) for i in range(first, last + 1))
    offset = start - first * _BLOCK
    return joined[offset : offset + (end - start)]


def pattern_bytes(n: int) -> bytes:
    """The exact n bytes the server sends for a body of length n (every path uses this)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return _pattern_range(0, n)


class _BadRequest(Exception):
    pass


@dataclass
class RequestRecord:
    """One request as the server saw it: `at` is time.monotonic() when its headers arrived."""

    path: str
    query: str
    headers: dict[str, str]
    at: float
    bytes_sent: int = 0  # body bytes written to the socket
    status: int = 0


LAST_MODIFIED = "Wed, 21 Oct 2026 07:28:00 GMT"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Tests open many connections at once; the default backlog of 5 would make some of them
    # wait in SYN retries, which looks like a slow server.
    request_queue_size = 128

    def __init__(self, fault: FaultServer) -> None:
        self.fault = fault
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the FQDN, which can stall on a machine without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-request are the point of this server, and stop() tears
        # connections down on purpose; only real handler bugs deserve a traceback.
        if isinstance(sys.exception(), ConnectionError | TimeoutError) or self.fault.stopping:
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultserver"
    # Header and body go out in separate small writes; Nagle plus delayed ACK would add
    # ~40 ms stalls that look like server slowness.
    disable_nagle_algorithm = True

    _path: str = ""
    _released: bool = True
    _completed: bool = False
    _disconnected: bool = False

    @property
    def fault(self) -> FaultServer:
        return cast(_HTTPServer, self.server).fault

    def setup(self) -> None:
        super().setup()
        self.fault._register_connection(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.fault._unregister_connection(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- request entry ----------------------------------------------------------------------

    def do_GET(self) -> None:
        # One request per connection keeps the counters and fault timing unambiguous.
        self.close_connection = True
        parts = urlsplit(self.path)
        self._path = parts.path
        self._released = False
        self._completed = False
        self._disconnected = False
        self._record = RequestRecord(self._path, parts.query, dict(self.headers.items()), time.monotonic())
        self.fault._begin(self._path, self._record)
        try:
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            try:
                self._dispatch(self._path, query)
            except _BadRequest as error:
                self._respond(400, f"400 Bad Request: {error}\n".encode())
        finally:
            self._release()

    do_HEAD = do_GET

    def _dispatch(self, path: str, query: dict[str, str]) -> None:
        segments = path.split("/")[1:]
        kind, args = segments[0], segments[1:]
        if kind == "bytes":
            self._bytes(_count(args), query)
        elif kind == "slow":
            n = _count(args)
            self._paced_body(n, _number(query, "seconds", 5.0))
        elif kind == "hang":
            self._hang()
        elif kind == "hang-body":
            n = _count(args)
            if self._send_headers(200, self._body_headers(n)) and self._send_range(0, n // 2):
                self._hang()
        elif kind == "trickle":
            n = _count(args)
            interval = _number(query, "interval", 0.5)
            self._paced_body(n, n * interval, piece=1)
        elif kind == "reset":
            self._reset()
        elif kind == "reset-body":
            n = _count(args)
            if self._send_headers(200, self._body_headers(n)) and self._send_range(0, n // 2):
                self._reset()
        elif kind == "truncate":
            n = _count(args)
            if self._send_headers(200, self._body_headers(n)):
                # Returning closes the connection with a FIN: a short body, not an error.
                self._send_range(0, n // 2)
        elif kind == "status":
            self._status(args, query)
        elif kind == "files":
            self._file(args)
        elif kind == "flaky":
            self._flaky(args, query)
        elif kind == "cut":
            cut_at = _count(args)
            self._bytes(_count(args[1:]), query, cut_at=cut_at)
        elif kind == "html":
            page = b"<!DOCTYPE html><html><body><form>Sign in</form></body></html>\n"
            self._respond(200, page, content_type="text/html; charset=utf-8")
        else:
            self._respond(404, b"404 Not Found\n")

    # -- behaviours -------------------------------------------------------------------------

    def _bytes(self, n: int, query: dict[str, str], *, cut_at: int | None = None) -> None:
        delay = _number(query, "delay", 0.0)
        rate = _number(query, "rate", 0.0)
        if "rate" in query and rate <= 0:
            raise _BadRequest("rate must be > 0")
        nolength = query.get("nolength") in ("1", "true", "yes")
        headers = self._body_headers(None if nolength else n, query.get("ctype"))
        if "cd" in query:
            headers.append(("Content-Disposition", f'attachment; filename="{query["cd"]}"'))
        if "cdraw" in query:
            headers.append(("Content-Disposition", query["cdraw"]))
        etag = f'"pattern-{n}"'
        if query.get("validators") != "0":
            headers += [("Last-Modified", LAST_MODIFIED), ("Accept-Ranges", "bytes")]
            if query.get("etag") != "0":
                headers.append(("ETag", etag))
        if delay and not self._sleep(delay):
            return
        start = self._range_start(n, query, (etag, LAST_MODIFIED))
        if start == -1:
            self._respond(416, b"416 Range Not Satisfiable\n", extra=[("Content-Range", f"bytes */{n}")])
            return
        code = 200
        if start:
            code = 206
            headers = [(k, v) for k, v in headers if k != "Content-Length"]
            headers += [("Content-Length", str(n - start)), ("Content-Range", f"bytes {start}-{n - 1}/{n}")]
        end = n if cut_at is None or start else min(cut_at, n)
        seconds = (end - start) / rate if rate else 0.0
        if self._send_headers(code, headers, last=end == start):
            # Returning after a cut closes the connection with a FIN: a short body.
            self._send_range(start, end, last=True, seconds=seconds)

    def _range_start(self, n: int, query: dict[str, str], validators: tuple[str, str]) -> int:
        """Where a `Range: bytes=N-` request starts (0: the whole body; -1: answer 416)."""
        wanted = self.headers.get("Range", "")
        if not wanted.startswith("bytes=") or query.get("ignore_range") == "1":
            return 0
        if query.get("range_status") == "416":
            return -1
        if_range = self.headers.get("If-Range")
        if if_range is not None and (query.get("validators") == "0" or if_range not in validators):
            return 0  # the file changed (or we never said what it was): all of it again
        first, _dash, last = wanted.removeprefix("bytes=").partition("-")
        if not first.isdigit() or last:
            return 0  # only the open-ended form the downloader sends
        start = int(first)
        return start if start < n else -1

    def _flaky(self, args: list[str], query: dict[str, str]) -> None:
        failures = _count(args)
        if self.fault._flaky_hit(self._path + "?" + self._record.query) <= failures:
            how = query.get("status", "503")
            if how == "reset":
                self._reset()
                return
            extra = [("Retry-After", query["retry_after"])] if "retry_after" in query else []
            code = int(how) if how.isdigit() else 503
            self._respond(code, f"{code} {_phrase(code)}\n".encode(), extra=extra)
            return
        self._bytes(_count(args[1:]), query)

    def _paced_body(
        self,
        n: int,
        seconds: float,
        *,
        piece: int | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        if self._send_headers(200, headers or self._body_headers(n), last=n == 0):
            self._send_range(0, n, last=True, seconds=seconds, piece=piece)

    def _status(self, args: list[str], query: dict[str, str]) -> None:
        try:
            code = int(args[0]) if args else -1
        except ValueError:
            code = -1
        if not 200 <= code <= 599:
            raise _BadRequest("status code must be 200..599")
        extra: list[tuple[str, str]] = []
        if "retry_after" in query:
            extra.append(("Retry-After", query["retry_after"]))
        if "location" in query:
            extra.append(("Location", query["location"]))
        self._respond(code, f"{code} {_phrase(code)}\n".encode(), extra=extra)

    def _file(self, args: list[str]) -> None:
        found = self.fault._find_file([unquote(a) for a in args])
        if found is None:
            self._respond(404, b"404 Not Found (no such file registered)\n")
        else:
            body, content_type = found
            self._respond(200, body, content_type=content_type)

    def _hang(self) -> None:
        while self._sleep(3600.0):
            pass

    def _reset(self) -> None:
        # Release first: the client may retry the moment it sees the RST, and that retry
        # must not overlap this request in max_active.
        self._release()
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # rfile holds a reference that would keep the descriptor (and the RST) alive.
            self.rfile.close()
            sock.close()
        except OSError:
            pass

    # -- plumbing ---------------------------------------------------------------------------

    def _body_headers(self, length: int | None, content_type: str | None = None) -> list[tuple[str, str]]:
        headers = [("Content-Type", content_type or "application/octet-stream")]
        if length is not None:
            headers.append(("Content-Length", str(length)))
        return headers

    def _respond(
        self,
        code: int,
        body: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        if code in (204, 304):
            body = b""
        headers = [("Content-Type", content_type), *extra]
        if code != 204:
            headers.append(("Content-Length", str(len(body))))
        only_headers = not body or self.command == "HEAD"
        if self._send_headers(code, headers, last=only_headers) and not only_headers:
            self._write(body, last=True)

    def _send_headers(self, code: int, headers: list[tuple[str, str]], *, last: bool = False) -> bool:
        lines = [
            f"HTTP/1.1 {code} {_phrase(code)}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            "Connection: close",
        ]
        for name, value in headers:
            if "\r" in value or "\n" in value:
                raise _BadRequest(f"line break in {name} header")
            lines.append(f"{name}: {value}")
        # UTF-8 so a test can send a non-ASCII filename; for ASCII it is plain HTTP.
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
        return self._write(data, last=last or self.command == "HEAD")

    def _send_range(
        self,
        start: int,
        end: int,
        *,
        last: bool = False,
        seconds: float = 0.0,
        piece: int | None = None,
    ) -> bool:
        """Send pattern bytes [start, end), spread over `seconds` if given; False to stop there."""
        if self.command == "HEAD":
            # Headers were the whole response; the body's fault (hang, reset) does not apply.
            return False
        if end <= start:
            return True
        total = end - start
        if piece is None:
            # Pieces about POLL_SECONDS apart, so pacing is smooth and disconnects show up fast.
            piece = total if seconds <= 0 else int(total * POLL_SECONDS / seconds) + 1
        piece = max(1, min(piece, MAX_PIECE))
        t0 = time.monotonic()
        offset = start
        while offset < end:
            stop = min(offset + piece, end)
            if seconds > 0:
                # Piece ends land on the straight line from t0 to t0 + seconds, so the last
                # byte leaves at t0 + seconds and drift does not accumulate.
                due = t0 + seconds * (stop - start) / total
                if not self._sleep(due - time.monotonic()):
                    return False
            if not self._write(_pattern_range(offset, stop), last=last and stop == end):
                return False
            self._record.bytes_sent += stop - offset
            offset = stop
        return True

    def _write(self, data: bytes, *, last: bool = False) -> bool:
        """Write everything or note why not; `last` marks the write that completes the response."""
        if last and not self._completed:
            # Book the request as done before the final bytes leave: once the client holds
            # the whole response it may start another request at once, and max_active must
            # not count the two as overlapping, nor completed lag behind what it saw.
            self._completed = True
            self.fault._complete(self._path)
            self._release()
        try:
            self.wfile.write(data)
            return True
        except OSError as error:
            if self._completed:
                self._completed = False
                self.fault._uncomplete(self._path)
            if isinstance(error, ConnectionError) and not self.fault.stopping:
                self._note_disconnect()
            elif not self.fault.stopping and not isinstance(error, TimeoutError):
                raise
            return False

    def _sleep(self, seconds: float) -> bool:
        """Wait, watching the client; False if it left or the server is stopping."""
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            if self._peer_gone():
                self._note_disconnect()
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if self.fault._stop_event.wait(min(POLL_SECONDS, remaining)):
                return False

    def _peer_gone(self) -> bool:
        # A readable socket means EOF, a reset, or stray bytes (a pipelined request we will
        # never answer); drain the bytes so a later EOF is not hidden behind them. This
        # treats a client's half-close (shutdown SHUT_WR) as leaving, which HTTP clients do
        # not do while waiting for a response.
        poller = select.poll()
        try:
            poller.register(self.connection, select.POLLIN | select.POLLERR | select.POLLHUP)
            if not poller.poll(0):
                return False
            return self.connection.recv(65536) == b""
        except (ConnectionError, ValueError):
            return True
        except OSError:
            return self.fault.stopping

    def _note_disconnect(self) -> None:
        if not self._disconnected and not self.fault.stopping:
            self._disconnected = True
            self.fault._disconnect(self._path)

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self.fault._end()


def _count(args: list[str]) -> int:
    try:
        n = int(args[0]) if args else -1
    except ValueError:
        n = -1
    if n < 0:
        raise _BadRequest("byte count must be an integer >= 0")
    return n


def _number(query: dict[str, str], name: str, default: float) -> float:
    if name not in query:
        return default
    try:
        value = float(query[name])
    except ValueError:
        raise _BadRequest(f"{name} must be a number") from None
    if not value >= 0 or value == float("inf"):
        raise _BadRequest(f"{name} must be a finite number >= 0")
    return value


def _phrase(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Status"


class FaultServer:
    """Fault-injecting HTTP/1.1 server on 127.0.0.1; see the module docstring for paths.

    Counters are snapshots taken under a lock. A request is "active" from the moment its
    headers are parsed until its handler returns, or until just before its final write if
    that comes first, so that a client which already has a complete response never sees its
    request still counted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._files: dict[str, tuple[bytes, str]] = {}
        self._active = 0
        self._max_active = 0
        self._requests: list[str] = []
        self._completed: list[str] = []
        self._disconnects: list[tuple[str, float]] = []
        self._log: list[RequestRecord] = []
        self._flaky_hits: dict[str, int] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FaultServer:
        if self._httpd is not None:
            raise RuntimeError("FaultServer already started")
        self._stop_event.clear()
        httpd = _HTTPServer(self)
        # A short poll interval lets shutdown() return quickly instead of after up to 0.5 s.
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="faultserver", daemon=True
        )
        self._httpd = httpd
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and unblock every handler; returns within about `timeout` seconds."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        deadline = time.monotonic() + timeout
        self._stop_event.set()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            self._thread = None
        with self._lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            # Waking the event is not enough for a handler blocked in recv (a client that
            # never sent its request) or in send (a client that stopped reading).
            _shutdown(sock)
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FaultServer:
        if self._httpd is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FaultServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def add_file(self, name: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        """Serve `body` at /files/<name> (name may contain slashes; extra segments are ignored)."""
        with self._lock:
            self._files[name.strip("/")] = (bytes(body), content_type)

    # -- counters ---------------------------------------------------------------------------

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    @property
    def max_active(self) -> int:
        with self._lock:
            return self._max_active

    @property
    def requests(self) -> list[str]:
        """URL paths (no query string) in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def request_log(self) -> list[RequestRecord]:
        """Every request in arrival order: path, query, headers, body bytes sent, arrival time."""
        with self._lock:
            return list(self._log)

    @property
    def completed(self) -> list[str]:
        """URL paths whose response was sent in full, in completion order."""
        with self._lock:
            return list(self._completed)

    @property
    def disconnects(self) -> list[tuple[str, float]]:
        """(path, time.monotonic()) for each response the client abandoned before its end."""
        with self._lock:
            return list(self._disconnects)

    def reset_counters(self) -> None:
        """Clear the lists; max_active restarts from the requests in flight right now."""
        with self._lock:
            self._requests.clear()
            self._completed.clear()
            self._disconnects.clear()
            self._log.clear()
            self._max_active = self._active

    def wait_until(self, predicate: Callable[[FaultServer], bool], timeout: float) -> bool:
        """Poll `predicate(self)` until true (returns True) or `timeout` passes (returns False)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    # -- called from handler threads --------------------------------------------------------

    def _register_connection(self, sock: socket.socket) -> None:
        with self._lock:
            # Checked under the lock that stop() snapshots under, so a connection accepted
            # during stop() is either shut down here or by stop(), never left blocking.
            if self._stop_event.is_set():
                _shutdown(sock)
            self._connections[sock] = threading.current_thread()

    def _unregister_connection(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.pop(sock, None)

    def _begin(self, path: str, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)
            self._requests.append(path)
            self._active += 1
            self._max_active = max(self._max_active, self._active)

    def _flaky_hit(self, key: str) -> int:
        """How many requests `key` (path and query) has had, this one included."""
        with self._lock:
            self._flaky_hits[key] = self._flaky_hits.get(key, 0) + 1
            return self._flaky_hits[key]

    def _end(self) -> None:
        with self._lock:
            self._active -= 1

    def _complete(self, path: str) -> None:
        with self._lock:
            self._completed.append(path)

    def _uncomplete(self, path: str) -> None:
        with self._lock:
            for i in range(len(self._completed) - 1, -1, -1):
                if self._completed[i] == path:
                    del self._completed[i]
                    break

    def _disconnect(self, path: str) -> None:
        with self._lock:
            self._disconnects.append((path, time.monotonic()))

    def _find_file(self, segments: list[str]) -> tuple[bytes, str] | None:
        with self._lock:
            # Longest registered prefix wins, so names may contain slashes and still take
            # trailing segments like every other path.
            for k in range(len(segments), 0, -1):
                found = self._files.get("/".join(segments[:k]))
                if found is not None:
                    return found
        return None


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
