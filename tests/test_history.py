"""The event history (`dq jobs --history [ID]`): every state change with its exact message,
kept after the job itself is deleted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from jobs import history as jobs_history
from jobs import keys, messages
from jobs.paths import part_path
from tests.faultserver import FaultServer
from tests.helpers import Service, enqueue, run_dq, status_of, wait_until


def history(env: dict[str, str], *item_id: str) -> list[dict[str, Any]]:
    result = run_dq(["jobs", "--history", *item_id, "--json"], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def events_of(env: dict[str, str], item_id: str) -> list[tuple[str, str]]:
    return [(event["event"], event["message"]) for event in history(env, item_id)]


@pytest.mark.timeout(90)
def test_history_lists_every_state_change_with_the_exact_messages(
    env: dict[str, str],
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    connection: redis.Redis,
    tmp_path: Path,
) -> None:
    service = start_service(env)
    done_url = fault_server.url("/bytes/1000/done.flac")
    missing_url = fault_server.url("/status/404/missing.flac")
    long_url = fault_server.url("/slow/3000000/long.flac?seconds=30")
    [done] = enqueue(env, done_url)
    [missing] = enqueue(env, missing_url)
    [running] = enqueue(env, long_url)
    album_id, track = enqueue(env, "--album", "Kept", "http://example.invalid/never.flac")
    assert wait_until(lambda: status_of(connection, done) == "finished", 20)
    assert wait_until(lambda: status_of(connection, missing) == "failed", 20)
    assert wait_until(lambda: part_path(tmp_path / "downloads" / "long.flac", running).exists(), 20)
    assert wait_until(lambda: status_of(connection, track) == "failed", 20)

    deleted = run_dq(["delete", running, done, album_id], env)
    assert deleted.stdout.splitlines() == [f"{running} cancelled", f"{done} deleted", f"{album_id} deleted"]

    worker_name = history(env, done)[1]["message"]
    assert worker_name.startswith("dq.")
    assert events_of(env, done) == [
        ("enqueued", done_url),
        ("started", worker_name),
        ("completed", ""),
        ("deleted", messages.DELETED),
    ]
    assert events_of(env, missing)[-1] == ("failed", "HTTP 404 Not Found")
    assert [event for event, _ in events_of(env, missing)] == ["enqueued", "started", "failed"]
    assert events_of(env, running)[0] == ("enqueued", long_url)
    assert events_of(env, running)[-1] == ("cancelled", messages.CANCELLED)
    assert "completed" not in [event for event, _ in events_of(env, running)]
    # An album's history holds its own events and its tracks'.
    album_events = history(env, album_id)
    assert [(e["job"], e["event"]) for e in album_events] == [
        (album_id, "enqueued"),
        (track, "enqueued"),
        (track, "started"),
        (track, "failed"),
        (track, "deleted"),
        (album_id, "deleted"),
    ]
    assert album_events[-1]["message"] == messages.DELETED
    assert album_events[3]["message"].startswith("Connection failed") or album_events[3]["message"].startswith(
        "Host not found"
    )
    assert all(event["album"] == album_id for event in album_events)

    # The whole history, as text: one line per event, time first.
    text = run_dq(["jobs", "--history"], env)
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert any(line.endswith(f"{running}  cancelled  {messages.CANCELLED}") for line in lines), lines
    assert any(line.endswith(f"{done}  deleted  {messages.DELETED}") for line in lines), lines
    assert any(line.endswith(f"{missing}  failed  HTTP 404 Not Found") for line in lines), lines
    assert any(f"{track}  deleted  {messages.DELETED}  (album {album_id})" in line for line in lines), lines
    assert len(lines) == len(history(env))
    one = run_dq(["jobs", "--history", missing], env).stdout.splitlines()
    assert len(one) == 3 and all(f"  {missing}  " in line for line in one)

    # Worker-side events are log lines too.
    assert f"job {missing} failed: HTTP 404 Not Found" in service.log()
    assert f"job {done} completed" in service.log()


def test_history_of_an_unknown_id_exits_1(env: dict[str, str]) -> None:
    result = run_dq(["jobs", "--history", "no-such-job"], env)
    assert result.returncode == 1
    assert "no events for no-such-job" in result.stderr
    assert run_dq(["jobs", "--history"], env).stdout.strip() == "no events"


def test_a_batch_of_events_is_stored_as_one_by_one_events_are(connection: redis.Redis) -> None:
    entries = [("job-a", "http://example.com/a.flac", None), ("job-b", "", "album-1"), ("job-c", "", None)]
    for job_id, message, album_id in entries:
        jobs_history.record(connection, job_id, jobs_history.ENQUEUED, message, album_id=album_id)
    jobs_history.record_many(connection, jobs_history.ENQUEUED, entries)
    jobs_history.record_many(connection, jobs_history.ENQUEUED, [])

    stored = [fields for _id, fields in connection.xrange(keys.EVENTS)]
    assert len(stored) == 6
    one_by_one, batched = stored[:3], stored[3:]
    assert [{k: v for k, v in e.items() if k != b"at"} for e in batched] == [
        {k: v for k, v in e.items() if k != b"at"} for e in one_by_one
    ]
    assert [list(e) for e in batched] == [list(e) for e in one_by_one]  # the same fields in the same order
    assert all(abs(float(e[b"at"]) - float(one_by_one[0][b"at"])) < 5 for e in batched)
