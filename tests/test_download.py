"""The download engine against the real fault-injecting HTTP server (in-process, no workers)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from jobs.download import Target, download
from jobs.errors import ConnectionFailed, DownloadTimeout, HTTPStatusError, IncompleteBody, InvalidRequest
from tests.faultserver import FaultServer, pattern_bytes

TIMEOUT = 1.0


def fetch(server: FaultServer, path: str, root: Path, target: Target | None = None, **kwargs: object) -> Path:
    result = download(
        server.url(path),
        target or Target(),
        download_dir=root,
        request_timeout=TIMEOUT,
        allow_private=True,
        **kwargs,  # type: ignore[arg-type]
    )
    return result.path


def leftovers(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_complete_download_is_byte_exact(fault_server: FaultServer, tmp_path: Path) -> None:
    path = fetch(fault_server, "/bytes/3000000/song.flac", tmp_path, Target("Artist/Album"))
    assert path == tmp_path / "Artist" / "Album" / "song.flac"
    assert path.read_bytes() == pattern_bytes(3_000_000)
    assert leftovers(tmp_path) == [path]


def test_name_comes_from_option_then_content_disposition_then_url(fault_server: FaultServer, tmp_path: Path) -> None:
    assert fetch(fault_server, "/bytes/10/a.mp3", tmp_path, Target(name="Chosen.mp3")).name == "Chosen.mp3"
    assert fetch(fault_server, "/bytes/10/a.mp3?cd=From%20Header.ogg", tmp_path).name == "From Header.ogg"
    assert fetch(fault_server, "/bytes/10/From%20Url.opus", tmp_path).name == "From Url.opus"
    assert fetch(fault_server, "/bytes/10/x.flac", tmp_path, Target(stem="03 - Title")).name == "03 - Title.flac"


def test_no_partial_file_at_the_final_path_while_downloading(fault_server: FaultServer, tmp_path: Path) -> None:
    """Bytes go to `.part` and appear at the final path only when complete."""
    seen: list[tuple[bool, bool]] = []
    final = tmp_path / "slow.flac"

    def look(done: int, total: int | None) -> None:
        if 0 < done < (total or 0):
            seen.append((final.exists(), any(tmp_path.glob("slow.flac.*.part"))))

    fetch(fault_server, "/slow/200000/slow.flac?seconds=2.5", tmp_path, on_progress=look)
    assert seen, "progress was reported during the download"
    assert all(part and not at_final for at_final, part in seen)
    assert final.read_bytes() == pattern_bytes(200_000)
    assert not (tmp_path / "slow.flac.part").exists()


def test_progress_is_reported_about_once_a_second(fault_server: FaultServer, tmp_path: Path) -> None:
    reports: list[int] = []
    fetch(fault_server, "/slow/300000/p.flac?seconds=3", tmp_path, on_progress=lambda done, total: reports.append(done))
    # start + about one per second + the end; never one per chunk
    assert 3 <= len(reports) <= 7, reports
    assert reports[0] == 0 and reports[-1] == 300_000


@pytest.mark.parametrize("path", ["/truncate/100000/t.flac", "/reset-body/100000/r.flac"])
def test_short_body_fails_and_leaves_nothing(fault_server: FaultServer, tmp_path: Path, path: str) -> None:
    with pytest.raises((IncompleteBody, ConnectionFailed)) as caught:
        fetch(fault_server, path, tmp_path)
    assert "100000" in str(caught.value) or "reset" in str(caught.value).lower()
    assert leftovers(tmp_path) == []


def test_truncated_body_names_the_byte_counts(fault_server: FaultServer, tmp_path: Path) -> None:
    with pytest.raises(IncompleteBody, match=r"got 50000 of 100000 bytes"):
        fetch(fault_server, "/truncate/100000/t.flac", tmp_path)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("path", ["/hang/h.flac", "/hang-body/100000/h.flac", "/trickle/100000/t.flac?interval=0.2"])
def test_hangs_and_trickles_fail_as_timeouts(fault_server: FaultServer, tmp_path: Path, path: str) -> None:
    started = time.monotonic()
    with pytest.raises(DownloadTimeout, match=r"^Download timeout \(1s\)$"):
        fetch(fault_server, path, tmp_path)
    elapsed = time.monotonic() - started
    assert 0.8 <= elapsed <= 4 * TIMEOUT + 2, elapsed
    assert leftovers(tmp_path) == []
    assert fault_server.wait_until(lambda s: s.active == 0, 3), "the connection was closed"


@pytest.mark.parametrize(
    ("code", "text", "retryable"),
    [
        (404, "HTTP 404 Not Found", False),
        (403, "HTTP 403 Forbidden", False),
        (500, "HTTP 500 Internal Server Error", True),
        (503, "HTTP 503 Service Unavailable", True),
        (429, "HTTP 429 Too Many Requests", True),
    ],
)
def test_status_errors(fault_server: FaultServer, tmp_path: Path, code: int, text: str, retryable: bool) -> None:
    with pytest.raises(HTTPStatusError) as caught:
        fetch(fault_server, f"/status/{code}/x.flac", tmp_path)
    assert str(caught.value) == text
    assert caught.value.retryable is retryable
    assert leftovers(tmp_path) == []


def test_retry_after_is_read(fault_server: FaultServer, tmp_path: Path) -> None:
    with pytest.raises(HTTPStatusError) as caught:
        fetch(fault_server, "/status/503/x.flac?retry_after=7", tmp_path)
    assert caught.value.retry_after == 7


def test_connection_refused_names_host_and_port(tmp_path: Path) -> None:
    with pytest.raises(ConnectionFailed, match=r"^Connection refused \(127\.0\.0\.1:1\)$"):
        download(
            "http://127.0.0.1:1/x.flac", Target(), download_dir=tmp_path, request_timeout=TIMEOUT, allow_private=True
        )


def test_reset_before_response(fault_server: FaultServer, tmp_path: Path) -> None:
    with pytest.raises(ConnectionFailed):
        fetch(fault_server, "/reset/x.flac", tmp_path)


def test_private_address_refused_unless_allowed(fault_server: FaultServer, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="DQ_ALLOW_PRIVATE_NETWORKS"):
        download(fault_server.url("/bytes/10/x.flac"), Target(), download_dir=tmp_path, request_timeout=TIMEOUT)
    assert fault_server.requests == []


def test_complete_file_is_skipped_not_fetched_again(fault_server: FaultServer, tmp_path: Path) -> None:
    url = fault_server.url("/bytes/5000/s.flac")
    first, second = (
        download(url, Target(), download_dir=tmp_path, request_timeout=TIMEOUT, allow_private=True) for _ in range(2)
    )
    assert not first.skipped and second.skipped
    assert second.path.read_bytes() == pattern_bytes(5000)


def test_a_crash_truncated_file_is_fetched_again(fault_server: FaultServer, tmp_path: Path) -> None:
    (tmp_path / "s.flac").write_bytes(b"short")
    result = download(
        fault_server.url("/bytes/5000/s.flac"),
        Target(),
        download_dir=tmp_path,
        request_timeout=TIMEOUT,
        allow_private=True,
    )
    assert not result.skipped and result.path.read_bytes() == pattern_bytes(5000)


def test_a_stop_mid_download_removes_the_part_file(fault_server: FaultServer, tmp_path: Path) -> None:
    """Any exception raised between chunks (RQ's timeout, a cancel) removes the .part."""

    class Stop(BaseException):
        pass

    def stop_midway(done: int, total: int | None) -> None:
        if done > 0:
            raise Stop

    with pytest.raises(Stop):
        fetch(fault_server, "/slow/100000/x.flac?seconds=3", tmp_path, on_progress=stop_midway)
    assert leftovers(tmp_path) == []


def test_concurrent_downloads_do_not_share_part_files(fault_server: FaultServer, tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            fetch(fault_server, f"/bytes/{50000 + i}/f{i}.flac", tmp_path)
        except BaseException as error:  # noqa: BLE001 (collected and asserted on below)
            errors.append(error)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    assert sorted(p.name for p in leftovers(tmp_path)) == sorted(f"f{i}.flac" for i in range(6))


def test_stall_guard_with_an_explicit_clock() -> None:
    from jobs.http import StallGuard

    now = [0.0]
    guard = StallGuard(window=30, clock=lambda: now[0], limit=1024)
    for _ in range(29):  # 1 KiB/s... and then some: a healthy slow stream passes
        now[0] += 1
        guard.add(2048)
    now[0] += 1
    guard.add(2048)  # window closes with 60 KiB in 30 s: fine, a new window starts
    for _ in range(29):
        now[0] += 1
        guard.add(1)  # a trickle: one byte a second
    now[0] += 1
    with pytest.raises(DownloadTimeout, match=r"^Download timeout \(30s\)$"):
        guard.add(1)
