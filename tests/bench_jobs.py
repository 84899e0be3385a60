"""What the benchmark's anchors run: a bare RQ job function, and the raw-socket floor.

`fetch` is the job plain `rq worker-pool` and `rq worker -w rq.worker.SimpleWorker` run
(imported by name, `tests.bench_jobs.fetch`): no checks, no progress, no partial file.
`floor_get` is the least a Python process can do to move an HTTP body into a file that
survives a power cut: with `writeback`, each 8 MiB is sent to disk as it is written (libc's
`sync_file_range`, as `jobs.writeback` does), else the whole file waits for the final fsync.
"""

from __future__ import annotations

import os
import socket

import requests

from jobs.writeback import STEP_BYTES, sync_file_range

BUFFER_BYTES = 1024 * 1024
_WRITE, _WAIT_AND_WRITE = 2, 1 | 2 | 4  # SYNC_FILE_RANGE_WRITE; WAIT_BEFORE | WRITE | WAIT_AFTER


def fetch(url: str, path: str) -> None:
    r = requests.get(url, timeout=30)
    open(path, "wb").write(r.content)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def floor_get(host: str, port: int, path: str, out_path: str, *, writeback: bool = False) -> int:
    """GET `path` over one raw socket into `out_path` (recv_into one reused 1 MiB buffer,
    os.write, fsync at the end); the body's length. The response must be a 200."""
    started, previous = 0, -1  # the writeback: the range started last is [previous, started)
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
                if writeback and sync_file_range is not None and body - started >= STEP_BYTES:
                    if previous >= 0:
                        sync_file_range(fd, previous, started - previous, _WAIT_AND_WRITE)
                    sync_file_range(fd, started, body - started, _WRITE)
                    previous, started = started, body
            os.fsync(fd)
        finally:
            os.close(fd)
    return body
