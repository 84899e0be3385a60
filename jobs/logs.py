"""Logging as every process of the service writes it: one line per record, on stderr, with
no URL credentials in any line (a job's URL may carry `user:password@`)."""

from __future__ import annotations

import logging
import sys

from jobs.urls import redacted

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class RedactCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redacted(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = redacted(record.exc_text)
        return True


def redact_handlers(*loggers: logging.Logger) -> None:
    """Every handler of these loggers drops URL credentials from what it writes."""
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, RedactCredentials) for f in handler.filters):
                handler.addFilter(RedactCredentials())


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    redact_handlers(logging.getLogger())
