"""What the benchmark's anchors run: a bare RQ job function, and the raw-socket floor.

`fetch` is the job plain `rq worker-pool` and `rq worker -w rq.worker.SimpleWorker` run
(imported by name, `tests.bench_jobs.fetch`): no checks, no progress, no partial file.
`floor_get` is the least a Python process can do to move an HTTP body into a file.
"""

from __future__ import annotations

import os
import socket

import requests

BUFFER_BYTES = 1024 * 1024


def fetch(url: str, path: str) -> None:
    r = requests.get(url, timeout=30)
    open(path, "wb").write(r.content)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def floor_get(host: str, port: int, path: str, out_path: str) -> int:
    """GET `path` over one raw socket into `out_path` (recv_into one reused 1 MiB buffer,
    os.write, fsync at the end); the body's length. The response must be a 200."""
    buffer = bytearray(BUFFER_BYTES)
    view = memoryview(buffer)
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        received = 0
        while (end := buffer.find(b"\r\n\r\n", 0, received)) < 0:
            count = sock.recv_into(view[received:])
            if not count:
                raise ConnectionError("connection closed inside the response head")
            received += count
        status = bytes(buffer[: buffer.find(b"\r\n")]).split()
        if len(status) < 2 or status[1] != b"200":
            raise ConnectionError(f"HTTP status {status!r}")
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            body = received - (end + 4)
            _write_all(fd, view[end + 4 : received])
            while count := sock.recv_into(buffer):
                _write_all(fd, view[:count])
                body += count
            os.fsync(fd)
        finally:
            os.close(fd)
    return body
