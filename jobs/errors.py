"""Why a download stopped, as an exception tree whose `str()` is the user's one-line error.

    DownloadError                      every failure the engine reports
    ├── JobDeleted                     deleted while it ran: stop, write nothing back
    ├── TransportError                 retryable: the network let us down
    │   ├── DownloadTimeout            no answer / no bytes / too slow for the request timeout
    │   ├── ConnectionFailed           refused, reset, DNS failure, TLS failure
    │   ├── IncompleteBody             fewer bytes than Content-Length promised
    │   └── HeldBack                   the host asked every client to wait (Retry-After): no attempt used
    ├── HTTPStatusError                the server answered with an error status
    │   (retryable() for 408, 429 and 5xx; final for the other 4xx)
    └── FinalError                     retrying cannot help
        ├── InvalidRequest             bad URL, private address refused, path outside the download dir
        ├── RefusedJob                 a job naming a function that is not ours (written into Redis by hand)
        ├── PlaylistError              a playlist that cannot be used
        ├── DiskFull                   not enough free space for the file
        ├── FileTooLarge               over DQ_MAX_FILE_MB
        ├── NotAFile                   an HTML page where a file was asked for
        └── OversizedBody              more bytes than Content-Length promised

    QueueFull                          not a download error: an enqueue refused whole by DQ_QUEUE_MAX

None of these derive from RQ's `JobTimeoutException`, and no code in `jobs/` catches
`Exception` around a download: RQ's job timeout must always reach the worker.
"""

from __future__ import annotations

from jobs import messages


class DownloadError(Exception):
    """A download failed; `str(error)` is the short line shown to the user."""

    retryable = False


class JobDeleted(DownloadError):
    """The job was deleted while it ran; the download stops and nothing of it is written."""

    def __init__(self, job_id: str) -> None:
        super().__init__(messages.CANCELLED)
        self.job_id = job_id


class TransportError(DownloadError):
    retryable = True


class DownloadTimeout(TransportError):
    def __init__(self, request_timeout: float) -> None:
        super().__init__(messages.download_timeout(request_timeout))


class ConnectionFailed(TransportError):
    pass


class IncompleteBody(TransportError):
    pass


class HeldBack(TransportError):
    """The job's host is in a backoff (a 429/503 Retry-After): wait until `until` (unix time)."""

    def __init__(self, where: str, until: float) -> None:
        super().__init__(messages.held_back(where))
        self.where = where
        self.until = until


class HTTPStatusError(DownloadError):
    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(messages.http_status(status))
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.status in (408, 429) or self.status >= 500


class FinalError(DownloadError):
    pass


class InvalidRequest(FinalError):
    pass


class RefusedJob(FinalError):
    """A job that names a function (or callback) that is not one of ours."""

    def __init__(self, name: str) -> None:
        super().__init__(messages.function_not_allowed(name))


class PlaylistError(FinalError):
    pass


class DiskFull(FinalError):
    def __init__(self, free_bytes: int, needed_bytes: int) -> None:
        super().__init__(messages.disk_full(free_bytes, needed_bytes))
        self.free_bytes = free_bytes
        self.needed_bytes = needed_bytes


class FileTooLarge(FinalError):
    def __init__(self, size_bytes: int | None, limit_bytes: int) -> None:
        super().__init__(messages.file_too_large(size_bytes, limit_bytes))


class NotAFile(FinalError):
    def __init__(self) -> None:
        super().__init__(messages.NOT_A_FILE)


class OversizedBody(FinalError):
    """The server sent more than it announced: which bytes are right is unknown, so no resume."""


class QueueFull(Exception):
    """An enqueue that would take the queue past DQ_QUEUE_MAX: refused whole (exit 1, HTTP 503)."""

    def __init__(self, queued: int, limit: int) -> None:
        super().__init__(messages.queue_full(queued, limit))
        self.queued = queued
        self.limit = limit
