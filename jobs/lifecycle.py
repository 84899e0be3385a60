"""Job state changes that RQ alone gets wrong: writes that must not resurrect a deleted job.

A deletion first sets a tombstone (`dq:deleted:<id>`), then stops the download, then removes
the job's keys. Every write from a running download checks the tombstone and the job key
in one Lua call, so nothing a horse does after the deletion began can recreate the job.
"""

from __future__ import annotations

import redis

from config import CANCELLED_MESSAGE
from jobs.errors import DownloadError

TOMBSTONE_PREFIX = "dq:deleted:"
TOMBSTONE_TTL = 24 * 3600
JOB_KEY_PREFIX = "rq:job:"

_WRITE_META_IF_ALIVE = """
if redis.call('exists', KEYS[2]) == 1 or redis.call('exists', KEYS[1]) == 0 then
  return 0
end
redis.call('hset', KEYS[1], 'meta', ARGV[1])
return 1
"""


class JobDeleted(DownloadError):
    """The job was deleted while it ran; the download stops and nothing of it is written."""

    def __init__(self, job_id: str) -> None:
        super().__init__(CANCELLED_MESSAGE)
        self.job_id = job_id


def tombstone_key(job_id: str) -> str:
    return TOMBSTONE_PREFIX + job_id


def is_deleted(connection: redis.Redis, job_id: str) -> bool:
    return bool(connection.exists(tombstone_key(job_id)))


def write_meta_if_alive(connection: redis.Redis, job_id: str, meta: bytes) -> bool:
    """Store the job's meta unless it was deleted; False means: stop, the job is gone."""
    written = connection.eval(
        _WRITE_META_IF_ALIVE, 2, JOB_KEY_PREFIX + job_id, tombstone_key(job_id), meta
    )
    return bool(written)


FAILURE_REASON_PREFIX = "dq:reason:"
FAILURE_REASON_TTL = 3600


def set_failure_reason(connection: redis.Redis, job_id: str, message: str) -> None:
    """Say why a horse is about to be killed, so whoever records the failure uses this text.

    The supervisor sets it before killing a horse (shutdown grace, timeout backstop,
    recovery); the worker parent, which sees its horse die, records it instead of RQ's
    generic 'Work-horse terminated unexpectedly'.
    """
    connection.set(FAILURE_REASON_PREFIX + job_id, message, ex=FAILURE_REASON_TTL)


def failure_reason(connection: redis.Redis, job_id: str) -> str | None:
    value = connection.get(FAILURE_REASON_PREFIX + job_id)
    return value.decode() if isinstance(value, bytes) else value
