"""File names and confinement to the download dir (pure logic; URLs: test_urls.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.errors import InvalidRequest
from jobs.paths import (
    check_dest,
    check_name,
    confined,
    filename_from_content_disposition,
    filename_from_url,
    sanitize_filename,
)


@pytest.mark.parametrize(
    ("dest", "expected"),
    [("Artist/Album", "Artist/Album"), ("./Artist//Album/", "Artist/Album"), ("", ""), ("a\\b", "a/b")],
)
def test_dest_is_normalised(dest: str, expected: str) -> None:
    assert check_dest(dest) == expected


@pytest.mark.parametrize("dest", ["../x", "a/../../b", "/etc", "~/music", "a/..", "x\x00y"])
def test_dest_that_escapes_is_refused(dest: str) -> None:
    with pytest.raises(InvalidRequest):
        check_dest(dest)


def test_names() -> None:
    assert check_name("01 - Song.flac") == "01 - Song.flac"
    for bad in ["../x.flac", "a/b.flac", "..", ""]:
        with pytest.raises(InvalidRequest):
            check_name(bad)


def test_sanitize_filename() -> None:
    assert sanitize_filename('AC/DC: "Back" in <Black>?.flac') == "AC_DC_ _Back_ in _Black__.flac"
    assert sanitize_filename("  ..hidden. ") == "hidden"
    assert sanitize_filename("..") == ""
    long = sanitize_filename("x" * 300 + ".flac")
    assert long.endswith(".flac") and len(long.encode()) <= 200


def test_filename_from_content_disposition() -> None:
    assert filename_from_content_disposition('attachment; filename="My Song.flac"') == "My Song.flac"
    assert filename_from_content_disposition("attachment; filename*=UTF-8''Bj%C3%B6rk%20-%20Jóga.ogg").startswith(
        "Björk - J"
    )
    assert filename_from_content_disposition('attachment; filename="../../etc/passwd"') == "passwd"
    assert filename_from_content_disposition("inline") == ""
    assert filename_from_content_disposition(None) == ""


def test_filename_from_url() -> None:
    assert filename_from_url("https://h/music/01%20Intro.mp3?x=1") == "01 Intro.mp3"
    assert filename_from_url("https://h/") == ""


def test_confined(tmp_path: Path) -> None:
    root = tmp_path / "dl"
    root.mkdir()
    assert confined(root, "a", "b.flac") == (root / "a" / "b.flac").resolve()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(InvalidRequest):
        confined(root, "link", "x.flac")
    with pytest.raises(InvalidRequest):
        confined(root, "..", "x")
