"""DQ_QUEUE_WARN / DQ_QUEUE_MAX in the queue API that the CLI and the HTTP API share."""

from __future__ import annotations

from dataclasses import replace

import pytest
import redis

from config import Settings
from jobs import keys
from jobs.enqueue import backlog_warning, enqueue_album
from jobs.errors import QueueFull
from tests.helpers import enqueue_track


@pytest.mark.timeout(30)
def test_waiting_retries_count_and_a_refusal_enqueues_nothing(connection: redis.Redis, settings: Settings) -> None:
    limited = replace(settings, queue_warn=1, queue_max=3)
    assert backlog_warning(connection, limited) is None
    connection.zadd(keys.scheduled(limited.queue_name), {"retrying-1": 1, "retrying-2": 2})
    first = enqueue_track(connection, limited, "https://example.com/1.mp3")
    assert backlog_warning(connection, limited) == "Queue is long (3 queued, warning above 1)"
    with pytest.raises(QueueFull) as full:
        enqueue_track(connection, limited, "https://example.com/2.mp3")
    assert str(full.value) == "Queue full (3 queued, limit 3)"
    with pytest.raises(QueueFull):
        enqueue_album(connection, limited, "A", ["https://example.com/3.mp3"])
    assert connection.llen(keys.queue(limited.queue_name)) == 1
    assert not connection.zcard(keys.ALBUMS), "no album record of a refused album"
    assert enqueue_track(connection, limited, "https://example.com/1.mp3") == first, "an existing job adds nothing"


@pytest.mark.timeout(30)
def test_the_limit_is_exact_for_one_batch(connection: redis.Redis, settings: Settings) -> None:
    limited = replace(settings, queue_max=2)
    enqueue_album(connection, limited, "Two", ["https://example.com/a.mp3", "https://example.com/b.mp3"])
    assert connection.llen(keys.queue(limited.queue_name)) == 2
    with pytest.raises(QueueFull):
        enqueue_track(connection, limited, "https://example.com/c.mp3")
