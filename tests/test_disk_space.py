"""Disk space: checked before the first byte, and ENOSPC mid-stream.

The guards are tested wherever the tests run (a full disk from /dev/full, free space set by
the test); where a tmpfs can be mounted (root, as CI and this machine have), also on a real
file system that fills up.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from jobs import stream as engine
from jobs.download import Target, download
from jobs.errors import DiskFull
from jobs.files import create_new_file, free_bytes
from jobs.paths import part_path
from tests.faultserver import FaultServer, pattern_bytes

pytestmark = pytest.mark.timeout(30)

JOB = "0d1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a"
TMPFS_BYTES = 4 * 1024 * 1024


CAP_SYS_ADMIN = 21  # the capability mount(2) needs


def can_mount() -> bool:
    """Whether this process holds CAP_SYS_ADMIN (root on a normal machine, as CI is)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    return False


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a file system that really fills up. Skipped only on a developer's machine
    where mounting is not allowed at all (no CAP_SYS_ADMIN); in CI (`.ci/run` sets CI) that
    fails, so the disk-full guards can never go untested there; a mount that fails fails."""
    if not can_mount():
        if os.environ.get("CI"):
            pytest.fail("CI must run the disk-full tests: mounting a tmpfs needs CAP_SYS_ADMIN (root)")
        pytest.skip("mounting a tmpfs needs CAP_SYS_ADMIN (root)")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    assert mounted.returncode == 0, f"cannot mount a tmpfs: {mounted.stderr.strip()}"
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fetch(server: FaultServer, path: str, root: Path, **kwargs: object) -> Path:
    return download(
        server.url(path),
        Target(directory="Album", owner=JOB),
        download_dir=root,
        request_timeout=2.0,
        allow_private=True,
        keep_partial=True,
        **kwargs,  # type: ignore[arg-type]
    ).path


def test_too_little_space_fails_before_the_first_byte(fault_server: FaultServer, small_disk: Path) -> None:
    free = free_bytes(small_disk)
    with pytest.raises(DiskFull) as raised:
        fetch(fault_server, "/bytes/3000000/big.flac", small_disk, min_free_bytes=2_000_000)
    assert str(raised.value) == f"Disk full ({free // 1_000_000} MB free, 5 MB needed)"
    assert list(small_disk.iterdir()) == []  # not even the folder


def test_the_space_check_counts_the_reserve(fault_server: FaultServer, small_disk: Path) -> None:
    path = fetch(fault_server, "/bytes/1000000/fits.flac", small_disk, min_free_bytes=1_000_000)
    assert path.read_bytes() == pattern_bytes(1_000_000)


def test_a_disk_that_fills_mid_stream_fails_and_leaves_no_partial_file(
    fault_server: FaultServer, small_disk: Path
) -> None:
    # No Content-Length: nothing to check up front, the write itself runs out of space.
    with pytest.raises(DiskFull, match=r"^Disk full \(0 MB free, \d+ MB needed\)$"):
        fetch(fault_server, "/bytes/8000000/endless.flac?nolength=1", small_disk)
    assert [p for p in small_disk.rglob("*") if p.is_file()] == []
    assert free_bytes(small_disk) == TMPFS_BYTES


def test_too_little_free_space_is_refused_before_the_first_byte(
    fault_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "free_bytes", lambda _path: 2_500_000)
    with pytest.raises(DiskFull, match=r"^Disk full \(2 MB free, 4 MB needed\)$"):
        fetch(fault_server, "/bytes/3000000/big.flac", tmp_path, min_free_bytes=1_000_000)
    assert list(tmp_path.iterdir()) == []  # not even the folder


def test_free_bytes_is_what_statvfs_gives_an_unprivileged_writer(tmp_path: Path) -> None:
    stats = os.statvfs(tmp_path)
    assert free_bytes(tmp_path / "not" / "made" / "yet") == pytest.approx(stats.f_bavail * stats.f_frsize, rel=0.01)


def test_enospc_mid_stream_is_disk_full_and_leaves_nothing(
    fault_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/dev/full answers every write with ENOSPC: the partial file is created as usual, but
    its bytes go there (a symlink at the partial name would be removed, never followed)."""
    partial = part_path(tmp_path / "Album" / "full.flac", JOB)

    def onto_dev_full(path: Path) -> BinaryIO:
        assert path == partial
        create_new_file(path).close()
        return open("/dev/full", "wb")

    monkeypatch.setattr(engine, "create_new_file", onto_dev_full)
    with pytest.raises(DiskFull, match=r"^Disk full \(\d+ MB free, \d+ MB needed\)$"):
        fetch(fault_server, "/bytes/3000000/full.flac", tmp_path)
    assert list(partial.parent.iterdir()) == []
