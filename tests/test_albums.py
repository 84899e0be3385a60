"""Albums (`dq enqueue --album NAME URL...`) against real workers and the fault server:
derived states, failed tracks with reasons, skipping complete files, deleting mid-way."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.faultserver import FaultServer, pattern_bytes
from tests.helpers import Service, assert_never_back, enqueue, listed, run_dq, traces, wait_listed_ended, wait_until


@pytest.mark.timeout(90)
def test_album_with_a_404_and_a_hung_track_ends_partial(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service], tmp_path: Path
) -> None:
    start_service(env)
    urls = [
        fault_server.url("/bytes/300000/one.flac"),
        fault_server.url("/status/404/two.flac"),
        fault_server.url("/hang/three.flac"),
        fault_server.url("/slow/200000/four.flac?seconds=1"),
    ]
    album_id, *track_ids = enqueue(env, "--album", "Live: 1999", "--dest", "Artist", *urls)
    assert album_id.startswith("album-") and len(track_ids) == 4

    album = wait_listed_ended(env, [album_id], 40)[album_id]
    assert album["kind"] == "album"
    assert album["state"] == "partial"
    assert album["tracks"] == {"total": 4, "completed": 2, "failed": 2}
    assert album["dest"] == "Artist/Live_ 1999"
    assert album["error"] == "2 of 4 tracks failed"
    reasons = {track["url"]: track["error"] for track in album["failed_tracks"]}
    assert reasons == {urls[1]: "HTTP 404 Not Found", urls[2]: "Download timeout (1s)"}
    folder = tmp_path / "downloads" / "Artist" / "Live_ 1999"
    assert (folder / "one.flac").read_bytes() == pattern_bytes(300000)
    assert (folder / "four.flac").read_bytes() == pattern_bytes(200000)
    assert sorted(p.name for p in folder.iterdir()) == ["four.flac", "one.flac"]

    tracks = listed(env)
    assert [tracks[i]["album_id"] for i in track_ids] == [album_id] * 4
    assert listed(env, "--state", "partial").keys() == {album_id}

    text = run_dq(["jobs"], env).stdout
    assert f"{album_id}  partial (2/4 done, 2 failed)" in text
    assert "HTTP 404 Not Found" in text and "Download timeout (1s)" in text


@pytest.mark.timeout(90)
def test_completed_album_and_enqueuing_it_again_skips_complete_files(
    env: dict[str, str],
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    tmp_path: Path,
    connection: redis.Redis,
) -> None:
    start_service(env)
    urls = [fault_server.url(f"/bytes/{100000 + n}/t{n}.flac") for n in range(3)]
    waited = run_dq(["enqueue", "--album", "Done", "--wait", *urls], env)
    assert waited.returncode == 0, waited.stderr
    album_id = waited.stdout.split()[0]
    album = listed(env)[album_id]
    assert album["state"] == "completed"
    assert album["tracks"] == {"total": 3, "completed": 3, "failed": 0}
    assert album["progress"]["bytes_done"] == sum(100000 + n for n in range(3))
    folder = tmp_path / "downloads" / "Done"
    first_write = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    again = run_dq(["enqueue", "--album", "Done", "--wait", *urls], env)
    assert again.returncode == 0, again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == first_write
    second_id, *second_tracks = again.stdout.split()
    assert listed(env)[second_id]["state"] == "completed"
    results = [
        Job.fetch(track_id, connection=connection, serializer=JSONSerializer).return_value()
        for track_id in second_tracks
    ]
    assert [result["skipped"] for result in results] == [True, True, True]


@pytest.mark.timeout(60)
def test_album_whose_tracks_all_fail_is_failed(
    env: dict[str, str], fault_server: FaultServer, start_service: Callable[..., Service]
) -> None:
    start_service(env)
    urls = [fault_server.url("/status/404/a.flac"), fault_server.url("/status/410/b.flac")]
    waited = run_dq(["enqueue", "--album", "Gone", "--wait", *urls], env)
    assert waited.returncode == 1
    album = listed(env)[waited.stdout.split()[0]]
    assert album["state"] == "failed"
    assert album["tracks"] == {"total": 2, "completed": 0, "failed": 2}


def test_album_input_is_checked_before_anything_is_enqueued(env: dict[str, str], connection: redis.Redis) -> None:
    bad = run_dq(["enqueue", "--album", "X", "http://example.invalid/a.flac", "ftp://example.invalid/b"], env)
    assert bad.returncode == 2
    assert "nothing was enqueued" in bad.stderr
    assert run_dq(["enqueue", "--album", "..", "http://example.invalid/a.flac"], env).returncode == 2
    assert run_dq(["enqueue", "--album", "X", "--name", "n.flac", "http://example.invalid/a.flac"], env).returncode == 2
    assert list(connection.scan_iter("rq:job:*")) == []
    assert list(connection.scan_iter("dq:album*")) == []


def test_queued_album_state(env: dict[str, str], connection: redis.Redis) -> None:
    album_id, *track_ids = enqueue(env, "--album", "Later", "http://example.invalid/a.flac")
    album = listed(env)[album_id]
    assert album["state"] == "queued"
    assert album["tracks"] == {"total": 1, "completed": 0, "failed": 0}
    assert album["track_ids"] == track_ids
    as_json = json.loads(run_dq(["enqueue", "--json", "--album", "J", "http://example.invalid/b.flac"], env).stdout)
    assert [view["kind"] for view in as_json] == ["album", "track"]


@pytest.mark.timeout(90)
def test_deleting_an_album_midway_stops_running_tracks_and_removes_queued_ones(
    env: dict[str, str],
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    connection: redis.Redis,
    tmp_path: Path,
) -> None:
    env = {**env, "DQ_WORKERS": "2"}
    start_service(env)
    urls = [fault_server.url(f"/slow/2000000/s{n}.flac?seconds=30") for n in range(2)]
    urls += [fault_server.url(f"/bytes/1000/q{n}.flac") for n in range(2)]
    album_id, *track_ids = enqueue(env, "--album", "Halfway", *urls)
    folder = tmp_path / "downloads" / "Halfway"
    assert wait_until(lambda: len(list(folder.glob("*.part"))) == 2, 20)
    assert listed(env)[album_id]["state"] == "processing"

    started = time.monotonic()
    result = run_dq(["delete", album_id], env)
    elapsed = time.monotonic() - started
    assert (result.stdout.split("\n")[0], result.returncode) == (f"{album_id} cancelled", 0)
    assert elapsed < 8, elapsed
    assert wait_until(lambda: len(fault_server.disconnects) == 2, 1), fault_server.disconnects
    assert fault_server.active == 0
    assert not folder.exists() or list(folder.iterdir()) == []

    assert_never_back(connection, env, album_id, *track_ids)
    assert not any(path.startswith("/bytes/1000/q") for path in fault_server.requests)


def test_deleting_a_queued_album_leaves_nothing(env: dict[str, str], connection: redis.Redis) -> None:
    album_id, *track_ids = enqueue(env, "--album", "Q", "http://example.invalid/a.flac", "http://example.invalid/b")
    result = run_dq(["delete", album_id], env)
    assert (result.stdout, result.returncode) == (f"{album_id} deleted\n", 0)
    for item_id in [album_id, *track_ids]:
        assert traces(connection, item_id) == [], item_id
    assert listed(env) == {}
    assert run_dq(["delete", album_id], env).stdout == f"{album_id} not found\n"
