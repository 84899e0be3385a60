"""Terminal output: plain lines, bars with rate and ETA (pure functions)."""

from __future__ import annotations

import pytest

from jobs import display


def view(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "abc12345-0000",
        "kind": "track",
        "state": "processing",
        "url": "https://h/Artist/01%20Song.flac",
        "dest": "Artist",
        "error": None,
        "progress": {"bytes_done": 1048576, "bytes_total": 4194304, "rate": 524288},
    }
    base.update(overrides)
    return base


def test_progress_text_has_bytes_rate_and_eta() -> None:
    assert display.progress_text(view()) == "1.0 MiB/4.0 MiB 512.0 KiB/s ETA 00:06"


def test_bar_fraction() -> None:
    assert display.bar(view(), width=8) == "[##------]  25.0%"
    assert display.bar(view(state="completed"), width=4) == "[####] 100.0%"


def test_plain_line_for_pipes() -> None:
    line = display.line(view(state="failed", error="HTTP 404 Not Found"))
    assert line == "abc12345-0000  failed  https://h/Artist/01%20Song.flac  error: HTTP 404 Not Found"
    assert "\x1b" not in display.table([view()])


def test_bars_name_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    assert display.bars([view()]).endswith("Artist/01 Song.flac")


def test_durations_and_sizes() -> None:
    assert display.human_duration(3725) == "1:02:05"
    assert display.human_duration(None) == "--:--"
    assert display.human_bytes(512) == "512 B"
    assert display.human_bytes(3 * 1024**3) == "3.0 GiB"
