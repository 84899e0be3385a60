"""Socket to partial file: the byte loop of one download (`jobs.download` opens both ends).

The body is read straight from the socket into one reused buffer (`jobs.urllib3_compat.
body_reader`; http.client's own reads make two copies of every byte) and written out every
`FLUSH_BYTES` or `FLUSH_INTERVAL`, so a download that is killed keeps what it received for
the resume; the disk writes them while more arrive (`jobs.writeback`). Along the way: the
stall guard, the progress reports, the disk checks; at the end, the fsync. A failure removes
the partial file unless another attempt will resume it.
"""

from __future__ import annotations

import errno
import http.client
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import requests
import urllib3.exceptions

from jobs import messages
from jobs.errors import (
    ConnectionFailed,
    DiskFull,
    DownloadTimeout,
    FileTooLarge,
    FinalError,
    IncompleteBody,
    JobDeleted,
    OversizedBody,
)
from jobs.files import create_new_file, free_bytes, open_existing_file, regular_size
from jobs.http import StallGuard, connection_message, wraps
from jobs.urllib3_compat import BodyReader, body_reader
from jobs.writeback import Writeback

CHUNK_BYTES = 1024 * 1024  # the reused receive buffer
FLUSH_BYTES = CHUNK_BYTES // 2  # write out once this much is waiting,
FLUSH_INTERVAL = 0.25  # or this long (seconds) after the last write: a killed download keeps its bytes
PROGRESS_INTERVAL = 1.0  # seconds between progress reports
SPACE_CHECK_BYTES = 8 * 1024 * 1024  # a body without a length re-checks the free space this often
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

ProgressCallback = Callable[[int, int | None], None]


def check_space(directory: Path, needed_bytes: int) -> None:
    free = free_bytes(directory)
    if free < needed_bytes:
        raise DiskFull(free, needed_bytes)


class Stream:
    """Socket to partial file, with the stall guard, the progress reports and the disk checks."""

    def __init__(
        self,
        response: requests.Response,
        partial: Path,
        offset: int,
        total: int | None,
        request_timeout: float,
        min_free_bytes: int,
    ) -> None:
        self.response = response
        self.partial = partial
        self.offset = offset
        self.total = total
        self.request_timeout = request_timeout
        self.min_free_bytes = min_free_bytes
        self.keep_on_failure = False
        self.max_file_bytes: int | None = None
        self.written = offset  # bytes in the partial file so far
        self.writeback: Writeback | None = None

    def run(self, on_progress: ProgressCallback | None, clock: Callable[[], float], low_speed_limit: int) -> int:
        try:
            with self._open_partial() as out:
                self.writeback = Writeback(out.fileno(), self.offset)
                self._copy(out, on_progress, clock, low_speed_limit)
                out.flush()
                os.fsync(out.fileno())
        except OSError as error:
            if error.errno in _DISK_FULL_ERRNOS:
                free = free_bytes(self.partial.parent)
                self.partial.unlink(missing_ok=True)
                # Without a Content-Length, at least what was written and one byte more.
                wanted = self.total if self.total is not None else self.written + 1
                raise DiskFull(free, wanted - self.offset + self.min_free_bytes) from error
            self._after_failure(error)
            raise
        except BaseException as error:
            # Also on RQ's JobTimeoutException or a stop: no partial file outlives its download
            # unless another attempt will resume from it.
            self._after_failure(error)
            raise
        done = self.written
        if self.total is not None and done != self.total:
            self._after_failure(None)
            raise IncompleteBody(messages.incomplete(done, self.total))
        if on_progress is not None:
            on_progress(done, self.total if self.total is not None else done)
        return done

    def _open_partial(self) -> BinaryIO:
        if not self.offset:
            return create_new_file(self.partial)
        out = open_existing_file(self.partial)
        out.truncate(self.offset)
        out.seek(self.offset)
        return out

    def _after_failure(self, error: BaseException | None) -> None:
        final = isinstance(error, (FinalError, JobDeleted))
        kept = self.keep_on_failure and not final and bool(regular_size(self.partial))
        if not kept:
            self.partial.unlink(missing_ok=True)

    def _copy(
        self, out: BinaryIO, on_progress: ProgressCallback | None, clock: Callable[[], float], low_speed_limit: int
    ) -> None:
        """Socket to file through one reused buffer, written out every `FLUSH_BYTES` or `FLUSH_INTERVAL`."""
        total = self.total
        done = self.offset  # bytes received: in the file or in the buffer
        guard = StallGuard(self.request_timeout, clock, low_speed_limit)
        last_report = clock()
        limit = self.max_file_bytes
        # Without a length only the disk bounds the body: look at the free space as it grows.
        next_space_check = done + SPACE_CHECK_BYTES if total is None else None
        # With a length, read straight from the socket, never past the promised end; else
        # (chunked, or up to the close) through http.client, which decodes the framing.
        read_into = body_reader(self.response) if total is not None else None
        buffer = memoryview(bytearray(CHUNK_BYTES))
        pending = 0  # received bytes not yet written
        flushed_at = clock()
        if on_progress is not None:
            on_progress(done, total)
        try:
            while True:
                room = len(buffer) - pending
                if read_into is not None and total is not None:
                    room = min(room, total - done)
                count = self._receive(read_into, buffer[pending : pending + room], done) if room else 0
                if not count:
                    return
                if total is not None and done + count > total:
                    raise OversizedBody(messages.oversized(total))
                if limit is not None and done + count > limit:
                    raise FileTooLarge(total, limit)
                pending += count
                done += count
                guard.add(count)
                now = clock()
                if pending >= FLUSH_BYTES or now - flushed_at >= FLUSH_INTERVAL:
                    waiting, pending, flushed_at = buffer[:pending], 0, now  # a failed write is not retried below
                    self._write(out, waiting)
                if next_space_check is not None and done >= next_space_check:
                    next_space_check = done + SPACE_CHECK_BYTES
                    check_space(self.partial.parent, self.min_free_bytes)
                if now - last_report >= PROGRESS_INTERVAL:
                    last_report = now
                    if on_progress is not None:
                        on_progress(done, total)
        finally:
            # Whatever arrived goes to the file, also when the download stops here: a later
            # attempt resumes after it.
            if pending:
                self._write(out, buffer[:pending])

    def _write(self, out: BinaryIO, data: memoryview) -> None:
        out.write(data)
        self.written += len(data)
        if self.writeback is not None:
            self.writeback.written(self.written)

    def _receive(self, read_into: BodyReader | None, into: memoryview, done: int) -> int:
        """Bytes that arrived (at least one; 0 at the end), read into `into`."""
        response, total = self.response, self.total
        try:
            if read_into is not None:
                # readinto1: whatever has arrived, so a trickle still reaches the stall guard.
                return read_into(into)
            chunk = response.raw.read1(len(into), decode_content=False)
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as error:
            raise DownloadTimeout(self.request_timeout) from error
        except urllib3.exceptions.ProtocolError as error:
            if total is not None and wraps(error, http.client.IncompleteRead):
                raise IncompleteBody(messages.incomplete(done, total)) from error
            raise ConnectionFailed(connection_message(response.url, error)) from error
        except OSError as error:  # from the socket itself (reset, TLS), on the direct path
            raise ConnectionFailed(connection_message(response.url, error)) from error
        into[: len(chunk)] = chunk
        return len(chunk)
