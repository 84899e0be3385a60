"""What running supervisors tell the commands that enqueue: the setting their workers use.

A URL on a private network is downloaded only if the workers allow it
(`DQ_ALLOW_PRIVATE_NETWORKS`), and the workers read their own environment, not the enqueuing
shell's. So each supervisor publishes its workers' setting in Redis, and `bin/enqueue` (and
the API) refuse at once what the workers would refuse later:

    dq:published   hash (`jobs.keys.PUBLISHED`); field `<hostname>:<pid>` of a supervisor,
                   value JSON {"queue", "allow_private_networks", "expires_at"}

`expires_at` is by Redis's clock (`TIME`), so hosts with skewed clocks agree on it. A
supervisor writes its field at start and every cleanup round, with an expiry of a few cleanup
intervals (`publication_ttl`), drops expired fields and those of dead supervisors on its own
host, and removes its field on a clean shutdown.

Reading: the live publishers of the queue decide, a private URL passes only if every one of
them allows it; with no publisher (no supervisor runs), the enqueuing command's own setting.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import redis

from config import Settings
from jobs import keys, messages
from jobs.connection import reply_text
from jobs.errors import InvalidRequest
from jobs.urls import private_host
from jobs.workers import pid_alive, this_host

MIN_TTL = 30.0  # seconds; a publication outlives a few missed cleanup rounds
TTL_INTERVALS = 5  # cleanup intervals


@dataclass(frozen=True)
class Publication:
    publisher: str  # <hostname>:<pid>
    queue: str
    allow_private_networks: bool
    expires_at: float  # Redis time

    @property
    def host(self) -> str:
        return self.publisher.rpartition(":")[0]

    @property
    def pid(self) -> int | None:
        tail = self.publisher.rpartition(":")[2]
        return int(tail) if tail.isdigit() else None


@dataclass(frozen=True)
class PrivateNetworkPolicy:
    allowed: bool
    published: bool  # True: the running supervisors' setting; False: the command's own


def publisher_id(pid: int | None = None) -> str:
    return f"{this_host()}:{os.getpid() if pid is None else pid}"


def publication_ttl(settings: Settings) -> float:
    return max(MIN_TTL, TTL_INTERVALS * settings.cleanup_interval)


def _parse(field: Any, raw: Any) -> Publication | None:
    publisher = reply_text(field) or ""
    try:
        value = json.loads(reply_text(raw) or "")
        return Publication(
            publisher=publisher,
            queue=str(value["queue"]),
            allow_private_networks=bool(value["allow_private_networks"]),
            expires_at=float(value["expires_at"]),
        )
    except (ValueError, KeyError, TypeError):
        return None  # not ours to understand: treated as expired


def _read(connection: redis.Redis) -> tuple[list[Publication], list[str], float]:
    """Every publication still valid, the fields that are not, and Redis's time."""
    with connection.pipeline(transaction=False) as pipeline:
        pipeline.time()
        pipeline.hgetall(keys.PUBLISHED)
        (seconds, microseconds), raw = pipeline.execute()
    now = seconds + microseconds / 1_000_000
    valid, stale = [], []
    for field, value in cast(dict[Any, Any], raw).items():
        publication = _parse(field, value)
        if publication is None or publication.expires_at <= now:
            stale.append(reply_text(field) or "")
        else:
            valid.append(publication)
    return valid, stale, now


def publish(connection: redis.Redis, settings: Settings, publisher: str | None = None) -> None:
    """Write (or refresh) this supervisor's publication; drop expired ones and dead neighbours'."""
    publisher = publisher or publisher_id()
    valid, stale, now = _read(connection)
    host = this_host()
    stale += [
        p.publisher
        for p in valid
        if p.publisher != publisher and p.host == host and p.pid is not None and not pid_alive(p.pid)
    ]
    value = {
        "queue": settings.queue_name,
        "allow_private_networks": settings.allow_private_networks,
        "expires_at": round(now + publication_ttl(settings), 3),
    }
    with connection.pipeline(transaction=False) as pipeline:
        pipeline.hset(keys.PUBLISHED, publisher, json.dumps(value))
        if stale:
            pipeline.hdel(keys.PUBLISHED, *stale)
        pipeline.execute()


def withdraw(connection: redis.Redis, publisher: str | None = None) -> None:
    """Remove this supervisor's publication (on a clean shutdown)."""
    connection.hdel(keys.PUBLISHED, publisher or publisher_id())


def publications(connection: redis.Redis, queue_name: str) -> list[Publication]:
    """The live publications of the supervisors working on `queue_name`."""
    valid, _stale, _now = _read(connection)
    return [publication for publication in valid if publication.queue == queue_name]


def private_network_policy(connection: redis.Redis, settings: Settings) -> PrivateNetworkPolicy:
    """Whether the workers of `settings.queue_name` download from private networks."""
    live = publications(connection, settings.queue_name)
    if not live:
        return PrivateNetworkPolicy(settings.allow_private_networks, published=False)
    return PrivateNetworkPolicy(all(p.allow_private_networks for p in live), published=True)


def refuse_private_urls(connection: redis.Redis, settings: Settings, urls: Iterable[str]) -> None:
    """Raise InvalidRequest for the first URL whose host the workers would refuse as private.

    A host is refused when it is a private address literal, or a name that resolves only to
    private addresses; a name that does not resolve passes (its job fails with the DNS error).
    Each host is looked up once, however many URLs name it.
    """
    urls = list(urls)
    if not urls:
        return
    policy = private_network_policy(connection, settings)
    if policy.allowed:
        return
    seen: set[str] = set()
    for url in urls:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host in seen:
            continue
        seen.add(host)
        found = private_host(host, parts.port)
        if found is not None:
            address, literal = found
            raise InvalidRequest(
                messages.private_network_refused(host, address, literal=literal, published=policy.published)
            )
