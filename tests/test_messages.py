"""The user's one-line errors: built in `jobs.messages`, numbers as configured, and connection
failures told apart by the type of what went wrong (real sockets, no message matching)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from config import Settings
from jobs import messages
from jobs.download import Target, download
from jobs.errors import ConnectionFailed, DownloadTimeout, HTTPStatusError, JobDeleted, TransportError
from tests.faultserver import FaultServer

pytestmark = pytest.mark.timeout(30)


def test_the_contract_texts_with_the_production_defaults() -> None:
    defaults = Settings.from_env({})
    assert messages.download_timeout(defaults.request_timeout) == "Download timeout (30s)"
    assert messages.processing_timeout(defaults.job_timeout) == "Processing timeout (300s exceeded)"
    assert messages.shutdown(defaults.shutdown_grace) == "Interrupted by shutdown (300s grace exceeded)"
    assert messages.RECOVERED == "Recovered from server crash while processing"
    assert messages.CANCELLED == "Cancelled by user during processing"
    assert messages.DELETED == "Deleted by user"


def test_numbers_read_as_configured() -> None:
    fast = Settings.from_env({"DQ_REQUEST_TIMEOUT": "1.5", "DQ_JOB_TIMEOUT": "8", "DQ_SHUTDOWN_GRACE": "4"})
    assert messages.download_timeout(fast.request_timeout) == "Download timeout (1.5s)"
    assert messages.processing_timeout(fast.job_timeout) == "Processing timeout (8s exceeded)"
    assert messages.shutdown(fast.shutdown_grace) == "Interrupted by shutdown (4s grace exceeded)"


def test_exceptions_carry_the_messages() -> None:
    assert str(DownloadTimeout(30)) == "Download timeout (30s)"
    assert str(HTTPStatusError(404)) == "HTTP 404 Not Found"
    assert str(HTTPStatusError(599)) == "HTTP 599"
    assert str(JobDeleted("abc")) == messages.CANCELLED and JobDeleted("abc").job_id == "abc"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fail(url: str, tmp_path: Path) -> TransportError:
    with pytest.raises(TransportError) as caught:
        download(url, Target(), download_dir=tmp_path, request_timeout=2, allow_private=True)
    return caught.value


def test_refused(tmp_path: Path) -> None:
    port = closed_port()
    error = fail(f"http://127.0.0.1:{port}/x", tmp_path)
    assert isinstance(error, ConnectionFailed)
    assert str(error) == f"Connection refused (127.0.0.1:{port})"


def test_host_not_found(tmp_path: Path) -> None:
    error = fail("http://no-such-host.invalid/x", tmp_path)
    assert str(error) == "Host not found (no-such-host.invalid:80)"


def test_reset_before_and_during_the_body(tmp_path: Path, fault_server: FaultServer) -> None:
    where = f"127.0.0.1:{fault_server.port}"
    assert str(fail(fault_server.url("/reset"), tmp_path)) == f"Connection reset ({where})"
    error = fail(fault_server.url("/reset-body/200000"), tmp_path)
    assert str(error) in (f"Connection reset ({where})", "Incomplete download: got 100000 of 200000 bytes")


def test_tls_to_a_plain_http_server(tmp_path: Path, fault_server: FaultServer) -> None:
    error = fail(f"https://127.0.0.1:{fault_server.port}/bytes/10", tmp_path)
    assert str(error) == f"TLS error (127.0.0.1:{fault_server.port})"


def test_a_servers_own_reason_phrase_never_reaches_the_error_line(tmp_path: Path) -> None:
    """A real server answering `599 <img src=x onerror=...>`: the line is the code alone (it is
    shown in the dashboard and logged), and a known code gets its standard phrase."""
    hostile = b"<img src=x onerror=alert(document.domain)>"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def answer(status: bytes) -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 " + status + b" " + hostile + b"\r\nContent-Length: 0\r\n\r\n")

    with listener:
        for status, line in ((b"599", "HTTP 599"), (b"404", "HTTP 404 Not Found")):
            server = threading.Thread(target=answer, args=(status,), daemon=True)
            server.start()
            with pytest.raises(HTTPStatusError) as caught:
                download(
                    f"http://127.0.0.1:{port}/a.mp3",
                    Target(),
                    download_dir=tmp_path,
                    request_timeout=2,
                    allow_private=True,
                )
            server.join(5)
            assert str(caught.value) == line
