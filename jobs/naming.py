"""What albums and their tracks are called on disk: one safe folder, `NN - Title.ext` files."""

from __future__ import annotations

import os

from jobs.errors import InvalidRequest
from jobs.paths import check_dest, filename_from_url, sanitize_filename

DEFAULT_PLAYLIST_NAME = "playlist"


def album_name(name: str) -> str:
    """The album's folder name: one safe path component, or InvalidRequest."""
    clean = sanitize_filename(name)
    if not clean:
        raise InvalidRequest(f"--album must name a folder, got {name!r}")
    return clean


def playlist_album_name(url: str) -> str:
    """A playlist album's default folder: the playlist's file name without its extension."""
    stem = os.path.splitext(filename_from_url(url))[0]
    return sanitize_filename(stem) or DEFAULT_PLAYLIST_NAME


def album_folder(dest: str, name: str) -> str:
    dest = check_dest(dest)
    return f"{dest}/{name}" if dest else name


def number_width(count: int) -> int:
    return max(2, len(str(count)))


def track_stem(position: int, width: int, title: str | None) -> str | None:
    """`NN - Title` when a title is known (the engine adds the extension), else None."""
    if not title or not title.strip():
        return None
    return sanitize_filename(f"{position:0{width}d} - {title.strip()}") or None
