"""Ids as users type them: a full job or album id, or any unique prefix of at least MIN_PREFIX
characters (the progress bars show the first 8)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import redis

from jobs import album, keys
from jobs.connection import reply_text
from jobs.errors import InvalidRequest

MIN_PREFIX = 6
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


class AmbiguousId(InvalidRequest):
    """A prefix that more than one job or album id starts with."""

    def __init__(self, prefix: str, candidates: Sequence[str]) -> None:
        super().__init__(f"{prefix} is ambiguous: it could be {', '.join(sorted(candidates))}")
        self.prefix = prefix
        self.candidates = sorted(candidates)


def candidates(connection: redis.Redis, prefix: str, known: Iterable[str] = ()) -> set[str]:
    """Every job id (any state still kept), album id or id in `known` that starts with `prefix`."""
    pattern = keys.job(_GLOB_SPECIAL.sub(r"\\\1", prefix)) + "*"
    start = len(keys.job(""))
    found = {text[start:] for text in (reply_text(key) or "" for key in connection.scan_iter(pattern, count=1000))}
    # A job's other keys (`<prefix><id>:dependents`, ...) are not ids.
    found = {item for item in found if ":" not in item}
    found |= {item for item in album.album_ids(connection) if item.startswith(prefix)}
    found |= {item for item in known if item and item.startswith(prefix)}
    return found


def resolve(connection: redis.Redis, item_id: str, known: Iterable[str] = ()) -> str:
    """The full id `item_id` stands for; itself when it names nothing (the caller says not found).

    Raises AmbiguousId when a prefix matches more than one id.
    """
    known = list(known)
    if len(item_id) < MIN_PREFIX or connection.exists(keys.job(item_id), keys.album(item_id)) or item_id in known:
        return item_id
    found = candidates(connection, item_id, known)
    if len(found) > 1:
        raise AmbiguousId(item_id, sorted(found))
    return found.pop() if found else item_id


def resolve_all(connection: redis.Redis, ids: Iterable[str], known: Iterable[str] = ()) -> list[str]:
    known = list(known)
    return [resolve(connection, item_id, known) for item_id in ids]
