"""Terminal views, laid out with rich: the `bin/jobs` table and the progress bars of
`bin/enqueue --wait` and `bin/jobs --watch`.

rich measures text in terminal cells (wide characters, combining marks), knows the terminal's
size at every redraw (so a resized window is laid out again) and redraws a live block in place,
cropped to the screen's height; `jobs.display` says what the text is and how it is cut. Each
view is a rich renderable laid out at render time for the width it is given: every line fits
it, and at 80 columns every row still shows its name. Without a terminal the commands print
`jobs.display`'s plain lines instead; nothing here is used then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

from jobs import display, listing
from jobs.listing import Row

GAP = 2
NAME_MIN = 20  # cells a bar's name keeps before its progress text is cut
NAME_WANT = 26  # cells a table row's name gets before its progress text is cut
BAR_NAME_WANT = 28  # cells a bar's name gets before its rate and ETA are dropped
BAR_MIN, BAR_MAX, LIST_BAR = 6, 30, 12
PROGRESS_MAX, SOURCE_MIN = 44, 24
DETAIL_INDENT = 4  # a table row's error, retry and failed tracks, under it: most of the width for them
WIDE = 100  # from this many columns the table shows transfer rates too
# A live block leaves its last two columns free for the `^C` the terminal echoes after it: on a
# fuller line the echo would wrap to a new line, and the last redraw would be drawn there, a copy.
LIVE_SPARE = 2
STATE_STYLE = {
    "queued": "yellow",
    "processing": "cyan",
    "completed": "green",
    "failed": "red",
    "partial": "magenta",
}


def console(stream: TextIO) -> Console:
    """A console on a stream the caller found to be a terminal; text is never read as markup."""
    return Console(file=stream, force_terminal=True, highlight=False, markup=False, emoji=False)


def live(on: Console) -> Live:
    """A block redrawn in place on each `update(..., refresh=True)`; its last frame stays."""
    return Live(console=on, auto_refresh=False, redirect_stdout=False, redirect_stderr=False)


@dataclass
class Room:
    """Cells still free on a line; columns take them in order of importance."""

    left: int

    def grow(self, current: int, most: int) -> int:
        """Widen a column from `current` towards `most`, as far as the room allows."""
        more = max(0, min(self.left, most - current))
        self.left -= more
        return current + more


def pad(text: str, width: int) -> str:
    return text + " " * max(0, width - cell_len(text))


def bar(fraction: float | None, width: int, style: str) -> Text:
    """`━━━━━╸────`: done in `style`, the rest thin and dim; all thin when nothing tells how far."""
    if width <= 0:
        return Text()
    rest_char = "─"  # thin: the part to go reads apart from the part done without colours too
    if fraction is None:
        return Text(rest_char * width, style="grey35")
    halves = int(max(0.0, min(1.0, fraction)) * width * 2)
    full, half = divmod(halves, 2)
    text = Text("━" * full + "╸" * half, style=style)
    text.append(rest_char * (width - full - half), style="grey35")
    return text


def _ids(rows: Sequence[Row]) -> list[str]:
    return [("  " if row.in_album else "") + display.short_id(row.view["id"]) for row in rows]


# --- the `bin/jobs` table ---------------------------------------------------------------------
class JobsTable:
    """`bin/jobs` on a terminal: header, rows (running, queued, latest finished), totals.

    `limit` caps the entries; `fit_screen` (the default listing) shows what fits the screen's
    height. `bars` adds a bar column, for the live view of `bin/jobs --watch`.
    """

    def __init__(
        self,
        views: Sequence[dict[str, Any]],
        *,
        state: str | None = None,
        limit: int | None = None,
        fit_screen: bool = False,
        bars: bool = False,
    ) -> None:
        self.views, self.state, self.limit, self.fit_screen, self.bars = views, state, limit, fit_screen, bars

    def __rich_console__(self, on: Console, options: ConsoleOptions) -> RenderResult:
        reserved = 4  # header, totals, the "showing" line, the shell's prompt
        max_lines = max(1, on.size.height - reserved) if self.fit_screen else None
        built = listing.build(self.views, state=self.state, limit=self.limit, max_lines=max_lines)
        width = options.max_width - (LIVE_SPARE if self.bars else 0)
        yield from table_lines(built, width, bars=self.bars, state=self.state)


def progress_cells(row: Row, *, rate: bool) -> list[str]:
    """A row's progress text, longest first: too long, an album drops its total, then its bytes."""
    view = row.view
    pct = f"{display.percent(row.fraction)} " if view.get("state") == "processing" else ""
    texts = [display.transfer_text(view, rate=rate, eta=False)]
    if view.get("kind") == "album":
        done, counts = (view.get("progress") or {}).get("bytes_done"), display.track_counts(view)
        texts += [f"{counts} {display.human_bytes(done)}" if done else counts, counts]
    return list(dict.fromkeys((pct + text).rstrip() for text in texts))


def detail_lines(row: Row, indent: int, width: int, *, tracks: bool = True) -> list[Text]:
    """A row's error, retry and failed-track lines, indented, each cut at the width with `…`."""
    lines = []
    for detail in display.details(row.view, tracks=tracks):
        style = "yellow" if detail.startswith("retry ") else "red"
        lines.append(Text(" " * indent + display.fit_end(detail, width - indent), style=style))
    return lines


def table_lines(built: listing.Listing, width: int, *, bars: bool = False, state: str | None = None) -> list[Text]:
    """The table's lines, each at most `width` cells: the name gets its room before the
    progress text, the bar column (`bars`) and the source URL do."""
    totals = Text(display.fit_end(display.totals_text(built.counts, built.albums), width), style="bold")
    if not built.rows:
        empty = f"no {state} jobs" if state else "no jobs"
        return [Text(empty)] + ([totals] if built.counts else [])
    rows = built.rows
    ids = _ids(rows)
    states = [str(row.view.get("state")) for row in rows]
    progress = [progress_cells(row, rate=width >= WIDE) for row in rows]
    names = [display.name_of(row.view, in_album=row.in_album) for row in rows]
    sources = [display.decoded_url(row.view.get("url")) for row in rows]

    # Room, in this order: the name (NAME_MIN), the shortest progress texts, the name (NAME_WANT),
    # the bar column, the whole name, the whole progress texts, and what is left to the source URL.
    id_w = max(cell_len(text) for text in ids + ["ID"])
    state_w = max(cell_len(text) for text in states + ["STATE"])
    name_natural = max(cell_len(text) for text in names + ["NAME"])
    progress_full = min(PROGRESS_MAX, max(cell_len(texts[0]) for texts in progress + [["PROGRESS"]]))
    progress_short = max(cell_len(texts[-1]) for texts in progress + [["PROGRESS"]])
    room = Room(width - (id_w + GAP + state_w + GAP))
    name_w = min(name_natural, NAME_MIN)
    progress_w = progress_short if room.left - name_w - GAP >= progress_short else 0  # too narrow: none
    room.left -= name_w + (progress_w + GAP if progress_w else 0)
    name_w = room.grow(name_w, min(name_natural, NAME_WANT))
    bar_w = LIST_BAR if bars and room.left >= LIST_BAR + GAP else 0
    room.left -= bar_w + GAP if bar_w else 0
    name_w = room.grow(name_w, name_natural)
    progress_w = room.grow(progress_w, progress_full) if progress_w else 0
    source_w = min(room.left - GAP, max(cell_len(text) for text in sources + ["SOURCE"]))
    with_source = source_w >= SOURCE_MIN and any(sources)
    rest = name_w + (0 if with_source else max(0, room.left))

    def cells(
        row_id: str, row_state: str, bar_text: Text | None, row_progress: Sequence[str], name: str, source: str
    ) -> Text:
        text = Text(pad(row_id, id_w) + " " * GAP)
        text.append(pad(row_state, state_w), style=STATE_STYLE.get(row_state, ""))
        text.append(" " * GAP)
        if bar_w:
            text.append(bar_text if bar_text is not None else Text(" " * bar_w))
            text.append(" " * GAP)
        if progress_w:
            fitting = next((one for one in row_progress if cell_len(one) <= progress_w), row_progress[-1])
            text.append(pad(display.fit_end(fitting, progress_w), progress_w) + " " * GAP)
        if with_source:
            text.append(pad(display.fit_name(name, name_w), name_w) + " " * GAP)
            text.append(display.fit_end(source, source_w), style="dim")
        else:
            text.append(display.fit_name(name, rest))
        text.rstrip()
        text.truncate(width, overflow="ellipsis")  # a terminal too narrow even for the id and state
        return text

    header = cells("ID", "STATE", None, ["PROGRESS"], "NAME", "SOURCE")
    header.stylize("bold")
    lines = [header]
    for row, row_id, row_state, row_progress, name, source in zip(
        rows, ids, states, progress, names, sources, strict=True
    ):
        show_bar = bar_w and (row_state not in ("queued", "failed") or row.view.get("kind") == "album")
        bar_text = bar(row.fraction, bar_w, STATE_STYLE.get(row_state, "")) if show_bar else None
        lines.append(cells(row_id, row_state, bar_text, row_progress, name, source))
        lines += detail_lines(row, DETAIL_INDENT + (2 if row.in_album else 0), width)
    lines.append(totals)
    if built.cut:
        lines.append(Text(display.fit_end(display.shown_text(built.shown, built.entries), width), style="dim"))
    return lines


# --- the bars of `--wait` ---------------------------------------------------------------------------
class Bars:
    """One bar per job waited for; an album's bar counts its tracks and bytes, and the tracks
    that have started get a bar of their own under it (a playlist's as it is read)."""

    def __init__(self, views: Sequence[dict[str, Any]], tracks_of: dict[str, list[dict[str, Any]]]) -> None:
        self.views, self.tracks_of = views, tracks_of

    def rows(self, height: int) -> list[Row | str]:
        """The rows, about a screen's height at most: completed tracks give way first (the first in
        album order first), summed up in one line."""
        rows: list[Row | str] = []
        for view in self.views:
            tracks = self.tracks_of.get(view["id"], [])
            rows.append(Row(view, tracks=tuple(tracks)))
            rows.extend(Row(track, in_album=True) for track in tracks if track.get("state") != "queued")
        tall = sum(1 + len(display.details(row.view, tracks=False)) for row in rows if isinstance(row, Row))
        over = tall - max(1, height - 1)
        done = [row for row in rows if isinstance(row, Row) and row.in_album and row.view["state"] == "completed"]
        if over > 0 and done:
            hidden = done[: over + 1]
            first = rows.index(hidden[0])
            rows = [row for row in rows if not any(row is gone for gone in hidden)]
            rows.insert(first, f"… {len(hidden)} completed tracks")
        return rows

    def __rich_console__(self, on: Console, options: ConsoleOptions) -> RenderResult:
        yield from bar_lines(self.rows(on.size.height), options.max_width - LIVE_SPARE)


def bar_infos(row: Row) -> list[str]:
    """The progress text of a bar, longest first: what does not fit drops the ETA, then the rate
    (an album: then its total size, then its bytes, keeping the tracks done)."""
    view, state = row.view, row.view.get("state")
    if state == "queued" and view.get("kind") != "album":
        return [display.retry_text(view) or "queued"]
    if view.get("kind") != "album" and state not in ("processing", "completed"):
        return [f"{state} {display.transfer_text(view)}".strip()]
    texts = [
        display.transfer_text(view),
        display.transfer_text(view, eta=False),
        display.transfer_text(view, rate=False),
    ]
    if view.get("kind") == "album":
        done, counts = (view.get("progress") or {}).get("bytes_done"), display.track_counts(view)
        texts += [f"{counts} {display.human_bytes(done)}" if done else "", counts]
    return list(dict.fromkeys(text for text in texts if text))


def bar_lines(rows: Sequence[Row | str], width: int) -> list[Text]:
    """`<id> <bar> <pct> <bytes rate ETA> <name>` per row, each at most `width` cells; errors go
    under their row. Room goes first to the name (up to NAME_MIN), the bar's minimum and the
    shortest progress text, then to the name (up to BAR_NAME_WANT), the whole progress text,
    the whole name, and a longer bar."""
    real = [row for row in rows if isinstance(row, Row)]
    if not real:
        return [Text("waiting for jobs")]
    ids = dict(zip((id(row) for row in real), _ids(real), strict=True))
    names = {id(row): display.name_of(row.view, in_album=row.in_album) for row in real}
    infos = {id(row): bar_infos(row) for row in real}
    id_w = max(cell_len(text) for text in ids.values())
    room = Room(width - id_w - 1 - 1 - 4 - 1 - GAP)  # id bar pct info name, and the gaps between
    name_natural = max(cell_len(text) for text in names.values())
    info_full = max(cell_len(texts[0]) for texts in infos.values())
    info_short = max(cell_len(texts[-1]) for texts in infos.values())
    name_w = min(name_natural, NAME_MIN)
    bar_w = BAR_MIN
    info_w = max(0, min(info_short, room.left - name_w - bar_w))
    room.left -= name_w + bar_w + info_w
    name_w = room.grow(name_w, min(name_natural, BAR_NAME_WANT))
    info_w = room.grow(info_w, info_full)
    chosen = {
        key: next((text for text in texts if cell_len(text) <= info_w), texts[-1]) for key, texts in infos.items()
    }
    used = min(info_w, max(cell_len(text) for text in chosen.values()))
    room.left, info_w = room.left + info_w - used, used  # what no row's text needs goes back
    name_w = room.grow(name_w, name_natural)
    bar_w = room.grow(bar_w, BAR_MAX)

    lines = []
    for row in rows:
        if isinstance(row, str):
            lines.append(Text(display.fit_end(" " * 2 + row, width), style="dim"))
            continue
        state = str(row.view.get("state"))
        style = STATE_STYLE.get(state, "")
        text = Text(pad(ids[id(row)], id_w) + " ")
        text.append(bar(row.fraction, bar_w, style))
        text.append(" " + pad(display.percent(row.fraction), 4) + " ")
        info = chosen[id(row)]
        text.append(pad(display.fit_end(info, info_w), info_w), style=style if state == "failed" else "")
        text.append(" " * GAP + display.fit_name(names[id(row)], max(1, width - cell_len(text.plain) - GAP)))
        text.rstrip()
        text.truncate(width, overflow="ellipsis")  # a terminal too narrow even for the id and bar
        lines.append(text)
        lines += detail_lines(row, id_w + 1, width, tracks=False)
    return lines
