"""Albums: many track jobs saved into one folder, with a state derived from their tracks.

An album is not one RQ job (20 lossless tracks can take longer than one job timeout) and
not an RQ `Group` either: a Group is an unordered set of job ids, and an album needs more
(its name and folder, its track order and titles, the playlist it came from, the playlist
entries that could not be used). So an album is a small record in Redis next to ordinary
track jobs, each with its own timeout, run by whichever worker is free:

    dq:album:<album id>   hash: name, folder, url, source, created_at, playlist_job,
                          tracks (JSON [{id, url, title, position}]), invalid (JSON [...])
    dq:albums             sorted set of album ids, scored by creation time

(key names: `jobs.keys.album`, `jobs.keys.ALBUMS`). This module is the record;
`jobs.naming` names album folders and track files, `jobs.enqueue` enqueues albums,
`jobs.views` derives their state. Each track job carries `album_id` in its kwargs and
meta. An album made from a playlist starts with one playlist job
(`jobs.playlist.fetch_playlist`) that fetches and parses the playlist in a worker, then
adds the tracks to the record and the queue in one transaction.

Album states: queued, processing, completed (every track completed), failed (every track
failed, or the playlist could not be used), partial (some failed, the rest completed).
An album whose jobs have all expired or been deleted is dropped from the index when listed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from rq.utils import as_text

from jobs import keys

ALBUM_ID_PREFIX = "album-"
SOURCE_TRACKS, SOURCE_PLAYLIST = "tracks", "playlist"


@dataclass(frozen=True)
class AlbumTrack:
    """One entry of an album, in list order; `title` names the file (`NN - Title.ext`)."""

    url: str
    title: str | None = None
    position: int = 0


@dataclass(frozen=True)
class InvalidEntry:
    """A playlist entry that could not become a track; it counts as a failed track."""

    line: int
    entry: str
    error: str
    position: int = 0
    title: str | None = None


@dataclass
class AlbumRecord:
    id: str
    name: str
    folder: str  # relative to the download dir: <dest>/<name>
    source: str
    created_at: float
    url: str | None = None
    playlist_job: str | None = None
    tracks: list[dict[str, Any]] = field(default_factory=list)  # {id, url, title, position}
    invalid: list[dict[str, Any]] = field(default_factory=list)  # {line, entry, error, position, title}

    @property
    def job_ids(self) -> list[str]:
        """Every job of the album: the playlist job (if any) first, then the tracks in order."""
        ids = [self.playlist_job] if self.playlist_job else []
        return ids + [track["id"] for track in self.tracks]

    def to_hash(self) -> dict[Any, Any]:
        return {
            "name": self.name,
            "folder": self.folder,
            "source": self.source,
            "created_at": f"{self.created_at:.6f}",
            "url": self.url or "",
            "playlist_job": self.playlist_job or "",
            "tracks": json.dumps(self.tracks),
            "invalid": json.dumps(self.invalid),
        }

    @classmethod
    def from_hash(cls, album_id: str, raw: dict[Any, Any]) -> AlbumRecord:
        fields = {as_text(key): as_text(value) for key, value in raw.items()}
        return cls(
            id=album_id,
            name=fields.get("name", ""),
            folder=fields.get("folder", ""),
            source=fields.get("source", SOURCE_TRACKS),
            created_at=float(fields.get("created_at") or 0),
            url=fields.get("url") or None,
            playlist_job=fields.get("playlist_job") or None,
            tracks=json.loads(fields.get("tracks") or "[]"),
            invalid=json.loads(fields.get("invalid") or "[]"),
        )


def new_album_id() -> str:
    return ALBUM_ID_PREFIX + uuid.uuid4().hex[:16]


def load(connection: redis.Redis, album_id: str) -> AlbumRecord | None:
    raw = cast(dict[Any, Any], connection.hgetall(keys.album(album_id)))
    return AlbumRecord.from_hash(album_id, raw) if raw else None


def exists(connection: redis.Redis, album_id: str) -> bool:
    return bool(connection.exists(keys.album(album_id)))


def remove_record(connection: redis.Redis | redis.client.Pipeline, album_id: str) -> None:
    connection.delete(keys.album(album_id))
    connection.zrem(keys.ALBUMS, album_id)


def album_ids(connection: redis.Redis) -> list[str]:
    return [as_text(member) for member in cast(list[bytes], connection.zrange(keys.ALBUMS, 0, -1))]
