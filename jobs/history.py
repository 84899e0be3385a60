"""The event history: every state change of every job, kept after the job itself is gone.

Events go to one capped Redis stream (`jobs.keys.EVENTS`) and to the log, one line each, so a
deleted or expired job still has an audit trail (`bin/jobs --history [ID]`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from rq.utils import as_text

from jobs import keys

MAX_EVENTS = 100_000  # approximate cap (XADD MAXLEN ~)

ENQUEUED, STARTED, COMPLETED, FAILED = "enqueued", "started", "completed", "failed"
DELETED, CANCELLED, RECOVERED, INTERRUPTED = "deleted", "cancelled", "recovered", "interrupted"
RETRYING = "retrying"  # an attempt failed and the job will be tried again

log = logging.getLogger("dq.events")


def _fields(job_id: str, event: str, message: str, album_id: str | None) -> dict[Any, Any]:
    fields: dict[Any, Any] = {"job": job_id, "event": event, "at": f"{time.time():.3f}"}
    if message:
        fields["message"] = message
    if album_id:
        fields["album"] = album_id
    return fields


def record(
    connection: redis.Redis | redis.client.Pipeline,
    job_id: str,
    event: str,
    message: str = "",
    *,
    album_id: str | None = None,
) -> None:
    """Append one event (inside the caller's pipeline when given one) and log it."""
    connection.xadd(keys.EVENTS, _fields(job_id, event, message, album_id), maxlen=MAX_EVENTS, approximate=True)
    log.info("job %s %s%s", job_id, event, f": {message}" if message else "")


def read(connection: redis.Redis, job_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Events oldest first; for one job (or album) when `job_id` is given."""
    entries: Any = connection.xrevrange(keys.EVENTS, count=MAX_EVENTS if job_id else limit)
    events = []
    for entry_id, raw in entries or []:
        fields = {as_text(k): as_text(v) for k, v in raw.items()}
        if job_id and job_id not in (fields.get("job"), fields.get("album")):
            continue
        events.append(
            {
                "id": as_text(entry_id),
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(fields.get("at", "0")))),
                "job": fields.get("job"),
                "album": fields.get("album"),
                "event": fields.get("event"),
                "message": fields.get("message", ""),
            }
        )
        if len(events) >= limit:
            break
    events.reverse()
    return events
