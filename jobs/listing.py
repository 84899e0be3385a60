"""The `bin/jobs` listing read like a download manager's queue (pure, on view dicts).

Running jobs first, then queued ones (next to run first), then the finished ones, the most
recent first. On a terminal an album is one entry: its tracks are folded into its row, but
for the ones downloading right now, shown under it. `--state S` lists every job and album in
state S, album tracks too. `bin/jobs --json` is none of this: it prints every view as
`jobs.views.list_jobs` returns them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jobs import display
from jobs.views import PROCESSING, QUEUED

RUNNING, WAITING = (PROCESSING,), (QUEUED,)


@dataclass(frozen=True)
class Row:
    view: dict[str, Any]
    in_album: bool = False  # a track shown under its album's row
    tracks: tuple[dict[str, Any], ...] = ()  # an album's track views (for its progress)

    @property
    def details(self) -> list[str]:
        return display.details(self.view)

    @property
    def fraction(self) -> float | None:
        return display.fraction(self.view, self.tracks)


@dataclass
class Listing:
    rows: list[Row] = field(default_factory=list)  # what is shown, in order
    entries: int = 0  # entries to show before the limit
    shown: int = 0  # entries shown (rows under an album are part of its entry)
    counts: dict[str, int] = field(default_factory=dict)  # every track job kept, by state
    albums: int = 0

    @property
    def cut(self) -> bool:
        return self.shown < self.entries


def section(view: dict[str, Any]) -> int:
    state = view.get("state")
    return 0 if state in RUNNING else 1 if state in WAITING else 2


def ordered(views: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Running (longest running first), queued (next to run first), finished (latest first)."""

    def at(view: dict[str, Any], *fields: str) -> float:
        return next((stamp for name in fields if (stamp := display.epoch(view.get(name))) is not None), 0.0)

    running = [view for view in views if section(view) == 0]
    queued = [view for view in views if section(view) == 1]
    finished = [view for view in views if section(view) == 2]
    return (
        sorted(running, key=lambda view: at(view, "started_at", "enqueued_at"))
        + sorted(queued, key=lambda view: at(view, "enqueued_at"))
        + sorted(finished, key=lambda view: at(view, "ended_at", "enqueued_at"), reverse=True)
    )


def build(
    views: Sequence[dict[str, Any]],
    *,
    state: str | None = None,
    limit: int | None = None,
    max_lines: int | None = None,
) -> Listing:
    """The rows to show: at most `limit` entries, and at most `max_lines` lines (a screen's
    worth: a row's detail lines and its album's running tracks count), at least one entry."""
    albums = {view["id"] for view in views if view.get("kind") == "album"}
    tracks_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for view in views:
        if view.get("kind") != "album" and view.get("album_id") in albums:
            tracks_of[view["album_id"]].append(view)
    if state is None:
        entries = [view for view in views if view.get("kind") == "album" or view.get("album_id") not in albums]
    else:
        entries = [view for view in views if view.get("state") == state]

    listing = Listing(
        entries=len(entries),
        counts=dict(Counter(str(view.get("state")) for view in views if view.get("kind") != "album")),
        albums=len(albums),
    )
    lines = 0
    for view in ordered(entries):
        if limit is not None and listing.shown >= limit:
            break
        group = [Row(view, tracks=tuple(tracks_of.get(view["id"], ())))]
        if view.get("kind") == "album" and state is None:
            running = [track for track in tracks_of.get(view["id"], ()) if track.get("state") in RUNNING]
            group += [Row(track, in_album=True) for track in ordered(running)]
        height = sum(1 + len(row.details) for row in group)
        if max_lines is not None and listing.shown and lines + height > max_lines:
            break
        listing.rows += group
        listing.shown += 1
        lines += height
    return listing
