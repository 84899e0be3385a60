"""What jobs/urllib3_compat.py relies on in urllib3: every socket is opened by `_new_conn`,
for plain HTTP and for HTTPS before the TLS handshake; a streamed response's http.client
response is `raw._fp`, reading the socket through `fp`. Fails loudly if an upgrade changes it."""

from __future__ import annotations

import inspect
import socket
import threading

import pytest
import urllib3.connection

from jobs.errors import InvalidRequest
from jobs.http import new_session
from jobs.urllib3_compat import GlobalOnlyAdapter, GuardedHTTPConnection, GuardedHTTPSConnection, body_reader
from tests.faultserver import FaultServer, pattern_bytes

pytestmark = pytest.mark.timeout(30)


def test_urllib3_still_opens_sockets_in_new_conn() -> None:
    for cls in (urllib3.connection.HTTPConnection, urllib3.connection.HTTPSConnection):
        assert "self._new_conn()" in inspect.getsource(cls.connect)


def test_a_guarded_connection_refuses_loopback_before_sending(fault_server: FaultServer) -> None:
    connection = GuardedHTTPConnection("127.0.0.1", fault_server.port, timeout=2)
    with pytest.raises(InvalidRequest, match=r"private address \(127\.0\.0\.1\)"):
        connection.connect()
    assert fault_server.request_log == []


def test_https_is_refused_before_the_tls_handshake(fault_server: FaultServer) -> None:
    """The fault server speaks plain HTTP: a handshake attempted first would fail as a TLS error."""
    connection = GuardedHTTPSConnection("127.0.0.1", fault_server.port, timeout=2)
    with pytest.raises(InvalidRequest, match="private address"):
        connection.connect()


def test_sessions_mount_the_guard_unless_private_networks_are_allowed(fault_server: FaultServer) -> None:
    guarded = new_session(allow_private=False)
    assert isinstance(guarded.get_adapter("https://example.org/"), GlobalOnlyAdapter)
    with pytest.raises(InvalidRequest):
        guarded.get(fault_server.url("/bytes/10"), timeout=2)
    open_session = new_session(allow_private=True)
    assert not isinstance(open_session.get_adapter("http://x/"), GlobalOnlyAdapter)
    assert open_session.get(fault_server.url("/bytes/10"), timeout=2).status_code == 200


def test_a_proxy_is_refused_while_the_guard_is_on() -> None:
    session = new_session(allow_private=False)
    with pytest.raises(InvalidRequest, match="proxy"):
        session.get("http://example.org/", proxies={"http": "http://127.0.0.1:3128"}, timeout=2)


def test_a_body_with_a_length_is_read_into_our_buffer_from_the_socket(fault_server: FaultServer) -> None:
    size = 300_000
    with new_session(allow_private=True).get(fault_server.url(f"/bytes/{size}"), stream=True, timeout=5) as response:
        read_into = body_reader(response)
        assert read_into is not None
        buffer = memoryview(bytearray(size + 10))
        received = 0
        while count := read_into(buffer[received:size]):
            received += count
    assert received == size
    assert bytes(buffer[:size]) == pattern_bytes(size)


def test_a_chunked_body_is_left_to_http_client() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")

    server = threading.Thread(target=answer, daemon=True)
    server.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
    with listener, new_session(allow_private=True).get(url, stream=True, timeout=5) as response:
        assert body_reader(response) is None
        assert response.raw.read() == b"abc"
    server.join(timeout=5)
