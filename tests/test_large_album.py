"""A 10,000-track album (the playlist cap) is deleted whole in seconds, and the jobs around it
keep their places in the queue."""

from __future__ import annotations

import dataclasses
import time

import pytest
import redis

from config import Settings
from jobs import keys
from jobs.deletion import DELETED, delete_jobs
from jobs.enqueue import TrackRequest, enqueue_album, enqueue_tracks
from jobs.playlist import MAX_PLAYLIST_ENTRIES


@pytest.mark.timeout(120)
def test_deleting_a_10000_track_album_takes_seconds_and_leaves_its_neighbours(
    connection: redis.Redis, settings: Settings
) -> None:
    # More than DQ_QUEUE_MAX's default (10,000) is queued here on purpose.
    settings = dataclasses.replace(settings, allow_private_networks=True, queue_max=2 * MAX_PLAYLIST_ENTRIES)
    before = enqueue_tracks(connection, settings, [TrackRequest(f"http://192.0.2.1/b{i}") for i in range(3)])
    urls = [f"http://192.0.2.1/{number}.mp3" for number in range(MAX_PLAYLIST_ENTRIES)]
    record, tracks = enqueue_album(connection, settings, "Big", urls)
    after = enqueue_tracks(connection, settings, [TrackRequest(f"http://192.0.2.1/a{i}") for i in range(3)])
    assert connection.llen(keys.queue(settings.queue_name)) == MAX_PLAYLIST_ENTRIES + 6

    started = time.monotonic()
    assert delete_jobs(connection, settings, [record.id]) == [(record.id, DELETED)]
    elapsed = time.monotonic() - started

    assert elapsed < 10, f"took {elapsed:.1f}s"  # one job at a time took 14 s here; batched, about 2
    queued = [item.decode() for item in connection.lrange(keys.queue(settings.queue_name), 0, -1)]
    assert queued == before + after
    assert not any(connection.exists(keys.job(job_id)) for job_id in tracks[:: max(1, len(tracks) // 100)])
    assert connection.exists(keys.album(record.id)) == 0
