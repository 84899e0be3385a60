"""Playlists: M3U/M3U8 parsing, and `dq enqueue --playlist URL` run by real workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from jobs.playlist import decode_playlist, parse_m3u
from tests.faultserver import FaultServer, pattern_bytes
from tests.helpers import Service, enqueue, listed, run_dq, wait_listed_ended

BASE = "http://music.example/lists/Best%20Of.m3u8"


def test_parse_titles_relative_entries_comments_and_a_bad_entry() -> None:
    text = "\n".join(
        [
            "#EXTM3U",
            "",
            "# just a comment",
            "#EXTINF:241,Artist - First Song",
            "../audio/first.flac",
            "   ",
            '#EXTINF:-1 tvg-id="x",Second',
            "/audio/Second Song.mp3",
            "#EXTINF:10,Lost title",
            "ftp://music.example/third.flac",
            "https://cdn.example/fourth.ogg?sig=a%20b",
            "C:\\Music\\fifth.flac",
        ]
    )
    entries = parse_m3u(text, BASE)
    assert [(e.line, e.title, e.url, e.error is None) for e in entries] == [
        (5, "Artist - First Song", "http://music.example/audio/first.flac", True),
        (8, "Second", "http://music.example/audio/Second%20Song.mp3", True),
        (10, "Lost title", None, False),
        (11, None, "https://cdn.example/fourth.ogg?sig=a%20b", True),
        (12, None, None, False),
    ]
    assert entries[2].error == "not an http(s) URL: 'ftp://music.example/third.flac'"
    assert "local path" in (entries[4].error or "")


def test_decoding_utf8_with_bom_and_latin1() -> None:
    assert decode_playlist("\ufeff#EXTINF:1,Café\nx.mp3".encode()) == "#EXTINF:1,Café\nx.mp3"
    assert decode_playlist("#EXTINF:1,Café\nx.mp3".encode("latin-1")) == "#EXTINF:1,Café\nx.mp3"


@pytest.mark.timeout(90)
def test_playlist_album_from_relative_entries_with_titles_and_one_bad_entry(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    fault_server.add_file("audio/first.flac", pattern_bytes(150000))
    fault_server.add_file("audio/Second Song.mp3", pattern_bytes(70000))
    fault_server.add_file("audio/fourth.ogg", pattern_bytes(30000))
    playlist = "\r\n".join(
        [
            "#EXTM3U",
            "# exported by some player",
            "#EXTINF:241,Artist - First Song",
            "../audio/first.flac",
            "",
            "#EXTINF:180,Second: the song",
            "/files/audio/Second Song.mp3",
            "#EXTINF:10,Never there",
            "ftp://elsewhere.example/third.flac",
            "",
            fault_server.url("/files/audio/fourth.ogg"),
            "",
        ]
    )
    fault_server.add_file("lists/Best Of.m3u8", playlist.encode(), content_type="audio/x-mpegurl")
    start_service(env)
    [album_id] = enqueue(env, "--playlist", fault_server.url("/files/lists/Best%20Of.m3u8"), "--dest", "Mix")

    album = wait_listed_ended(env, [album_id], 40)[album_id]
    assert album["state"] == "partial"
    assert album["tracks"] == {"total": 4, "completed": 3, "failed": 1}
    assert album["dest"] == "Mix/Best Of"
    assert album["failed_tracks"] == [
        {
            "id": None,
            "url": "ftp://elsewhere.example/third.flac",
            "title": "Never there",
            "error": "line 9: not an http(s) URL: 'ftp://elsewhere.example/third.flac'",
        }
    ]
    folder = tmp_path / "downloads" / "Mix" / "Best Of"
    assert sorted(p.name for p in folder.iterdir()) == [
        "01 - Artist - First Song.flac",
        "02 - Second_ the song.mp3",
        "fourth.ogg",
    ]
    assert (folder / "01 - Artist - First Song.flac").read_bytes() == pattern_bytes(150000)
    assert (folder / "fourth.ogg").read_bytes() == pattern_bytes(30000)
    # The playlist job is shown through its album, not as a track of its own.
    assert [view["kind"] for view in listed(env).values()].count("playlist") == 0
    assert len(album["track_ids"]) == 3


@pytest.mark.timeout(60)
def test_playlist_album_name_option_and_wait(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    fault_server.add_file("a.flac", pattern_bytes(1000))
    fault_server.add_file("p.m3u", b"#EXTINF:1,Only\na.flac\n")
    start_service(env)
    waited = run_dq(["enqueue", "--playlist", fault_server.url("/files/p.m3u"), "--album", "Chosen", "--wait"], env)
    assert waited.returncode == 0, waited.stderr
    assert (tmp_path / "downloads" / "Chosen" / "01 - Only.flac").read_bytes() == pattern_bytes(1000)


def test_enqueue_playlist_returns_at_once_without_fetching(
    env: dict[str, str], fault_server: FaultServer, connection: redis.Redis
) -> None:
    [album_id] = enqueue(env, "--playlist", fault_server.url("/files/late.m3u8"))
    assert fault_server.requests == []  # no worker runs: nothing fetched yet
    album = listed(env)[album_id]
    assert album["state"] == "queued"
    assert album["dest"] == "late"
    assert album["url"] == fault_server.url("/files/late.m3u8")
    assert run_dq(["enqueue", "--playlist", "not a url"], env).returncode == 2
    assert run_dq(["enqueue", "--playlist", fault_server.url("/x.m3u"), "http://a.example/b"], env).returncode == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/status/404/gone.m3u8", None, "Playlist could not be fetched: HTTP 404 Not Found"),
        ("/hang/slow.m3u8", None, "Playlist could not be fetched: Download timeout (1s)"),
        ("/files/empty.m3u8", b"#EXTM3U\n# nothing here\n\n", "Playlist has no usable entry: it lists no tracks"),
        (
            "/files/bad.m3u",
            b"#EXTM3U\nftp://x.example/a.flac\n",
            "Playlist has no usable entry: 1 refused, the first at line 2: not an http(s) URL: 'ftp://x.example/a.flac'",
        ),
        (
            "/files/flood.m3u",
            b"".join(b"t%d.mp3\n" % number for number in range(100_000)),
            "Playlist has 100000 entries, more than 10000",
        ),
        ("/files/huge.m3u", b"#" * 10_000_001, "Playlist is larger than 10 MB"),
    ],
)
def test_unusable_playlist_fails_the_album_with_a_clear_message(
    env: dict[str, str],
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    path: str,
    body: bytes | None,
    error: str,
) -> None:
    if body is not None:
        fault_server.add_file(path.removeprefix("/files/"), body)
    start_service(env, wait_workers=1)
    waited = run_dq(["enqueue", "--playlist", fault_server.url(path), "--wait"], env)
    assert waited.returncode == 1
    album = listed(env)[waited.stdout.split()[0]]
    assert album["state"] == "failed"
    assert album["error"] == error
    assert album["tracks"] == {"total": 0, "completed": 0, "failed": 0}
