"""The command contract: output lines, JSON shapes and exit codes (no workers needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.faultserver import FaultServer
from tests.helpers import run_dq


def keys(connection: redis.Redis) -> list[bytes]:
    return sorted(connection.scan_iter("*"))


def test_enqueue_prints_one_id_per_line(env: dict[str, str], connection: redis.Redis) -> None:
    result = run_dq(["enqueue", "https://example.org/a.flac", "https://example.org/b.flac", "--dest", "A/B"], env)
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 2
    listed = json.loads(run_dq(["jobs", "--json"], env).stdout)
    assert [job["id"] for job in listed] == ids
    first = listed[0]
    for field in (
        "id",
        "kind",
        "state",
        "url",
        "dest",
        "error",
        "progress",
        "album_id",
        "enqueued_at",
        "started_at",
        "ended_at",
    ):
        assert field in first
    assert first["kind"] == "track" and first["state"] == "queued" and first["dest"] == "A/B"
    assert first["url"] == "https://example.org/a.flac" and first["error"] is None
    assert first["progress"]["bytes_done"] == 0
    assert first["enqueued_at"].endswith("Z") and first["started_at"] is None


def test_enqueue_json(env: dict[str, str]) -> None:
    result = run_dq(["enqueue", "--json", "https://example.org/a.flac"], env)
    assert result.returncode == 0
    [job] = json.loads(result.stdout)
    assert job["state"] == "queued" and job["url"] == "https://example.org/a.flac"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enqueue", "ftp://example.org/a.flac"], "not an http(s) URL"),
        (["enqueue", ""], "empty URL"),
        (["enqueue", "https://example.org/a.flac", "http://"], "no host"),
        (["enqueue", "https://example.org/a.flac", "--dest", "../outside"], "escapes the download dir"),
        (["enqueue", "https://example.org/a.flac", "--dest", "/etc"], "relative to the download dir"),
        (["enqueue", "https://example.org/a.flac", "--name", "../x.flac"], "plain file name"),
        (
            ["enqueue", "https://example.org/a.flac", "https://example.org/b.flac", "--name", "x.flac"],
            "exactly one URL",
        ),
        (["enqueue"], "no URL given"),
    ],
)
def test_bad_input_exits_2_and_enqueues_nothing(
    env: dict[str, str], connection: redis.Redis, args: list[str], message: str
) -> None:
    result = run_dq(args, env)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "nothing was enqueued" in result.stderr
    assert keys(connection) == []


def test_from_file_enqueues_one_batch(env: dict[str, str], tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text("# my list\nhttps://example.org/1.flac\n\n   https://example.org/2.flac  \n# done\n")
    result = run_dq(["enqueue", "--from-file", str(listing)], env)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == 2
    piped = run_dq(["enqueue", "--from-file", "-"], env, input="https://example.org/3.flac\n")
    assert len(piped.stdout.split()) == 1
    assert len(json.loads(run_dq(["jobs", "--json"], env).stdout)) == 3


def test_from_file_with_one_bad_line_refuses_the_batch(env: dict[str, str], connection: redis.Redis) -> None:
    result = run_dq(["enqueue", "--from-file", "-"], env, input="https://example.org/1.flac\n\nnot-a-url\n")
    assert result.returncode == 2
    assert "line 3" in result.stderr and "nothing was enqueued" in result.stderr
    assert keys(connection) == []


def test_redis_unreachable_exits_3(env: dict[str, str], tmp_path: Path) -> None:
    env = dict(env, REDIS_URL=f"unix://{tmp_path}/nothing.sock")
    for args in (["stats"], ["jobs"], ["enqueue", "https://example.org/a.flac"]):
        result = run_dq(args, env)
        assert result.returncode == 3, result
        assert "Redis is not reachable" in result.stderr
    embedded = {k: v for k, v in env.items() if k != "REDIS_URL"}
    result = run_dq(["stats"], embedded)
    assert result.returncode == 3 and "start bin/up" in result.stderr


def test_stats_json_shape_without_workers(env: dict[str, str]) -> None:
    run_dq(["enqueue", "https://example.org/a.flac"], env)
    figures = json.loads(run_dq(["stats", "--json"], env).stdout)
    assert figures == {
        "queue": {"queued": 1, "processing": 0, "completed": 0, "failed": 0, "total": 1},
        "worker": {"running": False, "activeDownloads": 0, "maxConcurrent": 4, "workers": 0},
    }


def test_jobs_state_filter(env: dict[str, str]) -> None:
    run_dq(["enqueue", "https://example.org/a.flac"], env)
    assert json.loads(run_dq(["jobs", "--json", "--state", "failed"], env).stdout) == []
    assert len(json.loads(run_dq(["jobs", "--json", "--state", "queued"], env).stdout)) == 1
    plain = run_dq(["jobs"], env).stdout
    assert "queued" in plain and "https://example.org/a.flac" in plain


def test_wait_without_terminal_prints_plain_lines(
    env: dict[str, str], fault_server: FaultServer, start_service: object
) -> None:
    start_service(env, wait_workers=4)  # type: ignore[operator]
    result = run_dq(["enqueue", "--wait", fault_server.url("/bytes/1000/w.flac")], env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stderr and "\x1b[" not in result.stderr
    failed = run_dq(["enqueue", "--wait", fault_server.url("/status/404/x.flac")], env, timeout=60)
    assert failed.returncode == 1
    assert "HTTP 404 Not Found" in failed.stderr
