"""Resume, naming and the refusal of web pages, in the engine against the real fault server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from jobs import messages
from jobs.download import Downloaded, Resume, Started, Target, download
from jobs.errors import IncompleteBody, JobDeleted, NotAFile
from jobs.files import claim, numbered, rename_noreplace
from jobs.paths import part_owner, part_path
from tests.faultserver import LAST_MODIFIED, FaultServer, pattern_bytes

pytestmark = pytest.mark.timeout(30)

JOB = "5f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"


def fetch(server: FaultServer, path: str, root: Path, **kwargs: object) -> Downloaded:
    target = kwargs.pop("target", Target(owner=JOB))
    return download(
        server.url(path),
        target,  # type: ignore[arg-type]
        download_dir=root,
        request_timeout=1.0,
        allow_private=True,
        **kwargs,  # type: ignore[arg-type]
    )


def cut_short(server: FaultServer, path: str, root: Path) -> Started:
    """A first attempt that ends short: its partial file is kept for the resume."""
    started: list[Started] = []
    with pytest.raises(IncompleteBody):
        fetch(server, path, root, keep_partial=True, on_start=started.append)
    [first] = started
    assert part_path(first.final, JOB).stat().st_size > 0
    return first


def cut_then_resume(server: FaultServer, path: str, root: Path) -> tuple[Downloaded, list[Started]]:
    """A first attempt that ends short, then the second attempt resuming from it."""
    first = cut_short(server, path, root)
    result = fetch(server, path, root, keep_partial=True, resume=Resume(first.final, first.validator))
    return result, [first]


def test_a_cut_transfer_resumes_with_range_and_if_range(fault_server: FaultServer, tmp_path: Path) -> None:
    result, [started] = cut_then_resume(fault_server, "/cut/700000/2000000/cut.flac", tmp_path)
    assert started.validator == '"pattern-2000000"'  # the strong ETag, not Last-Modified
    assert result.path.read_bytes() == pattern_bytes(2_000_000)
    assert result.resumed_from == 700_000
    first, second = fault_server.request_log
    assert "Range" not in first.headers
    assert (second.headers["Range"], second.headers["If-Range"]) == ("bytes=700000-", '"pattern-2000000"')
    assert first.bytes_sent + second.bytes_sent == 2_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.flac"]


def test_last_modified_is_the_validator_without_a_strong_etag(fault_server: FaultServer, tmp_path: Path) -> None:
    result, [started] = cut_then_resume(fault_server, "/cut/1000/5000/lm.flac?etag=0", tmp_path)
    assert started.validator == LAST_MODIFIED
    assert fault_server.request_log[-1].headers["If-Range"] == LAST_MODIFIED
    assert result.resumed_from == 1000 and result.path.read_bytes() == pattern_bytes(5000)


def test_a_200_answer_to_a_range_starts_again_from_zero(fault_server: FaultServer, tmp_path: Path) -> None:
    first = cut_short(fault_server, "/cut/300000/900000/a.flac", tmp_path)
    resume = Resume(first.final, first.validator)
    # The server now ignores ranges (a file that changed answers If-Range the same way).
    result = fetch(fault_server, "/cut/900000/900000/a.flac?ignore_range=1", tmp_path, resume=resume)
    assert result.resumed_from == 0
    assert result.path.read_bytes() == pattern_bytes(900_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac"]


def test_a_changed_file_gets_a_200_and_is_fetched_whole(fault_server: FaultServer, tmp_path: Path) -> None:
    first = cut_short(fault_server, "/cut/300000/900000/b.flac", tmp_path)
    result = fetch(fault_server, "/cut/900000/900000/b.flac", tmp_path, resume=Resume(first.final, '"other"'))
    assert fault_server.request_log[-1].headers["If-Range"] == '"other"'
    assert result.resumed_from == 0 and result.path.read_bytes() == pattern_bytes(900_000)


def test_a_416_asks_again_without_range(fault_server: FaultServer, tmp_path: Path) -> None:
    first = cut_short(fault_server, "/cut/1000/5000/c.flac", tmp_path)
    resume = Resume(first.final, first.validator)
    result = fetch(fault_server, "/cut/5000/5000/c.flac?range_status=416", tmp_path, resume=resume)
    assert [("Range" in r.headers) for r in fault_server.request_log] == [False, True, False]
    assert result.path.read_bytes() == pattern_bytes(5000) and result.resumed_from == 0


def test_no_partial_file_is_kept_without_a_validator_or_without_keep_partial(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    with pytest.raises(IncompleteBody):
        fetch(fault_server, "/cut/1000/5000/d.flac?validators=0", tmp_path, keep_partial=True)
    with pytest.raises(IncompleteBody):
        fetch(fault_server, "/cut/1000/5000/e.flac", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_final_error_removes_the_partial_file(fault_server: FaultServer, tmp_path: Path) -> None:
    def deleted_meanwhile(done: int, total: int | None) -> None:
        if done:
            raise JobDeleted(JOB)

    with pytest.raises(JobDeleted):
        fetch(
            fault_server, "/slow/100000/gone.flac?seconds=2", tmp_path, keep_partial=True, on_progress=deleted_meanwhile
        )
    assert list(tmp_path.iterdir()) == []


def test_the_partial_file_name_carries_the_job_id(fault_server: FaultServer, tmp_path: Path) -> None:
    seen: list[list[str]] = []
    fetch(
        fault_server,
        "/slow/100000/named.flac?seconds=1.2",
        tmp_path,
        on_progress=lambda done, total: seen.append([p.name for p in tmp_path.iterdir()]),
    )
    during = {name for names in seen for name in names}
    assert f"named.flac.{JOB}.part" in during
    assert part_owner(f"named.flac.{JOB}.part") == JOB
    assert part_owner("named.flac.part") is None and part_owner("x.notanid.part") is None


def test_an_html_page_is_not_a_file(fault_server: FaultServer, tmp_path: Path) -> None:
    with pytest.raises(NotAFile, match=messages.NOT_A_FILE):
        fetch(fault_server, "/html/album.flac", tmp_path)
    with pytest.raises(NotAFile):
        fetch(fault_server, "/bytes/100/x.flac?ctype=text/html;%20charset=utf-8", tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert fetch(fault_server, "/html", tmp_path, target=Target(name="page.html")).path.name == "page.html"
    assert fetch(fault_server, "/bytes/100/index.htm?ctype=text/html", tmp_path).path.name == "index.htm"


def test_two_urls_with_one_name_keep_both_files(fault_server: FaultServer, tmp_path: Path) -> None:
    first = fetch(fault_server, "/bytes/3000/a/track.flac", tmp_path, target=Target(owner=JOB))
    owners = {first.path: fault_server.url("/bytes/3000/a/track.flac")}
    second = fetch(
        fault_server,
        "/bytes/3000/b/track.flac",
        tmp_path,
        target=Target(owner=JOB.replace("5f", "6f")),
        owner_of=owners.get,
    )
    assert (first.path.name, second.path.name, second.skipped) == ("track.flac", "track (2).flac", False)
    assert first.path.read_bytes() == second.path.read_bytes() == pattern_bytes(3000)


def test_the_same_url_again_is_done_at_once_and_replaces_only_its_own_file(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    url = fault_server.url("/bytes/3000/own.flac")
    first = fetch(fault_server, "/bytes/3000/own.flac", tmp_path)
    owners = {first.path: url}
    again = fetch(fault_server, "/bytes/3000/own.flac", tmp_path, owner_of=owners.get)
    assert again.skipped and again.path == first.path
    first.path.write_bytes(b"damaged")  # not complete: the same URL downloads and replaces it
    replaced = fetch(fault_server, "/bytes/3000/own.flac", tmp_path, owner_of=owners.get)
    assert replaced.path == first.path and first.path.read_bytes() == pattern_bytes(3000)
    (tmp_path / "user.flac").write_bytes(b"mine")
    kept = fetch(fault_server, "/bytes/3000/user.flac", tmp_path, owner_of=owners.get)
    assert kept.path.name == "user (2).flac" and (tmp_path / "user.flac").read_bytes() == b"mine"
    forced = fetch(fault_server, "/bytes/3000/user.flac", tmp_path, target=Target(owner=JOB, replace=True))
    assert forced.path.name == "user.flac" and forced.path.read_bytes() == pattern_bytes(3000)


def test_claiming_a_name_is_atomic_among_racers(tmp_path: Path) -> None:
    final = tmp_path / "same.flac"
    partials = []
    for index in range(8):
        partial = tmp_path / f"same.flac.{index}.part"
        partial.write_bytes(str(index).encode())
        partials.append(partial)
    claimed: list[Path] = []
    barrier = threading.Barrier(len(partials))

    def race(partial: Path) -> None:
        barrier.wait()
        claimed.append(claim(partial, final, lambda _path: False))

    threads = [threading.Thread(target=race, args=(partial,)) for partial in partials]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(numbered(final, n) for n in range(1, 9))
    assert sorted(path.read_bytes() for path in claimed) == [str(i).encode() for i in range(8)]
    assert not rename_noreplace(claimed[0], claimed[1])  # taken: refused, both files intact
    assert numbered(tmp_path / ".hidden", 2).name == ".hidden (2)"
