"""The audit trail in the supervisor's log: one line per job event, whoever recorded it.

Events are written to one Redis stream (`jobs.keys.EVENTS`, `jobs.history.record`) by every
process: workers, `bin/delete`, `bin/retry`, the API. The supervisor follows it
(`AuditFollower.poll`, called by the loop every tick) and logs each new entry once, so the
service's own log (what journalctl or supervisord keeps) holds the whole trail, deletions
made elsewhere included.

It starts at the stream's end (what was before it started was logged by the run before),
remembers the last id it logged, and reads at most `COUNT` entries a poll without blocking.
A trimmed stream is no trouble (XREAD returns what follows the id, whatever was cut); a
stream replaced by one with older ids (deleted and written again) is followed from its start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from rq.utils import as_text

from jobs import history, keys

COUNT = 500  # entries a poll reads at most; at 5 polls a second, 2,500 events a second
START = "0-0"

log = logging.getLogger("dq.events")


def stream_end(connection: redis.Redis) -> str:
    """The id of the stream's last entry ("$" resolved now), or 0-0 when it is empty."""
    entries: Any = connection.xrevrange(keys.EVENTS, count=1)
    return as_text(entries[0][0]) if entries else START


def _id_tuple(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def log_event(fields: dict[str, str]) -> None:
    job_id, event, message = fields.get("job", "?"), fields.get("event", "?"), fields.get("message", "")
    level = logging.WARNING if event == history.FAILED else logging.INFO
    extra = history.log_extra(job_id, event, message, fields.get("album"))
    log.log(level, history.LINE, job_id, event, f": {message}" if message else "", extra=extra)


@dataclass
class AuditFollower:
    connection: redis.Redis
    last_id: str = START
    count: int = COUNT

    @classmethod
    def at_end(cls, connection: redis.Redis, count: int = COUNT) -> AuditFollower:
        """A follower that logs what is recorded from now on."""
        return cls(connection, stream_end(connection), count)

    def poll(self) -> int:
        """Log the entries recorded since the last poll (at most `count`); how many."""
        answer: Any = self.connection.xread({keys.EVENTS: self.last_id}, count=self.count)
        entries = answer[0][1] if answer else []
        if not entries:
            self._check_replaced()
            return 0
        for entry_id, raw in entries:
            log_event({as_text(k): as_text(v) for k, v in raw.items()})
            self.last_id = as_text(entry_id)
        return len(entries)

    def drain(self, rounds: int = 20) -> int:
        """Poll until caught up (or `rounds` polls): what a stopping supervisor does last."""
        total = 0
        for _ in range(rounds):
            logged = self.poll()
            total += logged
            if logged < self.count:
                break
        return total

    def _check_replaced(self) -> None:
        """Nothing after our id: if the stream's last entry is older than it, the stream was
        deleted and written again; follow the new one from its start."""
        end = stream_end(self.connection)
        if end != START and _id_tuple(end) < _id_tuple(self.last_id):
            log.warning(
                "the event stream was replaced (last id %s, ours %s): following it from its start", end, self.last_id
            )
            self.last_id = START
