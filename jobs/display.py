"""How jobs look in a terminal: tables, progress bars with rate and ETA, plain lines for pipes."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

BAR_WIDTH = 24


def human_bytes(count: float | None) -> str:
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def human_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def progress_text(view: dict[str, Any]) -> str:
    progress = view.get("progress") or {}
    done = progress.get("bytes_done") or 0
    total = progress.get("bytes_total")
    rate = progress.get("rate")
    text = f"{human_bytes(done)}/{human_bytes(total)}"
    if view.get("state") == "processing":
        if rate:
            text += f" {human_bytes(rate)}/s"
        if rate and total:
            text += f" ETA {human_duration((total - done) / rate)}"
    return text


def bar(view: dict[str, Any], width: int = BAR_WIDTH) -> str:
    progress = view.get("progress") or {}
    done = progress.get("bytes_done") or 0
    total = progress.get("bytes_total")
    if view.get("state") == "completed":
        fraction = 1.0
    elif total:
        fraction = min(1.0, done / total)
    else:
        fraction = 0.0
    filled = int(fraction * width)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {fraction * 100:5.1f}%"


def status_word(view: dict[str, Any]) -> str:
    if view.get("kind") == "album" and view.get("tracks"):
        tracks = view["tracks"]
        return f"{view['state']} ({tracks['completed']}/{tracks['total']} done, {tracks['failed']} failed)"
    return str(view.get("state"))


def line(view: dict[str, Any]) -> str:
    """One plain line per job: for pipes, logs and `bin/jobs` without a terminal."""
    parts = [view["id"], status_word(view), view.get("url") or view.get("name") or ""]
    if view.get("state") in ("processing", "completed"):
        parts.append(progress_text(view))
    if view.get("error"):
        parts.append(f"error: {view['error']}")
    return "  ".join(str(part) for part in parts if part != "")


def table(views: Sequence[dict[str, Any]]) -> str:
    if not views:
        return "no jobs"
    return "\n".join(line(view) for view in views)


def bars(views: Sequence[dict[str, Any]]) -> str:
    """A block of progress bars, one per job, fitted to the terminal width."""
    width = shutil.get_terminal_size((100, 20)).columns
    rows = []
    for view in views:
        dest = view.get("dest") or ""
        label = (dest + "/" if dest else "") + unquote(urlsplit(view.get("url") or "").path.rsplit("/", 1)[-1])
        text = f"{view['id'][:8]} {bar(view)} {progress_text(view)} {status_word(view)}"
        if view.get("error"):
            text += f": {view['error']}"
        room = width - len(text) - 1
        if room > 8:
            text += " " + label[-room:]
        rows.append(text[:width])
    return "\n".join(rows)
