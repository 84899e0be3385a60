"""Writeback while downloading: each 8 MiB written is sent to disk while more arrives, the one
before it waited for, so the final fsync has at most two steps left to write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobs import writeback
from jobs.download import Target, download
from jobs.writeback import Writeback
from tests.faultserver import FaultServer, pattern_bytes

pytestmark = pytest.mark.timeout(30)

MiB = 1024 * 1024
WRITE = 2
WAIT_AND_WRITE = 1 | 2 | 4  # SYNC_FILE_RANGE_WAIT_BEFORE | WRITE | WAIT_AFTER


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int, int]] = []

    def __call__(self, fd: int, offset: int, length: int, flags: int) -> int:
        self.calls.append((fd, offset, length, flags))
        return 0


def test_every_step_is_started_and_the_one_before_it_waited_for() -> None:
    calls = Recorder()
    follower = Writeback(7, 0, step=8 * MiB, call=calls)
    for end in range(MiB // 2, 33 * MiB, MiB // 2):  # writes of 512 KiB, as the stream makes them
        follower.written(end)
    assert calls.calls == [
        (7, 0, 8 * MiB, WRITE),
        (7, 0, 8 * MiB, WAIT_AND_WRITE),
        (7, 8 * MiB, 8 * MiB, WRITE),
        (7, 8 * MiB, 8 * MiB, WAIT_AND_WRITE),
        (7, 16 * MiB, 8 * MiB, WRITE),
        (7, 16 * MiB, 8 * MiB, WAIT_AND_WRITE),
        (7, 24 * MiB, 8 * MiB, WRITE),
    ]


def test_a_resumed_file_starts_at_its_offset_and_uneven_writes_make_whole_ranges() -> None:
    calls = Recorder()
    follower = Writeback(3, 5 * MiB, step=4 * MiB, call=calls)
    for end in (6 * MiB, 9 * MiB - 1, 9 * MiB + 100, 12 * MiB, 13 * MiB + 200):
        follower.written(end)
    assert calls.calls == [
        (3, 5 * MiB, 4 * MiB + 100, WRITE),
        (3, 5 * MiB, 4 * MiB + 100, WAIT_AND_WRITE),
        (3, 9 * MiB + 100, 4 * MiB + 100, WRITE),
    ]


def test_without_the_call_nothing_happens() -> None:
    follower = Writeback(3, 0, step=MiB, call=None)
    follower.call = None  # as on a system without sync_file_range
    follower.written(10 * MiB)
    assert follower.previous is None


@pytest.mark.skipif(not os.uname().sysname == "Linux", reason="sync_file_range is Linux's")
def test_the_real_call_writes_a_real_file_and_a_refusal_is_only_a_hint(tmp_path: Path) -> None:
    assert writeback.sync_file_range is not None
    path = tmp_path / "f.part"
    with open(path, "wb") as out:
        follower = Writeback(out.fileno(), 0, step=MiB)
        for _ in range(3):
            out.write(b"x" * MiB)
            out.flush()
            follower.written(out.tell())
        assert follower.previous == (2 * MiB, MiB)
    read_end, write_end = os.pipe()
    try:  # a pipe has no pages to write: the kernel refuses (ESPIPE), the download goes on
        assert writeback.sync_file_range(write_end, 0, MiB, WRITE) == -1
        Writeback(write_end, 0, step=1).written(10)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_download_sends_its_file_to_disk_as_it_arrives(
    fault_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = Recorder()
    monkeypatch.setattr(writeback, "sync_file_range", calls)
    size = 20 * MiB + 12345
    result = download(
        fault_server.url(f"/bytes/{size}/big.flac"),
        Target(),
        download_dir=tmp_path,
        request_timeout=5,
        allow_private=True,
    )
    assert result.path.read_bytes() == pattern_bytes(size)
    started = [(offset, length) for _fd, offset, length, flags in calls.calls if flags == WRITE]
    waited = [(offset, length) for _fd, offset, length, flags in calls.calls if flags == WAIT_AND_WRITE]
    step = writeback.STEP_BYTES
    assert [offset for offset, _ in started] == [0, started[0][1]]  # two whole steps of 20 MiB, in order
    assert all(length >= step for _, length in started)
    assert waited == started[:1]
    assert len({fd for fd, *_ in calls.calls}) == 1
