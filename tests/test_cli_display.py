"""`bin/jobs`, `--wait` bars and Ctrl-C as a person sees them: the real `dq` on a pseudo-terminal
of 80 columns (tests/pty_session.py), real workers, the fault server's downloads."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from rich.cells import cell_len

from tests.faultserver import FaultServer, pattern_bytes
from tests.helpers import Service, enqueue, listed, long_env, run_dq, wait_listed_ended, wait_until
from tests.pty_session import PtySession, run_in_pty

LONG_DEST = "A Very Long Artist Name That Goes On/And An Album Title Longer Still"


def short(job_id: str) -> str:
    return job_id[: len("album-") + 8] if job_id.startswith("album-") else job_id[:8]


def row_of(lines: list[str], job_id: str) -> int:
    """The index of the line that starts with the job's short id (its row)."""
    found = [n for n, line in enumerate(lines) if line.strip().startswith(short(job_id) + " ")]
    assert found, f"{short(job_id)} not on screen:\n" + "\n".join(lines)
    return found[0]


def assert_fits(screen: str, columns: int = 80) -> None:
    too_long = [line for line in screen.splitlines() if cell_len(line) > columns]
    assert too_long == [], too_long


@pytest.mark.timeout(150)
def test_jobs_on_a_terminal_reads_like_a_download_queue(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    env = long_env({**env, "DQ_WORKERS": "1"})  # one download at a time: the rest stay queued
    start_service(env, wait_workers=1)
    done = enqueue(env, fault_server.url("/bytes/1000/first.flac"), fault_server.url("/bytes/1000/second.flac"))
    [missing] = enqueue(env, fault_server.url("/status/404/missing%20track.flac"))
    wait_listed_ended(env, [*done, missing], 30)
    [running] = enqueue(env, fault_server.url("/slow/600000/Now%20Playing.flac?seconds=30"))
    assert wait_until(lambda: listed(env)[running]["state"] == "processing", 20)
    queued = enqueue(env, *[fault_server.url(f"/bytes/1000/next%20{n}.flac") for n in range(3)])
    [long_one] = enqueue(env, fault_server.url("/bytes/1000/07%20The%20Name.flac"), "--dest", LONG_DEST)
    queued.append(long_one)

    code, screen = run_in_pty(["jobs"], env, cols=80, rows=24)
    assert code == 0, screen
    lines = screen.splitlines()
    assert lines[0].split() == ["ID", "STATE", "PROGRESS", "NAME"]
    assert lines[-1] == "1 processing · 4 queued · 2 completed · 1 failed"
    assert_fits(screen)
    # Running first, then queued (next to run first), then the finished ones, the latest first.
    views = listed(env)
    finished = sorted([*done, missing], key=lambda i: views[i]["ended_at"], reverse=True)
    assert [row_of(lines, i) for i in [running, *queued, *finished]] == sorted(
        row_of(lines, i) for i in [running, *queued, *finished]
    )
    assert "processing" in lines[row_of(lines, running)] and "%" in lines[row_of(lines, running)]
    assert "Now Playing.flac" in screen and "missing track.flac" in screen and "%20" not in screen
    assert lines[row_of(lines, missing) + 1].strip() == "HTTP 404 Not Found"
    long_row = lines[row_of(lines, long_one)]
    assert long_row.endswith("Longer Still/07 The Name.flac") and "…" in long_row

    code, screen = run_in_pty(["jobs", "--limit", "2"], env)
    assert [row_of(screen.splitlines(), i) for i in (running, queued[0])] == [1, 2]
    assert screen.splitlines()[-1] == "showing 2 of 8 (--limit N for more, --all for every one)"
    code, small = run_in_pty(["jobs"], env, rows=8)  # the default: what fits the screen
    assert code == 0 and len(small.splitlines()) <= 7 and "showing 4 of 8" in small, small
    code, every = run_in_pty(["jobs", "--all"], env, rows=8)
    assert all(short(i) in every for i in [running, *queued, *finished]) and "showing" not in every
    code, only = run_in_pty(["jobs", "--state", "queued"], env)
    assert [line.split()[1] for line in only.splitlines()[1:-1]] == ["queued"] * 4

    # Piped: one plain line per job, full ids, nothing cut; --json as before: every job, oldest first.
    plain = run_dq(["jobs"], env).stdout.splitlines()
    assert plain[0].startswith(f"{running}  processing  Now Playing.flac") and len(plain) == 8
    assert any(line.startswith(long_one) and f"{LONG_DEST}/07 The Name.flac" in line for line in plain)
    objects = json.loads(run_dq(["jobs", "--json"], env).stdout)
    assert [view["id"] for view in objects] == [*done, missing, running, *queued]
    by_id = {view["id"]: view for view in objects}  # the saved name is a new field; `path` stays
    assert by_id[done[0]]["path"] == "first.flac" and by_id[done[0]]["file"] == "first.flac"
    assert by_id[running]["file"] == "Now Playing.flac" and "path" not in by_id[running]
    assert by_id[queued[0]]["file"] is None
    assert run_dq(["jobs", "--json", "--limit", "2"], env).returncode == 2


@pytest.mark.timeout(90)
def test_album_bar_counts_finished_tracks_and_every_track_shows_its_name(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    start_service(env)
    names = ["01 So What", "02 Freddie Freeloader", "03 Blue in Green", "04 All Blues", "05 Flamenco Sketches"]
    urls = [fault_server.url(f"/bytes/{200000 + n}/{name.replace(' ', '%20')}.flac") for n, name in enumerate(names)]
    urls[2] = fault_server.url("/slow/300000/03%20Blue%20in%20Green.flac?seconds=6")  # the slow one
    args = ["enqueue", "--wait", "--album", "Kind of Blue", "--dest", "Miles Davis", *urls]
    with PtySession(args, env, cols=80, rows=24) as session:
        assert session.wait_for("4/5 tracks", 20), session.screen()
        midway = session.screen().splitlines()
        code = session.wait(30)
        final = session.screen()
    album_line = next(line for line in midway if line.startswith("album-") and " tracks" in line)
    percent = int(re.search(r"(\d+)%", album_line).group(1))  # type: ignore[union-attr]
    # Bytes of the 4 finished tracks (~800 kB) of ~1.1 MB in all: not 0 %, no `?`, the bytes shown.
    assert 70 <= percent < 100 and "?" not in album_line and re.search(r"\d (KiB|MiB)", album_line), album_line
    assert album_line.endswith("Miles Davis/Kind of Blue")
    assert code == 0, final
    for name in names:
        assert any(line.endswith(f"{name}.flac") for line in final.splitlines()), final
    assert "5/5 tracks" in final and final.count("100%") == 6
    assert_fits(final)


@pytest.mark.timeout(90)
def test_playlist_wait_shows_a_bar_per_track_with_its_saved_name(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    fault_server.add_file("a.flac", pattern_bytes(100000))
    fault_server.add_file("b.flac", pattern_bytes(50000))
    fault_server.add_file("Road Trip.m3u8", b"#EXTINF:1,First Song\na.flac\n#EXTINF:1,Second\nb.flac\n")
    start_service(env)
    code, screen = run_in_pty(["enqueue", "--wait", "--playlist", fault_server.url("/files/Road%20Trip.m3u8")], env)
    assert code == 0, screen
    lines = screen.splitlines()
    album = row_of(lines, lines[0].strip())
    assert lines[album].endswith("Road Trip") and "2/2 tracks" in lines[album]
    assert lines[album + 1].endswith("01 - First Song.flac") and lines[album + 2].endswith("02 - Second.flac")


@pytest.mark.timeout(90)
def test_wait_bars_cut_long_names_with_a_mark_and_print_errors_whole(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    start_service(env)
    urls = [fault_server.url("/bytes/5000/07%20The%20Name.flac"), fault_server.url("/truncate/100000/short.flac")]
    code, screen = run_in_pty(["enqueue", "--wait", "--dest", LONG_DEST, *urls], env)
    assert code == 1, screen
    lines = screen.splitlines()
    assert_fits(screen)
    assert any(line.endswith("/07 The Name.flac") and "…" in line and "100%" in line for line in lines), screen
    failed = next(n for n, line in enumerate(lines) if line.endswith("/short.flac"))
    assert "failed" in lines[failed]
    assert lines[failed + 1].strip() == "Incomplete download: got 50000 of 100000 bytes"


@pytest.mark.timeout(90)
def test_ctrl_c_during_wait_leaves_the_download_running_and_says_how_to_delete_it(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    env = long_env(env)
    start_service(env)
    with PtySession(
        ["enqueue", "--wait", fault_server.url("/slow/1200000/Long%20One.flac?seconds=60")], env
    ) as session:
        assert session.wait_for(lambda: "KiB/s" in session.screen(), 20), session.screen()
        job_id = session.screen().splitlines()[0].strip()
        session.write(b"\x03")  # Ctrl-C, through the terminal driver
        code = session.wait(10)
        screen = session.screen()
    assert code == 130, screen
    assert "Aborted!" not in screen
    assert "Stopped waiting: the downloads go on in the queue" in screen
    assert f"To stop them: bin/delete {job_id}" in screen
    assert_fits(screen)
    before = listed(env)[job_id]
    assert before["state"] == "processing"
    assert wait_until(lambda: listed(env)[job_id]["progress"]["bytes_done"] > before["progress"]["bytes_done"], 10)
    assert run_dq(["delete", job_id], env).stdout.split() == [job_id, "cancelled"]


@pytest.mark.timeout(60)
def test_watch_redraws_the_table_in_place_until_ctrl_c(env: dict[str, str]) -> None:
    [first] = enqueue(env, "https://example.org/one.flac")
    with PtySession(["jobs", "--watch"], env, cols=80, rows=24) as session:
        assert session.wait_for(short(first), 10), session.screen()
        [second] = enqueue(env, "https://example.org/Two%20Words.flac")
        assert session.wait_for("Two Words.flac", 10), session.screen()
        session.write(b"\x03")
        code = session.wait(10)
        screen = session.screen()
    assert code == 0, screen
    lines = screen.splitlines()
    assert [line for line in lines if line.startswith("ID ")] == [lines[0]]  # one table, redrawn
    assert row_of(lines, first) < row_of(lines, second) and lines[-1].startswith("0 processing · 2 queued")
