"""Files a hostile server or a local user cannot turn against us: a symlink planted at a partial
or final name is never followed, and a body is bounded by DQ_MAX_FILE_MB and the free space
even when it comes without a length."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from config import Settings
from jobs import stream as engine
from jobs.download import Resume, Target, download
from jobs.errors import DiskFull, FileTooLarge
from jobs.paths import part_path
from tests.faultserver import FaultServer, pattern_bytes
from tests.helpers import Service, enqueue_track, error_of, long_env, status_of, wait_status, wait_until

pytestmark = pytest.mark.timeout(60)
JOB = "0d1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a"
SECRET = b"the user's own file, elsewhere\n"
ENDLESS = 10**12  # bytes: more than any disk here, sent without a Content-Length


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = outside / "target.txt"
    target.write_bytes(SECRET)
    return target


def fetch(server: FaultServer, path: str, root: Path, **kwargs: object) -> Path:
    return download(
        server.url(path),
        Target(owner=JOB),
        download_dir=root,
        request_timeout=2.0,
        allow_private=True,
        **kwargs,  # type: ignore[arg-type]
    ).path


def test_a_symlink_at_the_partial_name_is_replaced_not_followed(
    tmp_path: Path, fault_server: FaultServer, elsewhere: Path
) -> None:
    root = tmp_path / "downloads"
    root.mkdir()
    part_path(root / "victim.txt", JOB).symlink_to(elsewhere)
    saved = fetch(fault_server, "/bytes/1000/victim.txt", root)
    assert elsewhere.read_bytes() == SECRET
    assert saved == root.resolve() / "victim.txt"
    assert not saved.is_symlink() and saved.read_bytes() == pattern_bytes(1000)


def test_a_symlinked_partial_is_not_resumed_through(tmp_path: Path, fault_server: FaultServer, elsewhere: Path) -> None:
    root = tmp_path / "downloads"
    root.mkdir()
    final = root / "victim.txt"
    part_path(final, JOB).symlink_to(elsewhere)
    saved = fetch(fault_server, "/bytes/1000/victim.txt", root, resume=Resume(final, '"etag"'))
    assert elsewhere.read_bytes() == SECRET
    assert saved.read_bytes() == pattern_bytes(1000)
    ranges = [record.headers.get("Range") for record in fault_server.request_log]
    assert ranges == [None]  # the link's target size was never taken for bytes already had


def test_a_symlink_at_the_final_name_is_neither_a_finished_copy_nor_written_through(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    root = tmp_path / "downloads"
    root.mkdir()
    outside = tmp_path / "same-size.txt"
    outside.write_bytes(b"x" * 1000)  # the size the server announces: the old check took it as done
    (root / "victim.txt").symlink_to(outside)
    saved = fetch(fault_server, "/bytes/1000/victim.txt", root)
    assert saved.name == "victim (2).txt" and saved.read_bytes() == pattern_bytes(1000)
    assert outside.read_bytes() == b"x" * 1000
    assert (root / "victim.txt").is_symlink()  # not ours: left as it was


def test_a_worker_process_never_writes_through_a_planted_partial_symlink(
    env: dict[str, str],
    connection: redis.Redis,
    settings: Settings,
    fault_server: FaultServer,
    elsewhere: Path,
    start_service: Callable[..., Service],
) -> None:
    """A local user who sees the job id plants the link while the server takes its time."""
    start_service(long_env(env))
    job_id = enqueue_track(connection, settings, fault_server.url("/bytes/5000/victim.txt?delay=0.7"))
    settings.download_dir.mkdir(parents=True, exist_ok=True)
    part_path(settings.download_dir / "victim.txt", job_id).symlink_to(elsewhere)
    wait_until(lambda: status_of(connection, job_id) in ("finished", "failed"), 40)
    assert (status_of(connection, job_id), error_of(connection, job_id)) == ("finished", None)
    saved = settings.download_dir / "victim.txt"
    assert elsewhere.read_bytes() == SECRET
    assert not saved.is_symlink() and saved.read_bytes() == pattern_bytes(5000)


def test_a_file_over_the_cap_fails_before_a_byte_is_written(tmp_path: Path, fault_server: FaultServer) -> None:
    with pytest.raises(FileTooLarge, match=r"^File too large \(3 MB, limit 2 MB\)$"):
        fetch(fault_server, "/bytes/3000000/big.flac", tmp_path, max_file_bytes=2_000_000)
    assert list(tmp_path.iterdir()) == []


def test_an_endless_body_without_a_length_stops_at_the_cap(tmp_path: Path, fault_server: FaultServer) -> None:
    with pytest.raises(FileTooLarge, match=r"^File too large \(over the 5 MB limit\)$"):
        fetch(fault_server, f"/bytes/{ENDLESS}/endless.bin?nolength=1", tmp_path, max_file_bytes=5_000_000)
    assert list(tmp_path.rglob("*")) == []


def test_an_endless_body_without_a_length_stops_when_the_free_space_runs_low(
    tmp_path: Path, fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No cap set: the disk is the bound. Free space shrinks as the file grows (as on a real disk)."""
    disk_bytes = 150_000_000

    def shrinking_free_space(path: Path) -> int:
        used = sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file())
        return disk_bytes - used

    monkeypatch.setattr(engine, "free_bytes", shrinking_free_space)
    with pytest.raises(DiskFull, match=r"^Disk full \((\d+) MB free, 100 MB needed\)$"):
        fetch(fault_server, f"/bytes/{ENDLESS}/endless.bin?nolength=1", tmp_path, min_free_bytes=100_000_000)
    assert list(tmp_path.rglob("*")) == []
    sent = fault_server.request_log[0].bytes_sent
    assert 50_000_000 <= sent <= 50_000_000 + 2 * engine.SPACE_CHECK_BYTES + 4 * 1024 * 1024


def test_the_cap_reaches_the_worker_from_the_setting(
    env: dict[str, str],
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
) -> None:
    environment = {**env, "DQ_MAX_FILE_MB": "1"}
    settings = Settings.from_env(environment)
    start_service(environment)
    job_id = enqueue_track(connection, settings, fault_server.url(f"/bytes/{ENDLESS}/endless.bin?nolength=1"))
    wait_status(connection, job_id, "failed", timeout=40)
    assert error_of(connection, job_id) == "File too large (over the 1 MB limit)"
    assert wait_until(lambda: not any(settings.download_dir.rglob("*.part")), 5)


def test_a_servers_content_disposition_never_replaces_a_users_file(
    env: dict[str, str],
    connection: redis.Redis,
    settings: Settings,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
) -> None:
    mine = settings.download_dir / "song.mp3"
    mine.parent.mkdir(parents=True, exist_ok=True)
    mine.write_bytes(SECRET)
    start_service(env)
    job_id = enqueue_track(connection, settings, fault_server.url("/bytes/1000/x?cd=song.mp3"))
    wait_status(connection, job_id, "finished", timeout=30)
    assert mine.read_bytes() == SECRET
    assert (settings.download_dir / "song (2).mp3").read_bytes() == pattern_bytes(1000)


def test_a_finished_file_named_like_a_partial_survives_the_startup_sweep(
    env: dict[str, str],
    connection: redis.Redis,
    settings: Settings,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
) -> None:
    first = start_service(env)
    job_id = enqueue_track(connection, settings, fault_server.url("/bytes/1000/mix.part"))
    wait_status(connection, job_id, "finished", timeout=30)
    saved = settings.download_dir / "mix.part"
    assert saved.read_bytes() == pattern_bytes(1000)
    assert first.terminate() == 0
    second = start_service(env)  # its start walks the download dir for abandoned partial files
    assert wait_until(lambda: "sweep" in second.log() or "supervising" in second.log(), 10)
    time.sleep(float(env.get("DQ_CLEANUP_INTERVAL", "0.5")) * 3)
    assert saved.read_bytes() == pattern_bytes(1000)
