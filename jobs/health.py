"""Health: the supervisor heartbeat, and the checks `bin/health` and `/health` answer with.

Heartbeat: every supervisor writes `dq:heartbeat:<hostname>` (`jobs.keys.heartbeat`) at start
and every cleanup round, even when another supervisor holds the maintenance lock, with a TTL
of a few cleanup intervals (`jobs.published.publication_ttl`); the value is Redis's clock
(`TIME`) as a unix float, so hosts with skewed clocks agree on its age. A clean stop deletes
it. The hosts to look at are the ones that published their workers' settings
(`jobs.published`, field `<hostname>:<pid>`), so reading never scans the keyspace.

Checks, each `{"ok": bool, "detail": text}` plus its figures:

    redis      Redis answers                                      (fail)
    heartbeat  a heartbeat exists and none is older than
               HEARTBEAT_INTERVALS cleanup intervals              (fail)
    workers    at least DQ_WORKERS workers live                   (fail)
    queue      at most DQ_QUEUE_WARN jobs queued                  (warn)

`status` is `fail` when a fail check is not ok, else `warn` when a warn check is not ok, else
`ok`. The decision (`decide`) is a pure function of the figures `read_figures` collects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import redis

from config import Settings
from jobs import keys, messages
from jobs.connection import reply_text
from jobs.published import publication_ttl
from jobs.urls import redacted
from jobs.workers import live_workers, this_host

HEARTBEAT_INTERVALS = 3  # a heartbeat older than this many cleanup intervals fails the check
FAIL_CHECKS = ("redis", "heartbeat", "workers")
WARN_CHECKS = ("queue",)
OK, WARN, FAIL = "ok", "warn", "fail"
EXIT_OK, EXIT_FAIL, EXIT_REDIS = 0, 1, 3

# One round trip: the heartbeat is Redis's own time, written with its TTL (milliseconds).
_BEAT = """
local t = redis.call('TIME')
local stamp = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
redis.call('SET', KEYS[1], stamp, 'PX', ARGV[1])
return stamp
"""

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


# --- the heartbeat -----------------------------------------------------------------------------
def beat(connection: redis.Redis, settings: Settings, host: str | None = None) -> float:
    """Write (or refresh) this host's heartbeat; the Redis time it holds."""
    ttl_ms = max(1000, int(publication_ttl(settings) * 1000))
    stamp = connection.eval(_BEAT, 1, keys.heartbeat(host or this_host()), ttl_ms)
    return float(reply_text(stamp) or 0)


def stop(connection: redis.Redis, host: str | None = None) -> None:
    """Remove this host's heartbeat (a clean shutdown: no supervisor of ours runs)."""
    connection.delete(keys.heartbeat(host or this_host()))


def redis_time(reply: Any) -> float:
    seconds, microseconds = reply
    return float(seconds) + float(microseconds) / 1_000_000


def parse_beat(reply: Any) -> float | None:
    try:
        text = reply_text(reply)
        return float(text) if text else None
    except ValueError:
        return None


def supervisor_hosts(published_fields: Any) -> list[str]:
    """The hosts in `dq:published`'s field names (`<hostname>:<pid>`), each once."""
    hosts = {(reply_text(name) or "").rpartition(":")[0] for name in published_fields or ()}
    return sorted(host for host in hosts if host)


def beats_of(connection: redis.Redis, hosts: list[str]) -> dict[str, float | None]:
    if not hosts:
        return {}
    replies = cast(list[Any], connection.mget([keys.heartbeat(host) for host in hosts]))
    return {host: parse_beat(reply) for host, reply in zip(hosts, replies, strict=True)}


# --- the checks --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figures:
    """What the checks are decided on; `redis_error` set means nothing else could be read."""

    redis_url: str = ""
    redis_error: str | None = None
    now: float = 0.0  # Redis time
    beats: dict[str, float | None] = field(default_factory=dict)  # host → its heartbeat (Redis time)
    live_workers: int = 0
    queued: int = 0


def read_figures(connection: redis.Redis, settings: Settings) -> Figures:
    """Read what the checks need (a few round trips); an unreachable Redis is a figure too."""
    url = redacted(settings.effective_redis_url)
    try:
        with connection.pipeline(transaction=False) as pipeline:
            pipeline.time()
            pipeline.hkeys(keys.PUBLISHED)
            pipeline.llen(keys.queue(settings.queue_name))
            now_reply, fields, queued = pipeline.execute()
        beats = beats_of(connection, supervisor_hosts(fields))
        workers = len(live_workers(connection, settings))
    except REDIS_ERRORS as error:
        return Figures(redis_url=url, redis_error=str(error) or type(error).__name__)
    return Figures(redis_url=url, now=redis_time(now_reply), beats=beats, live_workers=workers, queued=int(queued or 0))


def decide(figures: Figures, settings: Settings, now: float | None = None) -> dict[str, Any]:
    """The `/health` object for `figures`; `now` (unix time) defaults to the Redis time read."""
    if figures.redis_error is not None:
        unknown = {"ok": False, "detail": messages.HEALTH_NOT_CHECKED}
        checks: dict[str, dict[str, Any]] = {
            "redis": {"ok": False, "detail": messages.health_redis_down(figures.redis_url, figures.redis_error)},
            "heartbeat": dict(unknown),
            "workers": dict(unknown),
            "queue": dict(unknown),
        }
        return {"status": FAIL, "checks": checks}
    clock = figures.now if now is None else now
    limit = HEARTBEAT_INTERVALS * settings.cleanup_interval
    ages = {host: None if beat is None else round(max(0.0, clock - beat), 3) for host, beat in figures.beats.items()}
    beating = bool(ages) and all(age is not None and age <= limit for age in ages.values())
    checks = {
        "redis": {"ok": True, "detail": messages.health_redis_ok(figures.redis_url)},
        "heartbeat": {
            "ok": beating,
            "detail": messages.health_heartbeat(ages, limit) if ages else messages.HEALTH_NO_HEARTBEAT,
            "age_seconds": ages,
            "limit_seconds": limit,
        },
        "workers": {
            "ok": figures.live_workers >= settings.workers,
            "detail": messages.health_workers(figures.live_workers, settings.workers),
            "live": figures.live_workers,
            "expected": settings.workers,
        },
        "queue": {
            "ok": figures.queued <= settings.queue_warn,
            "detail": (
                messages.health_queue(figures.queued, settings.queue_warn)
                if figures.queued <= settings.queue_warn
                else messages.queue_long(figures.queued, settings.queue_warn)
            ),
            "queued": figures.queued,
            "warn_above": settings.queue_warn,
        },
    }
    return {"status": status_of(checks), "checks": checks}


def status_of(checks: dict[str, dict[str, Any]]) -> str:
    if any(not checks[name]["ok"] for name in FAIL_CHECKS if name in checks):
        return FAIL
    if any(not checks[name]["ok"] for name in WARN_CHECKS if name in checks):
        return WARN
    return OK


def check(connection: redis.Redis, settings: Settings, now: float | None = None) -> dict[str, Any]:
    """`{"status": "ok"|"warn"|"fail", "checks": {...}}`: what `/health` and `bin/health` answer."""
    return decide(read_figures(connection, settings), settings, now)


def exit_code(result: dict[str, Any]) -> int:
    """`bin/health`'s exit: 0 ok or warn, 1 fail, 3 Redis unreachable."""
    if not result["checks"]["redis"]["ok"]:
        return EXIT_REDIS
    return EXIT_FAIL if result["status"] == FAIL else EXIT_OK


def lines(result: dict[str, Any]) -> list[str]:
    """`bin/health`'s text: the status, then one line per check."""
    out = [f"status: {result['status']}"]
    for name, entry in result["checks"].items():
        level = OK if entry["ok"] else (WARN if name in WARN_CHECKS else FAIL)
        out.append(f"{level:<4} {name}: {entry['detail']}")
    return out
