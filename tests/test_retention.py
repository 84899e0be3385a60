"""DQ_KEEP_COMPLETED / DQ_KEEP_FAILED: jobs, albums and their history go when their time is up."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import pytest
import redis

from config import Settings
from jobs import album, history, keys, retention
from jobs.enqueue import enqueue_album
from jobs.views import list_jobs
from jobs.worker import DownloadWorker
from tests.faultserver import FaultServer
from tests.helpers import enqueue_track, wait_until


@pytest.mark.timeout(60)
def test_completed_and_failed_jobs_are_kept_as_long_as_their_settings(
    connection: redis.Redis,
    settings: Settings,
    fault_server: FaultServer,
    burst_worker: Callable[[], DownloadWorker],
) -> None:
    short = replace(settings, keep_completed=2, keep_failed=8)
    # The failing one first: the completed one, run last, is still kept when the worker is done
    # (on a loaded machine a fork and a 404 can take longer than its 2 s).
    failed = enqueue_track(connection, short, fault_server.url("/status/404/gone.flac"))
    done = enqueue_track(connection, short, fault_server.url("/bytes/100/kept.flac"))
    burst_worker()
    states = {view["id"]: view["state"] for view in list_jobs(connection, short)}
    assert states == {done: "completed", failed: "failed"}
    assert wait_until(lambda: done not in {v["id"] for v in list_jobs(connection, short)}, 10, interval=0.2)
    assert failed in {view["id"] for view in list_jobs(connection, short)}, "a failed job is kept longer"
    assert 2 < connection.ttl(keys.job(failed)) <= 8
    assert wait_until(lambda: not list_jobs(connection, short), 15, interval=0.2)


@pytest.mark.timeout(60)
def test_an_album_record_goes_once_none_of_its_jobs_is_kept(
    connection: redis.Redis,
    settings: Settings,
    fault_server: FaultServer,
    burst_worker: Callable[[], DownloadWorker],
) -> None:
    short = replace(settings, keep_completed=1, keep_failed=1)
    record, _jobs = enqueue_album(connection, short, "Short", [fault_server.url("/bytes/100/t.flac")])
    burst_worker()
    assert retention.prune_albums(connection, short, time.time() + 2) == [], "its track is still kept"
    assert album.exists(connection, record.id)
    assert wait_until(lambda: not connection.exists(*(keys.job(i) for i in record.job_ids)), 10, interval=0.2)
    longer = replace(short, keep_completed=1000, keep_failed=1000)
    assert retention.prune_albums(connection, longer, time.time()) == [], "younger than the retention: not read"
    assert retention.prune_albums(connection, short, time.time() + 2) == [record.id]
    assert not album.exists(connection, record.id)
    assert connection.zscore(keys.ALBUMS, record.id) is None


@pytest.mark.timeout(30)
def test_events_are_kept_as_long_as_the_longest_setting(connection: redis.Redis, settings: Settings) -> None:
    kept = replace(settings, keep_completed=100, keep_failed=1000)
    history.record(connection, "job-1", history.ENQUEUED)
    history.record(connection, "job-1", history.COMPLETED)
    assert retention.trim_history(connection, kept, time.time() + 999) == 0
    assert retention.trim_history(connection, kept, time.time() + 1001) == 2
    assert history.read(connection, "job-1") == []


@pytest.mark.timeout(10)
def test_the_defaults_are_a_day_and_a_week() -> None:
    defaults = Settings.from_env({})
    assert (defaults.keep_completed, defaults.keep_failed) == (86400, 604800)
    now = 1_000_000_000.0
    assert retention.history_horizon(defaults, now) == now - 604800
