"""How long what ended stays: DQ_KEEP_COMPLETED for completed jobs, DQ_KEEP_FAILED for failed.

Jobs carry their own TTLs (`result_ttl`, `failure_ttl`, set at enqueue), which RQ applies when
they end and its registry maintenance follows. What RQ does not know of is ours:

- an album record stays while any of its jobs is kept; once none is left (all expired) it goes;
- the event history keeps events as long as the longest of the two settings, so the trail
  of a failed job outlives the job by nothing more than that.

The supervisor's cleanup calls `apply` every RETENTION_INTERVAL seconds (it reads every album
record's job ids, which is too much for every round).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import redis

from config import Settings
from jobs import album, keys
from jobs.connection import reply_text
from jobs.tombstones import is_deleted

RETENTION_INTERVAL = 60.0  # seconds between two passes


@dataclass
class RetentionReport:
    albums_removed: list[str] = field(default_factory=list)
    events_trimmed: int = 0


def history_horizon(settings: Settings, now: float) -> float:
    """The unix time before which no event is kept."""
    return now - max(settings.keep_completed, settings.keep_failed)


def trim_history(connection: redis.Redis, settings: Settings, now: float) -> int:
    """Drop events older than the longest retention; how many went."""
    oldest_kept_ms = int(history_horizon(settings, now) * 1000)
    return cast(int, connection.xtrim(keys.EVENTS, minid=f"{max(0, oldest_kept_ms)}-0", approximate=False))


def prune_albums(connection: redis.Redis, settings: Settings, now: float) -> list[str]:
    """Remove album records none of whose jobs is kept any more; their ids.

    Only albums older than the shorter retention are looked at: a younger one's jobs cannot
    all have expired yet (a deletion removes its album itself).
    """
    horizon = now - min(settings.keep_completed, settings.keep_failed)
    candidates = [
        album.AlbumRecord.from_hash(album_id, raw)
        for album_id in (
            reply_text(member) or ""
            for member in cast(list[Any], connection.zrangebyscore(keys.ALBUMS, "-inf", horizon))
        )
        if (raw := cast(dict[Any, Any], connection.hgetall(keys.album(album_id))))
    ]
    removed = []
    for record in candidates:
        job_ids = record.job_ids
        alive = connection.exists(*(keys.job(job_id) for job_id in job_ids)) if job_ids else 0
        if alive or is_deleted(connection, record.id):  # a deletion in progress removes it itself
            continue
        album.remove_record(connection, record.id)
        removed.append(record.id)
    return removed


def apply(connection: redis.Redis, settings: Settings, now: float) -> RetentionReport:
    """One retention pass; `now` is unix time (Redis's, for agreement across hosts)."""
    return RetentionReport(
        albums_removed=prune_albums(connection, settings, now),
        events_trimmed=trim_history(connection, settings, now),
    )
