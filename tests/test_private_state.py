"""The embedded Redis's data is the service user's alone: every job's URL is in it, credentials
included. The state dir is 700 and Redis writes its files under a private umask, whatever the
umask of the shell that ran `bin/up`; an older, looser state dir is tightened at start."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from supervisor.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes(directory: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(directory.stat().st_mode)}
    for path in directory.rglob("*"):
        if not path.is_socket():
            found[str(path.relative_to(directory))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def run_server_and_write(directory: Path) -> dict[str, int]:
    server = RedisServer(directory, persistent=True, owner="test")
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set("rq:job:x", "http://user:secret@host/a")
        client.execute_command("BGREWRITEAOF")
        client.close()
    finally:
        server.stop()
    return modes(directory)


def test_a_new_state_dir_and_every_redis_file_are_private(tmp_path: Path, loose_umask: None) -> None:
    found = run_server_and_write(tmp_path / "state")
    assert any(name.startswith("appendonlydir/") for name in found), found
    assert found["."] == 0o700
    loose = {name: oct(mode) for name, mode in found.items() if mode & 0o077}
    assert loose == {}


def test_an_older_world_readable_state_dir_is_tightened(tmp_path: Path, loose_umask: None) -> None:
    state = tmp_path / "state"
    run_server_and_write(state)
    state.chmod(0o755)
    for path in state.rglob("*"):
        if not path.is_socket():
            path.chmod(0o755 if path.is_dir() else 0o644)
    own = state / "notes.txt"  # not Redis's: left as the user made it
    own.write_text("mine")
    own.chmod(0o644)
    found = run_server_and_write(state)
    assert found.pop("notes.txt") == 0o644
    assert {name: oct(mode) for name, mode in found.items() if mode & 0o077} == {}


def test_downloads_keep_the_users_umask(tmp_path: Path, loose_umask: None) -> None:
    from jobs.files import create_new_file

    with create_new_file(tmp_path / "song.flac") as out:
        out.write(b"x")
    assert stat.S_IMODE((tmp_path / "song.flac").stat().st_mode) == 0o644
