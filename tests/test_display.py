"""What the terminal views say, as pure functions of view dicts: names, cutting, progress, the
listing's order and limits, the table's and the bars' lines at 80 columns. The real commands
on a pseudo-terminal are in test_cli_display.py."""

from __future__ import annotations

from typing import Any

import pytest
from rich.cells import cell_len

from jobs import display, listing, terminal

pytestmark = pytest.mark.timeout(30)


def view(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "abc12345-0000",
        "kind": "track",
        "state": "processing",
        "url": "https://h/Artist/01%20Song.flac",
        "dest": "Artist",
        "error": None,
        "progress": {"bytes_done": 1048576, "bytes_total": 4194304, "rate": 524288},
        "album_id": None,
        "enqueued_at": "2026-01-01T00:00:00Z",
        "started_at": None,
        "ended_at": None,
    }
    base.update(overrides)
    return base


def album(**overrides: Any) -> dict[str, Any]:
    base = view(
        id="album-8d247211de95418e",
        kind="album",
        name="Kind of Blue",
        url=None,
        dest="Miles Davis/Kind of Blue",
        progress={"bytes_done": 3 * 1048576, "bytes_total": None, "rate": 0},
        tracks={"total": 5, "completed": 3, "failed": 0},
        failed_tracks=[],
    )
    base.update(overrides)
    return base


# --- texts ----------------------------------------------------------------------------------------
def test_progress_text_has_bytes_rate_and_eta() -> None:
    assert display.progress_text(view()) == "1.0 MiB/4.0 MiB 512 KiB/s ETA 00:06"
    assert display.transfer_text(view()) == "1.0/4.0 MiB 512 KiB/s ETA 00:06"
    assert display.transfer_text(view(), rate=False) == "1.0/4.0 MiB"


def test_plain_line_for_pipes_decodes_the_url_and_names_the_file() -> None:
    line = display.line(view(state="failed", error="HTTP 404 Not Found"))
    assert (
        line == "abc12345-0000  failed  Artist/01 Song.flac  https://h/Artist/01 Song.flac  error: HTTP 404 Not Found"
    )
    saved = display.line(view(state="completed", path="Artist/01 - Song (2).flac", file="01 - Song (2).flac"))
    assert "Artist/01 - Song (2).flac" in saved and "\x1b" not in display.plain_listing([view()])


def test_urls_are_decoded_without_credentials_or_control_characters() -> None:
    url = "https://me:secret@music.example/Caf%C3%A9/%1B%5B2J%20x.flac?sig=a%20b"
    assert display.decoded_url(url) == "https://music.example/Café/?[2J x.flac?sig=a b"
    assert display.url_file_name(url) == "?[2J x.flac"
    assert display.url_file_name("https://music.example/") == "music.example"


def test_names_are_cut_from_the_left_with_a_mark_and_keep_the_file_name() -> None:
    name = "A Very Long Artist Name/An Even Longer Album Title/07 The Name.flac"
    cut = display.fit_name(name, 30)
    assert cut == "… Album Title/07 The Name.flac" and len(cut) == 30
    assert display.fit_name("Artist/" + "x" * 40 + ".flac", 20) == "x" * 19 + "…"
    assert display.fit_name("short.flac", 20) == "short.flac"
    wide = display.fit_name("日本のアーティスト/アルバム/01 曲.flac", 14)
    assert cell_len(wide) <= 14 and wide.startswith("…") and wide.endswith("01 曲.flac")
    assert display.fit_end("Incomplete download: got 50000 of 100000 bytes", 20) == "Incomplete download…"


def test_album_progress_counts_tracks_and_its_running_track_until_every_size_is_known() -> None:
    running = view(album_id="album-8d247211de95418e", progress={"bytes_done": 50, "bytes_total": 100, "rate": 10})
    assert display.fraction(album(), [running]) == pytest.approx(3.5 / 5)
    assert display.transfer_text(album()) == "3/5 tracks 3.0 MiB"
    known = album(progress={"bytes_done": 75, "bytes_total": 100, "rate": 0})
    assert display.fraction(known) == 0.75
    assert display.fraction(album(state="partial")) == 1.0
    playlist = album(state="processing", tracks={"total": 0, "completed": 0, "failed": 0}, playlist_job="p")
    assert display.transfer_text(playlist) == "reading the playlist"


def test_retry_state_and_attempts_from_the_contract_fields() -> None:
    waiting = view(state="queued", attempts=1, max_attempts=4, next_attempt_at="2026-01-01T00:00:10Z")
    waiting["last_error"] = "HTTP 503 Service Unavailable"
    now = display.epoch("2026-01-01T00:00:09Z")
    assert display.retry_text(waiting, now=now) == "retry 2/4 in 1s: HTTP 503 Service Unavailable"
    assert display.retry_text(view(state="queued")) == ""  # no retries yet: nothing said
    assert display.error_text(view(state="failed", error="Download timeout (30s)", attempts=4)) == (
        "Download timeout (30s) (after 4 attempts)"
    )


def test_durations_and_sizes() -> None:
    assert display.human_duration(3725) == "1:02:05"
    assert display.human_duration(None) == "--:--"
    assert display.human_bytes(512) == "512 B"
    assert display.human_bytes(1023 * 1024) == "1.0 MiB"
    assert display.human_bytes(3 * 1024**3) == "3.0 GiB"


def test_stopped_waiting_says_the_jobs_go_on_and_how_to_delete_them() -> None:
    text = display.stopped_waiting(["album-8d247211de95418e", "abc12345-0000"])
    assert "go on" in text and "bin/delete album-8d247211de95418e abc12345-0000" in text


# --- the listing --------------------------------------------------------------------------------
def at(minute: int) -> str:
    return f"2026-01-01T00:{minute:02d}:00Z"


def queue_views() -> list[dict[str, Any]]:
    return [
        view(id="done-old", state="completed", enqueued_at=at(1), ended_at=at(2)),
        view(id="failed-new", state="failed", error="HTTP 404 Not Found", enqueued_at=at(2), ended_at=at(9)),
        view(id="queued-1", state="queued", enqueued_at=at(3)),
        view(id="running", state="processing", enqueued_at=at(4), started_at=at(5)),
        view(id="queued-2", state="queued", enqueued_at=at(6)),
        album(id="album-1", state="processing", enqueued_at=at(7), started_at=at(7)),
        view(id="album-track-run", state="processing", album_id="album-1", enqueued_at=at(7), started_at=at(8)),
        view(id="album-track-done", state="completed", album_id="album-1", enqueued_at=at(7), ended_at=at(8)),
        view(id="album-track-wait", state="queued", album_id="album-1", enqueued_at=at(7)),
    ]


def test_listing_runs_first_then_queued_then_latest_finished_albums_folded() -> None:
    built = listing.build(queue_views())
    assert [row.view["id"] for row in built.rows] == [
        "running",
        "album-1",
        "album-track-run",  # under its album, downloading now
        "queued-1",
        "queued-2",
        "failed-new",
        "done-old",
    ]
    assert [row.in_album for row in built.rows].count(True) == 1
    assert built.counts == {"completed": 2, "failed": 1, "queued": 3, "processing": 2} and built.albums == 1
    assert built.entries == 6 and not built.cut


def test_listing_limits_and_state() -> None:
    limited = listing.build(queue_views(), limit=2)
    assert [row.view["id"] for row in limited.rows] == ["running", "album-1", "album-track-run"]
    assert limited.cut and limited.shown == 2
    screen = listing.build(queue_views(), max_lines=4)
    assert screen.shown == 3 and sum(1 + len(row.details) for row in screen.rows) <= 4
    queued = listing.build(queue_views(), state="queued")
    assert [row.view["id"] for row in queued.rows] == ["queued-1", "queued-2", "album-track-wait"]


def test_table_at_80_columns_has_header_totals_and_every_name() -> None:
    views = queue_views() + [
        view(
            id="long-one",
            state="failed",
            dest="A Very Long Artist Name That Goes On/And An Album Title Longer Still",
            url="https://h/x/07%20The%20Name.flac",
            error="Incomplete download: got 50000 of 100000 bytes",
            enqueued_at=at(10),
            ended_at=at(11),
        )
    ]
    lines = [text.plain for text in terminal.table_lines(listing.build(views), 80)]
    assert lines[0].split() == ["ID", "STATE", "PROGRESS", "NAME"]
    assert all(cell_len(line) <= 80 for line in lines)
    long_row = next(line for line in lines if line.startswith("long-one"))
    assert "…" in long_row and long_row.endswith("07 The Name.flac")
    assert lines[lines.index(long_row) + 1].strip() == "Incomplete download: got 50000 of 100000 bytes"
    assert lines[-1] == "2 processing · 3 queued · 2 completed · 2 failed · 1 album"
    narrow = [text.plain for text in terminal.table_lines(listing.build(views), 40)]
    assert all(cell_len(line) <= 40 for line in narrow)
    assert any(line.strip().startswith("Incomplete download: ") and line.endswith("…") for line in narrow)


def test_bars_at_80_columns_show_every_name_and_the_album_progress() -> None:
    tracks = [
        view(id="t1-000000", state="completed", file="01 So What.flac", album_id="album-8d247211de95418e"),
        view(
            id="t2-000000",
            file="02 Freddie Freeloader.flac",
            album_id="album-8d247211de95418e",
            progress={"bytes_done": 1782579, "bytes_total": 4194304, "rate": 1258291},
        ),
        view(id="t3-000000", state="queued", album_id="album-8d247211de95418e"),
    ]
    rows = terminal.Bars([album()], {album()["id"]: tracks}).rows(24)
    lines = [text.plain for text in terminal.bar_lines(rows, 80)]
    assert len(lines) == 3  # the queued track gets its bar when it starts
    assert lines[0].startswith("album-8d247211 ") and "3/5 tracks" in lines[0] and " 68%" in lines[0]  # (3 + 0.42) / 5
    assert lines[0].endswith("Miles Davis/Kind of Blue")
    assert lines[1].endswith("01 So What.flac") and lines[2].endswith("02 Freddie Freeloader.flac")
    assert all(cell_len(line) <= 80 for line in lines)


def test_bars_give_way_to_the_screen_height_completed_tracks_first() -> None:
    tracks = [view(id=f"t{n}-0000", state="completed", album_id="album-8d247211de95418e") for n in range(30)]
    tracks.append(view(id="running-0", album_id="album-8d247211de95418e"))
    rows = terminal.Bars([album()], {album()["id"]: tracks}).rows(10)
    assert len(rows) <= 9 and any(isinstance(row, str) and "completed tracks" in row for row in rows)
    assert any(isinstance(row, listing.Row) and row.view["id"] == "running-0" for row in rows)
