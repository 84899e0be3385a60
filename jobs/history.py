"""The event history: every state change of every job, kept after the job itself is gone.

Events go to one capped Redis stream (`jobs.keys.EVENTS`), so a deleted or expired job still
has an audit trail (`bin/jobs --history [ID]`). The supervisor follows the stream and logs one
line per event (`supervisor.audit`), whichever process recorded it; the recording process
logs it at DEBUG only, so the service's log holds each event once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis
from rq.utils import as_text

from jobs import keys

MAX_EVENTS = 100_000  # approximate cap (XADD MAXLEN ~)

ENQUEUED, STARTED, COMPLETED, FAILED = "enqueued", "started", "completed", "failed"
DELETED, CANCELLED, RECOVERED, INTERRUPTED = "deleted", "cancelled", "recovered", "interrupted"
RETRYING = "retrying"  # an attempt failed and the job will be tried again
ERROR_EVENTS = (FAILED, RETRYING)  # their message is the error
LINE = "job %s %s%s"  # an event as a log line: `job <id> <event>[: <message>]`

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
    """Append one event (inside the caller's pipeline when given one); logged at DEBUG here,
    at INFO by the supervisor that follows the stream."""
    connection.xadd(keys.EVENTS, _fields(job_id, event, message, album_id), maxlen=MAX_EVENTS, approximate=True)
    log.debug(LINE, job_id, event, f": {message}" if message else "", extra=log_extra(job_id, event, message, album_id))


# A batch of events of one kind, in one call: (job, message, album) per event.
_RECORD_MANY = """
local event, at, cap = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV, 3 do
  local fields = {'job', ARGV[i], 'event', event, 'at', at}
  if ARGV[i + 1] ~= '' then fields[#fields + 1] = 'message'; fields[#fields + 1] = ARGV[i + 1] end
  if ARGV[i + 2] ~= '' then fields[#fields + 1] = 'album'; fields[#fields + 1] = ARGV[i + 2] end
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', cap, '*', unpack(fields))
end
return (#ARGV - 3) / 3
"""


def record_many(
    connection: redis.Redis | redis.client.Pipeline, event: str, entries: Sequence[tuple[str, str, str | None]]
) -> None:
    """`record` for each (job id, message, album id), stored exactly as `record` stores them."""
    if not entries:
        return
    arguments: list[str | int] = [event, f"{time.time():.3f}", MAX_EVENTS]
    for job_id, message, album_id in entries:
        arguments += [job_id, message, album_id or ""]
    connection.eval(_RECORD_MANY, 1, keys.EVENTS, *arguments)
    if log.isEnabledFor(logging.DEBUG):
        for job_id, message, album_id in entries:
            suffix = f": {message}" if message else ""
            log.debug(LINE, job_id, event, suffix, extra=log_extra(job_id, event, message, album_id))


def log_extra(job_id: str, event: str, message: str, album_id: str | None) -> dict[str, str]:
    """An event's fields as a log record's `extra` (the JSON log's `event`, `job_id`, ...)."""
    extra = {"event": event, "job_id": job_id}
    if album_id:
        extra["album_id"] = album_id
    if message and event in ERROR_EVENTS:
        extra["error"] = message
    elif event == ENQUEUED and message.startswith(("http://", "https://")):
        extra["url"] = message  # recorded without credentials (jobs.enqueue)
    return extra


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
