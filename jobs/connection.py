"""The Redis connection every command, worker and test uses."""

from __future__ import annotations

from typing import Any

import redis
from rq.serializers import JSONSerializer

from config import Settings

SERIALIZER = JSONSerializer
SERIALIZER_PATH = "rq.serializers.JSONSerializer"


def reply_text(value: Any) -> str | None:
    """A Redis reply field as text; None stays None (a missing field or key)."""
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class RedisUnavailable(RuntimeError):
    """Redis did not answer; the CLI turns this into exit 3."""


def connect(settings: Settings, *, check: bool = True) -> redis.Redis:
    url = settings.effective_redis_url
    connection = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
    if check:
        try:
            connection.ping()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as error:
            hint = (
                "start bin/up, or set REDIS_URL to a running server"
                if settings.embedded_redis
                else "check REDIS_URL and that the server is running"
            )
            raise RedisUnavailable(f"Redis is not reachable at {url} ({error}); {hint}") from None
    return connection
