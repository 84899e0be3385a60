"""Logging as every process of the service writes it: one line per record, on stderr, with
no URL credentials in any line (a job's URL may carry `user:password@`).

`DQ_LOG_FORMAT=json` makes each line one JSON object (`JsonFormatter`): `ts`, `level`,
`logger`, `event` (the message, or the job event's name on an audit line, its text then in
`message`), and, when the record knows them (`extra=`), `job_id`, `album_id`, `url`,
`attempt`, `bytes`, `duration_s`, `error`; a traceback goes into `traceback`, escaped, so a
record stays one line.

An expected failure (one of our own `jobs.errors`, or RQ's job timeout) is not a traceback in
the worker's log (`ExpectedFailures`): the supervisor's audit line names it, and RQ's stored
exc_info (what the dashboard shows) keeps the traceback.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from rq.timeouts import JobTimeoutException

from jobs.errors import DownloadError
from jobs.urls import redacted

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
TEXT, JSON = "text", "json"
# What a record may carry through `extra=`, in the order a line shows them.
FIELDS = ("job_id", "album_id", "url", "attempt", "bytes", "duration_s", "error")
EXPECTED: tuple[type[BaseException], ...] = (DownloadError, JobTimeoutException)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redacted(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    return redacted(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object a line, credentials removed from every text in it."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, Any] = {
            "ts": self.timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
        }
        event = getattr(record, "event", None)
        if isinstance(event, str) and event:
            line["event"] = event
            line["message"] = redacted(message)
        else:
            line["event"] = redacted(message)
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None and value != "":
                line[name] = _clean(value)
        trace = self.trace(record)
        if trace:
            line["traceback"] = redacted(trace)
        return json.dumps(line, ensure_ascii=False)

    @staticmethod
    def timestamp(created: float) -> str:
        """ISO 8601 in UTC with milliseconds: `2025-01-31T12:00:00.123Z`."""
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"

    def trace(self, record: logging.LogRecord) -> str:
        parts = []
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(self.formatStack(record.stack_info))
        return "\n".join(parts)


def make_formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == JSON else logging.Formatter(LOG_FORMAT)


class RedactCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redacted(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = redacted(record.exc_text)
        return True


def is_expected(error: BaseException | None) -> bool:
    """A failure the service knows and words itself: no traceback needed in the log."""
    return isinstance(error, EXPECTED)


class ExpectedFailures(logging.Filter):
    """On RQ's `rq.worker` logger: the error record RQ writes for a job's exception (message
    and formatted traceback, while the worker handles that exception) becomes, for an
    expected failure, one DEBUG line without the traceback; shown only at DEBUG level (the
    supervisor's audit trail carries the failure at INFO). Unexpected errors pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        error = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        if not is_expected(error):
            return True
        job_id = getattr(record, "job_id", None)
        record.msg, record.args = "job %s: attempt failed: %s", (job_id or "?", str(error))
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        record.error = str(error)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def redact_handlers(*loggers: logging.Logger) -> None:
    """Every handler of these loggers drops URL credentials from what it writes."""
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactCredentials) for f in handler.filters):
                handler.addFilter(RedactCredentials())


def use_format(log_format: str, loggers: Iterable[logging.Logger]) -> None:
    """Give the handlers of these loggers (RQ's own, say) our JSON formatter when asked for
    JSON; text keeps each handler's own format."""
    if log_format != JSON:
        return
    for logger in loggers:
        for handler in logger.handlers:
            if not isinstance(handler.formatter, JsonFormatter):
                handler.setFormatter(JsonFormatter())


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:  # pragma: no cover (the process is going down)
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    logging.getLogger("dq").critical("uncaught %s: %s", kind.__name__, error, exc_info=(kind, error, traceback))


def configure_logging(log_format: str = TEXT) -> None:
    """The root logger writes to stderr at INFO, in `log_format` (`DQ_LOG_FORMAT`), without
    URL credentials. In JSON, warnings and an uncaught exception are JSON lines too."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    root = logging.getLogger()
    use_format(log_format, [root])
    redact_handlers(root)
    if log_format == JSON:
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught


WORKER_LOGGERS = ("dq", "rq.worker", "rq.job", "")  # the handlers `rq worker` and we set up, and root


def setup_worker_logging(log_format: str) -> None:
    """An `rq worker` process's logging: RQ configures its own handlers (`rq.logutils`, on
    `rq.worker` and `rq.job`, plain text); they get our format, the root logger (RQ's other
    loggers, rq.queue, ...) is ours, no handler writes a credential, and RQ's traceback of an
    expected failure is left out. Idempotent: called before and after RQ's bootstrap."""
    configure_logging(log_format)
    loggers = [logging.getLogger(name) for name in WORKER_LOGGERS]
    use_format(log_format, loggers)
    redact_handlers(*loggers)
    rq_worker = logging.getLogger("rq.worker")
    if not any(isinstance(f, ExpectedFailures) for f in rq_worker.filters):
        rq_worker.addFilter(ExpectedFailures())
