"""Short ids: any unique prefix of at least six characters stands for the whole id."""

from __future__ import annotations

import pytest
import redis
from rq.queue import Queue

from config import Settings
from jobs import keys
from jobs.connection import SERIALIZER
from jobs.enqueue import TrackRequest, enqueue_album, enqueue_tracks, track_job_data
from jobs.ids import MIN_PREFIX, AmbiguousId, resolve, resolve_all
from tests.helpers import enqueue, listed, run_dq

pytestmark = pytest.mark.timeout(30)


def fixed_ids(connection: redis.Redis, settings: Settings, *job_ids: str) -> None:
    queue = Queue(settings.queue_name, connection=connection, serializer=SERIALIZER)
    queue.enqueue_many(
        [track_job_data(TrackRequest(f"http://example.com/{i}"), settings, job_id) for i, job_id in enumerate(job_ids)]
    )


def test_a_unique_prefix_resolves_to_its_job(connection: redis.Redis, settings: Settings) -> None:
    [job_id] = enqueue_tracks(connection, settings, [TrackRequest("http://example.com/a.flac")])
    assert resolve(connection, job_id[:8]) == job_id
    assert resolve(connection, job_id[:MIN_PREFIX]) == job_id
    assert resolve(connection, job_id) == job_id


def test_too_short_or_unknown_prefixes_stay_as_typed(connection: redis.Redis, settings: Settings) -> None:
    [job_id] = enqueue_tracks(connection, settings, [TrackRequest("http://example.com/a.flac")])
    assert resolve(connection, job_id[: MIN_PREFIX - 1]) == job_id[: MIN_PREFIX - 1]
    assert resolve(connection, "zzzzzzzz") == "zzzzzzzz"  # ids are hex: nothing starts with it
    assert resolve(connection, "*") == "*"  # a glob character matches nothing by itself


def test_an_ambiguous_prefix_names_its_candidates(connection: redis.Redis, settings: Settings) -> None:
    fixed_ids(connection, settings, "abcdef01aaaa", "abcdef02bbbb", "99999999cccc")
    with pytest.raises(AmbiguousId) as caught:
        resolve(connection, "abcdef")
    assert caught.value.candidates == ["abcdef01aaaa", "abcdef02bbbb"]
    assert "abcdef01aaaa" in str(caught.value) and "abcdef02bbbb" in str(caught.value)
    assert resolve_all(connection, ["abcdef01", "999999"]) == ["abcdef01aaaa", "99999999cccc"]


def test_albums_and_known_ids_resolve_too(connection: redis.Redis, settings: Settings) -> None:
    record, _jobs = enqueue_album(connection, settings, "Live", ["http://example.com/1.flac"])
    assert resolve(connection, record.id[:10]) == record.id
    # Ids only the history still knows (a deleted job) count when the caller passes them.
    assert resolve(connection, "deadbeef", known=["deadbeef0123"]) == "deadbeef0123"


def test_delete_and_history_take_the_short_ids_the_bars_show(
    connection: redis.Redis, env: dict[str, str], settings: Settings
) -> None:
    [job_id] = enqueue(env, "http://example.com/short.flac")
    short = job_id[:8]
    result = run_dq(["delete", short], env)
    assert (result.returncode, result.stdout.split()) == (0, [job_id, "deleted"]), result.stderr
    assert not connection.exists(keys.job(job_id))
    history = run_dq(["jobs", "--history", short], env)
    assert history.returncode == 0, history.stderr
    assert f"{job_id}  deleted  Deleted by user" in history.stdout  # only the history knows it now


def test_an_ambiguous_short_id_changes_nothing_and_names_the_candidates(
    connection: redis.Redis, env: dict[str, str], settings: Settings
) -> None:
    fixed_ids(connection, settings, "abcdef01aaaa", "abcdef02bbbb")
    result = run_dq(["delete", "abcdef"], env)
    assert result.returncode == 2
    assert "abcdef01aaaa" in result.stderr and "abcdef02bbbb" in result.stderr
    assert "nothing was changed" in result.stderr
    assert sorted(listed(env)) == ["abcdef01aaaa", "abcdef02bbbb"]
