"""How jobs read in a terminal and in pipes: names, sizes, progress, errors and user texts.

Pure functions of the view dicts that `jobs.views` builds (what `bin/jobs --json` prints).
`jobs.listing` orders and cuts the `bin/jobs` listing; `jobs.terminal` lays lines out with
rich. Everything shown is measured in terminal cells (a wide character takes two), and any
text cut to fit is marked with `…`: a name loses its folders from the left first, so the
file name stays; an error or a URL loses its end.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from rich.cells import cell_len, set_cell_size

from jobs.album import ALBUM_ID_PREFIX
from jobs.views import ENDED

ELLIPSIS = "…"
SHORT_ID = 8  # characters of a job id shown on a terminal (`bin/delete` takes unique prefixes)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# --- sizes and times ----------------------------------------------------------------------
def human_bytes(count: float | None) -> str:
    """`512 B`, `3.4 MiB`, `27.4 MiB`, `127 MiB`, `1.0 GiB`: three figures, at most four characters
    before the unit (from 1000 of a unit on, the next unit)."""
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 999.5 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" or abs(value) >= 99.95 else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def human_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def size_pair(done: float, total: float | None) -> str:
    """`1.7/4.0 MiB`, `512.0 KiB/4.0 MiB`, or just the bytes done when the total is unknown."""
    if total is None:
        return human_bytes(done)
    first, second = human_bytes(done), human_bytes(total)
    number, _, unit = first.partition(" ")
    return f"{number}/{second}" if second.endswith(" " + unit) else f"{first}/{second}"


def epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --- what to call a job -----------------------------------------------------------------------
def clean(text: object) -> str:
    """Text safe to print: control characters (a decoded %1B, a newline) shown as `?`."""
    return _CONTROL.sub("?", str(text)) if text is not None else ""


def short_id(item_id: str) -> str:
    """The id as a terminal shows it: 8 characters, `album-` plus 8 for an album."""
    if item_id.startswith(ALBUM_ID_PREFIX):
        return item_id[: len(ALBUM_ID_PREFIX) + SHORT_ID]
    return item_id[:SHORT_ID]


def decoded_url(url: str | None) -> str:
    """A URL as people read it: percent-escapes decoded, credentials (`user:pass@`) left out."""
    if not url:
        return ""
    parts = urlsplit(url)
    if not parts.netloc:
        return clean(unquote(url, errors="replace"))
    host = parts.netloc.rsplit("@", 1)[-1]
    rest = parts.path + (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return clean(f"{parts.scheme}://{host}{unquote(rest, errors='replace')}")


def url_file_name(url: str | None) -> str:
    """What a URL calls its file: the last path segment, decoded (the host when there is none)."""
    if not url:
        return ""
    parts = urlsplit(url)
    name = unquote(parts.path.rstrip("/").rsplit("/", 1)[-1], errors="replace")
    return clean(name or parts.hostname or url)


def file_name(view: dict[str, Any]) -> str:
    """The saved file's name once known (`file`, `path`), else what the URL calls it."""
    saved = view.get("file") or view.get("path")
    if saved:
        return clean(PurePosixPath(str(saved)).name)
    return url_file_name(view.get("url"))


def name_of(view: dict[str, Any], *, in_album: bool = False) -> str:
    """`<dest>/<file>` for a track (just the file under its album), the folder for an album."""
    if view.get("kind") == "album":
        return clean(view.get("dest") or view.get("name") or "")
    name = file_name(view)
    dest = clean(view.get("dest") or "")
    return f"{dest}/{name}" if dest and not in_album else name


# --- fitting text into cells ----------------------------------------------------------------------
def fit_end(text: str, width: int) -> str:
    """`text` in at most `width` cells, its end cut and marked with `…`."""
    if cell_len(text) <= width:
        return text
    return set_cell_size(text, width - 1) + ELLIPSIS if width > 0 else ""


def fit_start(text: str, width: int) -> str:
    """`text` in at most `width` cells, its start cut and marked with `…` (the end kept whole)."""
    if cell_len(text) <= width:
        return text
    if width <= 0:
        return ""
    kept, used = [], 0
    for char in reversed(text):
        used += cell_len(char)
        if used > width - 1:
            break
        kept.append(char)
    return ELLIPSIS + "".join(reversed(kept))


def fit_name(name: str, width: int) -> str:
    """A path in `width` cells: folders cut from the left first, so the file name stays whole;
    a file name too long even alone keeps its start."""
    if cell_len(name) <= width:
        return name
    file = name.rsplit("/", 1)[-1]
    if cell_len(file) < width:
        return fit_start(name, width)
    return set_cell_size(file, width - 1) + ELLIPSIS if width > 0 else ""  # marked, even when it would just fit


# --- progress -------------------------------------------------------------------------------------
def _progress(view: dict[str, Any]) -> tuple[int, int | None, int | None]:
    progress = view.get("progress") or {}
    return int(progress.get("bytes_done") or 0), progress.get("bytes_total"), progress.get("rate")


def fraction(view: dict[str, Any], tracks: Sequence[dict[str, Any]] = ()) -> float | None:
    """How far a job is, 0..1; None when nothing tells (a download without Content-Length).

    An album: by bytes when every track's size is known, else by tracks, a running track
    counting as the part of it done (`tracks` are its track views, when the caller has them).
    """
    state = view.get("state")
    if state == "completed" or (state in ENDED and view.get("kind") == "album"):
        return 1.0
    if view.get("kind") == "album":
        done, total, _ = _progress(view)
        if total:
            return min(1.0, done / total)
        counts = view.get("tracks") or {}
        if not counts.get("total"):
            return 0.0
        running = sum(fraction(track) or 0.0 for track in tracks if track.get("state") == "processing")
        return min(1.0, (counts.get("completed", 0) + counts.get("failed", 0) + running) / counts["total"])
    done, total, _ = _progress(view)
    if state == "queued":
        return 0.0
    if not total:
        return None if state == "processing" else 0.0
    return min(1.0, done / total)  # a failed download: as far as it got


def percent(value: float | None) -> str:
    return f"{value * 100:3.0f}%" if value is not None else "  ?%"


def progress_text(view: dict[str, Any]) -> str:
    """`1.0 MiB/4.0 MiB 512.0 KiB/s ETA 00:06`: the plain lines' progress."""
    done, total, rate = _progress(view)
    text = f"{human_bytes(done)}/{human_bytes(total)}"
    if view.get("state") == "processing":
        if rate:
            text += f" {human_bytes(rate)}/s"
        if rate and total:
            text += f" ETA {human_duration((total - done) / rate)}"
    return text


def track_counts(view: dict[str, Any]) -> str:
    """`3/5 tracks`, `3/5 tracks, 1 failed`: an album's tracks done."""
    counts = view.get("tracks") or {}
    text = f"{counts.get('completed', 0)}/{counts.get('total', 0)} tracks"
    return text + (f", {counts['failed']} failed" if counts.get("failed") else "")


def transfer_text(view: dict[str, Any], *, rate: bool = True, eta: bool = True) -> str:
    """Compact progress for a terminal: `1.7/4.0 MiB 1.2 MiB/s ETA 00:06`, `4.0 MiB`, or an
    album's `3/5 tracks 74.2 MiB` (its combined bytes); empty for a job not started."""
    done, total, speed = _progress(view)
    state = view.get("state")
    if view.get("kind") == "album":
        if not (view.get("tracks") or {}).get("total") and state in ("queued", "processing"):
            return "reading the playlist" if state == "processing" else "queued"
        size = size_pair(done, total) if state == "processing" else human_bytes(done)
        text = track_counts(view) + (f" {size}" if done else "")
        return text + (f" {human_bytes(speed)}/s" if rate and speed and state == "processing" else "")
    if state == "completed":
        return human_bytes(done)
    if state != "processing":
        return size_pair(done, total) if done else ""
    text = size_pair(done, total)
    if rate and speed:
        text += f" {human_bytes(speed)}/s"
        if eta and total:
            text += f" ETA {human_duration((total - done) / speed)}"
    return text


# --- states, errors, retries -------------------------------------------------------------------
def status_word(view: dict[str, Any]) -> str:
    if view.get("kind") == "album" and view.get("tracks"):
        tracks = view["tracks"]
        return f"{view['state']} ({tracks['completed']}/{tracks['total']} done, {tracks['failed']} failed)"
    return str(view.get("state"))


def error_text(view: dict[str, Any]) -> str:
    """The job's one-line error, with `(after N attempts)` once retries made more than one."""
    error = clean(view.get("error") or "")
    attempts = view.get("attempts")
    if error and isinstance(attempts, int) and attempts > 1:
        error += f" (after {attempts} attempts)"
    return error


def retry_text(view: dict[str, Any], now: float | None = None) -> str:
    """`retry 2/4 in 1s: HTTP 503 Service Unavailable` for a queued job waiting for its next attempt.

    The place for retry state in the listing (DESIGN.md, wave 2): it reads the fields the
    contract gives a retried job's view (`attempts` made so far, `max_attempts`,
    `next_attempt_at`, `last_error`) and says nothing for a view without them.
    """
    attempts, most = view.get("attempts"), view.get("max_attempts")
    if view.get("state") != "queued" or not isinstance(attempts, int) or attempts < 1 or not most:
        return ""
    text = f"retry {attempts + 1}/{most}"
    due = epoch(view.get("next_attempt_at"))
    if due is not None:
        text += f" in {max(0, math.ceil(due - (time.time() if now is None else now)))}s"
    return text + (f": {clean(view['last_error'])}" if view.get("last_error") else "")


def failed_track_lines(view: dict[str, Any], *, short: bool = False, most: int | None = None) -> list[str]:
    """`failed track <id>: <title or file>: <error>` for each failed track of an album; `short`:
    `<short id> <title or file>: <error>`, for a terminal (it shows them in red under the album)."""
    failed = view.get("failed_tracks") or []
    lines = []
    for track in failed[:most] if most is not None else failed:
        label = clean(track.get("title") or "") or url_file_name(track.get("url")) or ""
        error = clean(track.get("error") or "failed")
        if short:
            lines.append(f"{short_id(track['id'])} {label}: {error}" if track.get("id") else f"{label}: {error}")
            continue
        where = track["id"] if track.get("id") else "not enqueued"
        lines.append(f"failed track {where}: {label}: {error}")
    if most is not None and len(failed) > most:
        lines.append(f"… {len(failed) - most} more failed tracks (bin/jobs --json lists them all)")
    return lines


def details(view: dict[str, Any], *, short: bool = True, most_tracks: int | None = 3, tracks: bool = True) -> list[str]:
    """The lines a terminal shows under a job: its error, its retry, an album's failed tracks
    (with `tracks=False` only the entries that never became a job: their tracks have rows)."""
    lines = []
    retry = retry_text(view)
    if retry:
        lines.append(retry)
    if view.get("kind") == "album":
        failed = view.get("failed_tracks") or []
        if view.get("error") and not failed:
            lines.append(error_text(view))  # a playlist that could not be used
        shown = failed if tracks else [track for track in failed if not track.get("id")]
        lines += failed_track_lines({"failed_tracks": shown}, short=short, most=most_tracks)
    elif view.get("error"):
        lines.append(error_text(view))
    return lines


# --- plain lines: pipes, logs, `bin/jobs` without a terminal -------------------------------------
def line(view: dict[str, Any]) -> str:
    """One plain line per job, nothing cut: id, state, name, progress, decoded URL, error."""
    name = name_of(view)
    parts = [view["id"], status_word(view), name]
    if view.get("state") in ("processing", "completed"):
        parts.append(progress_text(view))
    url = decoded_url(view.get("url"))
    if url and url != name:
        parts.append(url)
    retry = retry_text(view)
    if retry:
        parts.append(retry)
    if view.get("error"):
        parts.append(f"error: {error_text(view)}")
    return "  ".join(str(part) for part in parts if part != "")


def plain_listing(views: Sequence[dict[str, Any]]) -> str:
    """The plain listing, each album's failed tracks and their errors under it."""
    if not views:
        return "no jobs"
    lines = []
    for view in views:
        lines.append(line(view))
        if view.get("kind") == "album":
            lines += ["    " + text for text in failed_track_lines(view)]
    return "\n".join(lines)


# --- user texts of the terminal views -------------------------------------------------------------
def totals_text(counts: dict[str, int], albums: int) -> str:
    """`2 processing · 5 queued · 230 completed · 3 failed · 2 albums`: every job kept."""
    parts = [f"{counts.get(state, 0)} {state}" for state in ("processing", "queued", "completed", "failed")]
    return " · ".join(parts + ([f"{albums} album{'s' if albums != 1 else ''}"] if albums else []))


def shown_text(shown: int, total: int) -> str:
    return f"showing {shown} of {total} (--limit N for more, --all for every one)"


def stopped_waiting(ids: Sequence[str]) -> str:
    """What Ctrl-C during `--wait` says: the downloads go on, and how to stop them."""
    if not ids:
        return "Stopped waiting."
    return (
        "Stopped waiting: the downloads go on in the queue (bin/jobs shows them).\n"
        f"To stop them: bin/delete {' '.join(ids)}"
    )


def deleted_while_waiting(count: int) -> str:
    return f"{count} job(s) were deleted while waiting"
