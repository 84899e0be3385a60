"""Tombstones: what keeps a deleted job deleted while a download may still be writing.

A deletion first sets a tombstone, then stops the download, then removes the job's keys.
Every write from a running download checks the tombstone and the job key in one Lua call,
so nothing a running job does after the deletion began can recreate the job.

Tombstones are members of one sorted set (`jobs.keys.TOMBSTONES`, score: when the deletion
began), not keys named after the job: once a job is deleted, no Redis key name contains its
id (`redis-cli --scan --pattern '*<id>*'` finds nothing), while a job that starts late or
wakes up late still finds the tombstone. Entries older than TOMBSTONE_TTL are pruned.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis

from jobs import keys

TOMBSTONE_TTL = 24 * 3600  # far longer than any download can outlive its deletion (job timeout + 90 s)

_WRITE_META_IF_ALIVE = """
if redis.call('zscore', KEYS[2], ARGV[2]) or redis.call('exists', KEYS[1]) == 0 then
  return 0
end
redis.call('hset', KEYS[1], 'meta', ARGV[1])
return 1
"""


def mark_deleted(
    connection: redis.Redis | redis.client.Pipeline, job_ids: Iterable[str], now: float | None = None
) -> None:
    """Set tombstones for these job (or album) ids, pruning the ones past their TTL."""
    stamp = time.time() if now is None else now
    connection.zadd(keys.TOMBSTONES, {job_id: stamp for job_id in job_ids})
    connection.zremrangebyscore(keys.TOMBSTONES, "-inf", stamp - TOMBSTONE_TTL)
    connection.expire(keys.TOMBSTONES, TOMBSTONE_TTL)


def is_deleted(connection: redis.Redis | redis.client.Pipeline, job_id: str) -> bool:
    return connection.zscore(keys.TOMBSTONES, job_id) is not None


def write_meta_if_alive(connection: redis.Redis, job_id: str, meta: bytes) -> bool:
    """Store the job's meta unless it was deleted; False means: stop, the job is gone."""
    return bool(queue_meta_if_alive(connection, job_id, meta))


def queue_meta_if_alive(connection: redis.Redis | redis.client.Pipeline, job_id: str, meta: bytes) -> Any:
    """`write_meta_if_alive` in the caller's pipeline: its reply (1 written, 0 gone) comes with the rest."""
    return connection.eval(_WRITE_META_IF_ALIVE, 2, keys.job(job_id), keys.TOMBSTONES, meta, job_id)
