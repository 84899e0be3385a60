"""The playlist job: fetch an M3U/M3U8 playlist in a worker and enqueue its tracks as an album.

`bin/enqueue --playlist URL` only records the album and queues this job, so it returns at
once; fetching (with the same request timeout and checks as a download) and parsing happen
here. Parsing follows extended M3U as players read it:

- blank lines and `#` lines are skipped; `#EXTINF:<seconds>,<title>` names the next entry;
- entries are URLs or paths, resolved against the playlist's (final, after redirects) URL,
  with spaces and other unsafe characters percent-encoded (`Artist - Song.flac` works);
- an entry that is not a usable http(s) URL is kept as an invalid entry (it shows as a
  failed track with its line number) and does not stop the others.

A playlist that cannot be fetched, is not a playlist, or has no usable entry fails this
job with one clear line (`Playlist could not be fetched: HTTP 404 Not Found`, ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin

import urllib3.exceptions
from rq.job import get_current_job

from config import Settings
from jobs import messages
from jobs.album import AlbumTrack, InvalidEntry
from jobs.enqueue import AlbumGone, add_playlist_tracks
from jobs.errors import DownloadError, DownloadTimeout, InvalidRequest, JobDeleted, PlaylistError
from jobs.http import LOW_SPEED_LIMIT, StallGuard, new_session, open_response
from jobs.naming import number_width
from jobs.tombstones import is_deleted
from jobs.urls import check_url

MAX_PLAYLIST_BYTES = 10_000_000  # the contract's 10 MB
MAX_PLAYLIST_ENTRIES = 10_000  # one album; more would be a flood, not a playlist
READ_BYTES = 64 * 1024
EXTINF = "#EXTINF:"
# Characters left as they are when an entry is percent-encoded: URL syntax and existing escapes.
URL_SAFE = "/:?#[]@!$&'()*+,;=%~"


@dataclass(frozen=True)
class PlaylistEntry:
    line: int  # 1-based line number in the playlist
    text: str  # the entry as written
    title: str | None
    url: str | None  # resolved and checked; None when unusable
    error: str | None = None


def _title(extinf_line: str) -> str | None:
    """The title of `#EXTINF:<duration>[ attributes],<title>`."""
    _, comma, title = extinf_line[len(EXTINF) :].partition(",")
    title = title.strip()
    return title if comma and title else None


def resolve_entry(text: str, base_url: str) -> str:
    """An entry as an absolute, checked http(s) URL; InvalidRequest when it cannot be one."""
    if "\\" in text:
        raise InvalidRequest(f"not a URL (looks like a local path): {text!r}")
    try:
        url = urljoin(base_url, quote(text, safe=URL_SAFE))
    except ValueError as error:  # urljoin parses too: "a://[" is an unclosed IPv6 host
        raise InvalidRequest(f"malformed URL {text[:200]!r}: {error}") from None
    return check_url(url)


def parse_m3u(text: str, base_url: str) -> list[PlaylistEntry]:
    """Every entry of an M3U/M3U8 playlist in order, usable or not."""
    entries = []
    title: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line.upper().startswith(EXTINF):
                title = _title(line)
            continue
        try:
            entries.append(PlaylistEntry(number, line, title, resolve_entry(line, base_url)))
        except InvalidRequest as error:
            entries.append(PlaylistEntry(number, line, title, None, str(error)))
        title = None  # an #EXTINF names only the entry right after it
    return entries


def decode_playlist(body: bytes) -> str:
    """M3U8 is UTF-8 (a BOM is dropped); a plain .m3u may be Latin-1."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("latin-1")


def fetch_playlist_text(url: str, settings: Settings) -> tuple[str, str]:
    """(text, final URL) of the playlist; PlaylistError with the reason when it cannot be had."""
    with new_session(settings.allow_private_networks) as session:
        try:
            response = open_response(session, url, request_timeout=settings.request_timeout)
        except DownloadError as error:
            raise PlaylistError(messages.playlist_unfetchable(error)) from error
        with response:
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type == "text/html":
                raise PlaylistError(messages.playlist_is_web_page(content_type))
            body = bytearray()
            guard = StallGuard(settings.request_timeout, time.monotonic, LOW_SPEED_LIMIT)
            while True:
                try:
                    chunk = response.raw.read1(READ_BYTES, decode_content=True)
                    if chunk:
                        guard.add(len(chunk))
                except (urllib3.exceptions.ReadTimeoutError, TimeoutError, DownloadTimeout) as error:
                    timeout = messages.download_timeout(settings.request_timeout)
                    raise PlaylistError(messages.playlist_unfetchable(timeout)) from error
                except urllib3.exceptions.HTTPError as error:
                    raise PlaylistError(messages.playlist_unfetchable(type(error).__name__)) from error
                if not chunk:
                    break
                body += chunk
                if len(body) > MAX_PLAYLIST_BYTES:
                    raise PlaylistError(messages.playlist_too_large(MAX_PLAYLIST_BYTES))
            final_url = response.url or url
    text = decode_playlist(bytes(body))
    if text.lstrip().startswith("<"):
        raise PlaylistError(messages.PLAYLIST_IS_MARKUP)
    return text, final_url


def fetch_playlist(album_id: str, url: str) -> dict[str, Any]:
    """The RQ job: fetch and parse the playlist, then enqueue its tracks into the album."""
    settings = Settings.from_env()
    job = get_current_job()
    if job is None:
        raise PlaylistError("the playlist job must run in a worker")
    if is_deleted(job.connection, job.id) or is_deleted(job.connection, album_id):
        raise JobDeleted(job.id)
    text, final_url = fetch_playlist_text(url, settings)
    entries = parse_m3u(text, final_url)
    if len(entries) > MAX_PLAYLIST_ENTRIES:
        raise PlaylistError(messages.playlist_too_many(len(entries), MAX_PLAYLIST_ENTRIES))
    usable = [entry for entry in entries if entry.url is not None]
    if not entries:
        raise PlaylistError(messages.PLAYLIST_EMPTY)
    if not usable:
        first = entries[0]
        raise PlaylistError(messages.playlist_unusable(len(entries), first.line, first.error))
    tracks = [
        AlbumTrack(url=entry.url, title=entry.title, position=position)
        for position, entry in enumerate(entries, start=1)
        if entry.url is not None
    ]
    invalid = [
        InvalidEntry(
            line=entry.line, entry=entry.text, error=entry.error or "unusable", position=position, title=entry.title
        )
        for position, entry in enumerate(entries, start=1)
        if entry.url is None
    ]
    try:
        track_ids = add_playlist_tracks(job.connection, settings, album_id, tracks, invalid, number_width(len(entries)))
    except AlbumGone:
        raise JobDeleted(job.id) from None
    return {"tracks": len(track_ids), "invalid": len(invalid), "track_ids": track_ids}
