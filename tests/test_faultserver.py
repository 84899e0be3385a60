"""The fault server itself: each path's behaviour over real sockets, and its bookkeeping."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.faultserver import FaultServer, pattern_bytes

pytestmark = pytest.mark.timeout(5)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


# -- raw-socket helpers: requests hides how a response ended (FIN vs RST vs silence) --------


def raw_request(server: FaultServer, path: str, method: str = "GET") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=2)
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed inside the headers: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def read_rest(sock: socket.socket, timeout: float) -> tuple[bytes, str]:
    """Read until the connection ends; returns the bytes and "eof", "reset" or "timeout"."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data, "eof"
            data += chunk
    except ConnectionResetError:
        return data, "reset"
    except TimeoutError:
        return data, "timeout"


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return data


# -- pattern ------------------------------------------------------------------------------


def test_pattern_is_deterministic_prefix_stable_and_not_periodic() -> None:
    big = pattern_bytes(50_000)
    assert len(big) == 50_000
    assert pattern_bytes(50_000) == big
    assert pattern_bytes(0) == b""
    for n in (1, 7, 4095, 4096, 4097, 12_345):
        assert pattern_bytes(n) == big[:n]
    # A dropped or repeated chunk of any usual size must change the content.
    for shift in (1, 8, 256, 1024, 4096, 8192, 16384):
        assert big[shift:] != big[: len(big) - shift]
    assert big.count(0) < len(big) // 100


# -- /bytes ---------------------------------------------------------------------------------


def test_bytes_body_headers_and_counters(server: FaultServer) -> None:
    response = requests.get(server.url("/bytes/100000"), timeout=2)
    assert response.status_code == 200
    assert response.content == pattern_bytes(100_000)
    assert response.headers["Content-Length"] == "100000"
    assert response.headers["Connection"] == "close"
    assert "Content-Disposition" not in response.headers
    assert server.wait_until(lambda s: s.active == 0, 1)
    assert server.requests == ["/bytes/100000"]
    assert server.completed == ["/bytes/100000"]
    assert server.disconnects == []
    assert server.max_active == 1


def test_bytes_trailing_segments_and_query_not_in_recorded_path(server: FaultServer) -> None:
    response = requests.get(server.url("/bytes/10/Artist/song.flac?cd=x.flac"), timeout=2)
    assert response.content == pattern_bytes(10)
    assert server.requests == ["/bytes/10/Artist/song.flac"]


def test_bytes_zero_length(server: FaultServer) -> None:
    response = requests.get(server.url("/bytes/0/empty.mp3"), timeout=2)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Length"] == "0"
    assert server.completed == ["/bytes/0/empty.mp3"]


def test_bytes_content_disposition(server: FaultServer) -> None:
    response = requests.get(server.url("/bytes/5/x?cd=My%20Song.flac"), timeout=2)
    assert response.headers["Content-Disposition"] == 'attachment; filename="My Song.flac"'
    raw = requests.get(server.url("/bytes/5?cdraw=inline%3B%20filename%2A%3DUTF-8%27%27a%2520b.ogg"), timeout=2)
    assert raw.headers["Content-Disposition"] == "inline; filename*=UTF-8''a%20b.ogg"


def test_bytes_nolength_is_close_delimited(server: FaultServer) -> None:
    sock = raw_request(server, "/bytes/3000?nolength=1")
    status, headers, rest = read_head(sock)
    body, end = read_rest(sock, 2)
    sock.close()
    assert status == 200
    assert "content-length" not in headers
    assert headers["connection"] == "close"
    assert rest + body == pattern_bytes(3000)
    assert end == "eof"
    assert server.wait_until(lambda s: s.completed == ["/bytes/3000"], 1)


def test_bytes_delay_holds_back_the_headers(server: FaultServer) -> None:
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(server.url("/bytes/10?delay=1"), timeout=(1, 0.2))
    start = time.monotonic()
    response = requests.get(server.url("/bytes/10?delay=0.4"), timeout=2, stream=True)
    elapsed = time.monotonic() - start
    assert response.content == pattern_bytes(10)
    assert 0.35 <= elapsed < 1.5


def test_bytes_rate_throttles_in_pieces(server: FaultServer) -> None:
    sock = raw_request(server, "/bytes/4000?rate=4000")
    start = time.monotonic()
    _, headers, body = read_head(sock)
    assert headers["content-length"] == "4000"
    reads = 0
    while len(body) < 4000:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
        reads += 1
    elapsed = time.monotonic() - start
    sock.close()
    assert body == pattern_bytes(4000)
    assert 0.8 <= elapsed < 2.0
    assert reads >= 5


def test_bad_arguments_get_400_and_unknown_paths_404(server: FaultServer) -> None:
    assert requests.get(server.url("/bytes/abc"), timeout=2).status_code == 400
    assert requests.get(server.url("/bytes/-1"), timeout=2).status_code == 400
    assert requests.get(server.url("/bytes/10?rate=0"), timeout=2).status_code == 400
    assert requests.get(server.url("/slow/10?seconds=x"), timeout=2).status_code == 400
    assert requests.get(server.url("/status/42"), timeout=2).status_code == 400
    assert requests.get(server.url("/nope/10"), timeout=2).status_code == 404
    assert requests.get(server.url("/"), timeout=2).status_code == 404


def test_head_sends_headers_only(server: FaultServer) -> None:
    response = requests.head(server.url("/bytes/1234/a.mp3?cd=a.mp3"), timeout=2)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == "1234"
    assert response.headers["Content-Disposition"] == 'attachment; filename="a.mp3"'
    assert response.content == b""


# -- /slow and /trickle ---------------------------------------------------------------------


def test_slow_spreads_the_body_evenly(server: FaultServer) -> None:
    sock = raw_request(server, "/slow/2000/a.ogg?seconds=1")
    start = time.monotonic()
    _, headers, body = read_head(sock)
    assert headers["content-length"] == "2000"
    sock.settimeout(2)
    halfway = None
    while len(body) < 2000:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
        if halfway is None and time.monotonic() - start >= 0.5:
            halfway = len(body)
    elapsed = time.monotonic() - start
    sock.close()
    assert body == pattern_bytes(2000)
    assert 0.9 <= elapsed < 1.8
    assert halfway is not None and 500 <= halfway <= 1500
    assert server.wait_until(lambda s: s.completed == ["/slow/2000/a.ogg"], 1)


def test_trickle_sends_one_byte_per_interval(server: FaultServer) -> None:
    sock = raw_request(server, "/trickle/6?interval=0.1")
    _, headers, body = read_head(sock)
    assert headers["content-length"] == "6"
    start = time.monotonic()
    arrivals = []
    sock.settimeout(2)
    while len(body) < 6:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
        arrivals.append(len(chunk))
    elapsed = time.monotonic() - start
    sock.close()
    assert body == pattern_bytes(6)
    assert 0.45 <= elapsed < 1.5
    assert len(arrivals) >= 4  # byte by byte, not in one lump


def test_trickle_default_interval_beats_a_read_timeout_but_is_slow(server: FaultServer) -> None:
    start = time.monotonic()
    response = requests.get(server.url("/trickle/4"), timeout=(1, 0.9))
    assert response.content == pattern_bytes(4)
    assert time.monotonic() - start >= 1.8


# -- hangs ------------------------------------------------------------------------------------


def test_hang_sends_nothing_and_notices_the_client_leaving(server: FaultServer) -> None:
    sock = raw_request(server, "/hang/track.mp3?x=1")
    assert server.wait_until(lambda s: s.active == 1, 1)
    sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        sock.recv(1)
    closed_at = time.monotonic()
    sock.close()
    assert server.wait_until(lambda s: len(s.disconnects) == 1, 1)
    path, noticed_at = server.disconnects[0]
    assert path == "/hang/track.mp3"
    assert noticed_at - closed_at < 0.3
    assert server.wait_until(lambda s: s.active == 0, 1)
    assert server.completed == []


def test_hang_with_requests_read_timeout(server: FaultServer) -> None:
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(server.url("/hang"), timeout=(1, 0.3))
    assert server.wait_until(lambda s: [p for p, _ in s.disconnects] == ["/hang"], 1)


def test_hang_body_sends_half_then_nothing(server: FaultServer) -> None:
    sock = raw_request(server, "/hang-body/1000")
    status, headers, rest = read_head(sock)
    assert status == 200
    assert headers["content-length"] == "1000"
    body, end = read_rest(sock, 0.4)
    assert rest + body == pattern_bytes(500)
    assert end == "timeout"
    sock.close()
    assert server.wait_until(lambda s: [p for p, _ in s.disconnects] == ["/hang-body/1000"], 1)
    assert server.completed == []


# -- resets and truncation ------------------------------------------------------------------------


def test_reset_before_any_response(server: FaultServer) -> None:
    sock = raw_request(server, "/reset/x.flac")
    data, end = read_rest(sock, 2)
    sock.close()
    assert (data, end) == (b"", "reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.url("/reset"), timeout=2)
    assert server.requests == ["/reset/x.flac", "/reset"]
    assert server.completed == []
    assert server.wait_until(lambda s: s.active == 0, 1)


def test_reset_body_sends_half_then_rst(server: FaultServer) -> None:
    sock = raw_request(server, "/reset-body/1000")
    status, headers, rest = read_head(sock)
    assert status == 200
    assert headers["content-length"] == "1000"
    body, end = read_rest(sock, 2)
    sock.close()
    assert end == "reset"
    # Linux may drop bytes still queued when the RST lands; whatever arrived is the pattern.
    got = rest + body
    assert len(got) <= 500
    assert got == pattern_bytes(len(got))
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(server.url("/reset-body/1000"), timeout=2).content  # noqa: B018
    assert server.completed == []


def test_truncate_sends_half_then_clean_close(server: FaultServer) -> None:
    sock = raw_request(server, "/truncate/1000/a.flac")
    status, headers, rest = read_head(sock)
    body, end = read_rest(sock, 2)
    sock.close()
    assert status == 200
    assert headers["content-length"] == "1000"
    assert rest + body == pattern_bytes(500)
    assert end == "eof"
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(server.url("/truncate/1000"), timeout=2).content  # noqa: B018
    assert server.completed == []
    assert server.disconnects == []


# -- /status and /files ---------------------------------------------------------------------------


def test_status_codes_and_retry_after(server: FaultServer) -> None:
    response = requests.get(server.url("/status/503/a.mp3?retry_after=7"), timeout=2)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert response.text == "503 Service Unavailable\n"
    assert response.headers["Connection"] == "close"
    response = requests.get(server.url("/status/404"), timeout=2)
    assert response.status_code == 404
    assert "Retry-After" not in response.headers
    assert requests.get(server.url("/status/204"), timeout=2).content == b""
    assert requests.get(server.url("/status/599"), timeout=2).status_code == 599
    assert server.wait_until(lambda s: len(s.completed) == 4, 1)


def test_status_redirect_location(server: FaultServer) -> None:
    target = server.url("/bytes/10/a.mp3")
    response = requests.get(server.url(f"/status/302?location={target}"), timeout=2)
    assert response.status_code == 200
    assert response.content == pattern_bytes(10)
    assert server.requests == ["/status/302", "/bytes/10/a.mp3"]


def test_files_serves_registered_content(server: FaultServer) -> None:
    playlist = b"#EXTM3U\n" + server.url("/bytes/10/one.mp3").encode() + b"\n"
    server.add_file("album.m3u", playlist, "audio/x-mpegurl")
    server.add_file("sub/dir.m3u8", b"x")
    response = requests.get(server.url("/files/album.m3u"), timeout=2)
    assert response.content == playlist
    assert response.headers["Content-Type"] == "audio/x-mpegurl"
    assert requests.get(server.url("/files/album.m3u/extra/name.m3u"), timeout=2).content == playlist
    sub = requests.get(server.url("/files/sub/dir.m3u8"), timeout=2)
    assert sub.content == b"x"
    assert sub.headers["Content-Type"] == "application/octet-stream"
    assert requests.get(server.url("/files/missing.m3u"), timeout=2).status_code == 404


# -- counters ---------------------------------------------------------------------------------------


def test_three_concurrent_slow_requests_peak_at_three(server: FaultServer) -> None:
    results: list[bytes] = []
    lock = threading.Lock()

    def fetch(i: int) -> None:
        body = requests.get(server.url(f"/slow/300/{i}.mp3?seconds=0.6"), timeout=3).content
        with lock:
            results.append(body)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    assert server.wait_until(lambda s: s.active == 3, 1)
    for thread in threads:
        thread.join(3)
    assert results == [pattern_bytes(300)] * 3
    assert server.max_active == 3
    assert server.wait_until(lambda s: s.active == 0, 1)
    assert sorted(server.completed) == ["/slow/300/0.mp3", "/slow/300/1.mp3", "/slow/300/2.mp3"]


def test_back_to_back_requests_never_overlap_in_max_active(server: FaultServer) -> None:
    # A client that starts its next request the moment the previous body is complete must
    # not make the server report two in flight.
    session = requests.Session()
    for i in range(30):
        path = ("/bytes/200", "/status/500", "/reset", "/truncate/100", "/bytes/0")[i % 5]
        try:
            session.get(server.url(path), timeout=2).content  # noqa: B018
        except requests.exceptions.RequestException:
            pass
    assert server.max_active == 1
    assert len(server.requests) == 30


def test_disconnect_during_slow_body(server: FaultServer) -> None:
    sock = raw_request(server, "/slow/10000/big.flac?seconds=3")
    read_head(sock)
    time.sleep(0.3)
    closed_at = time.monotonic()
    sock.close()
    assert server.wait_until(lambda s: len(s.disconnects) == 1, 1)
    path, noticed_at = server.disconnects[0]
    assert path == "/slow/10000/big.flac"
    assert noticed_at - closed_at < 0.3
    assert server.wait_until(lambda s: s.active == 0, 1)
    assert server.completed == []


def test_disconnect_during_delay_and_rate(server: FaultServer) -> None:
    sock = raw_request(server, "/bytes/10?delay=3")
    time.sleep(0.2)
    sock.close()
    sock = raw_request(server, "/bytes/100000?rate=10000")
    read_head(sock)
    sock.close()
    assert server.wait_until(lambda s: len(s.disconnects) == 2, 1)
    assert sorted(p for p, _ in server.disconnects) == ["/bytes/10", "/bytes/100000"]
    assert server.wait_until(lambda s: s.active == 0, 1)


def test_reset_counters_keeps_in_flight_requests_in_max_active(server: FaultServer) -> None:
    requests.get(server.url("/bytes/10"), timeout=2)
    sock = raw_request(server, "/hang")
    assert server.wait_until(lambda s: s.active == 1, 1)
    server.reset_counters()
    assert server.requests == []
    assert server.completed == []
    assert server.disconnects == []
    assert server.max_active == 1
    sock.close()
    assert server.wait_until(lambda s: s.active == 0, 1)
    assert [p for p, _ in server.disconnects] == ["/hang"]


def test_wait_until_times_out(server: FaultServer) -> None:
    start = time.monotonic()
    assert server.wait_until(lambda s: s.active == 5, 0.2) is False
    assert 0.2 <= time.monotonic() - start < 1


# -- lifecycle ----------------------------------------------------------------------------------------


def test_stop_returns_quickly_while_handlers_hang() -> None:
    srv = FaultServer().start()
    port = srv.port
    socks = [
        raw_request(srv, "/hang"),
        raw_request(srv, "/hang-body/1000"),
        raw_request(srv, "/trickle/100?interval=1"),
        raw_request(srv, "/slow/1000?seconds=30"),
        raw_request(srv, "/bytes/10?delay=30"),
    ]
    silent = socket.create_connection(("127.0.0.1", srv.port), timeout=2)  # never sends a request
    assert srv.wait_until(lambda s: s.active == 5, 1)
    start = time.monotonic()
    srv.stop()
    assert time.monotonic() - start < 2
    for sock in [*socks, silent]:
        _, end = read_rest(sock, 1)
        assert end in ("eof", "reset")
        sock.close()
    assert srv.active == 0
    assert srv.disconnects == []  # the server leaving is not the client leaving
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_context_manager_and_urls() -> None:
    with FaultServer() as srv:
        port = srv.port
        assert srv.base_url == f"http://127.0.0.1:{port}"
        assert srv.url("/bytes/1") == f"http://127.0.0.1:{port}/bytes/1"
        assert srv.url("bytes/1") == f"http://127.0.0.1:{port}/bytes/1"
        assert requests.get(srv.url("/bytes/1"), timeout=2).content == pattern_bytes(1)
    with pytest.raises(RuntimeError):
        srv.base_url  # noqa: B018
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
