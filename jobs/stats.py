"""Queue and worker figures in the original API's shape (`bin/stats`, the dashboard, the API)."""

from __future__ import annotations

from typing import Any

import redis
from rq.queue import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from config import Settings
from jobs.connection import SERIALIZER
from jobs.views import started_job_ids
from jobs.workers import active_job_ids, live_workers


def stats(connection: redis.Redis, settings: Settings) -> dict[str, Any]:
    """Queue and worker figures in the original API's shape."""
    queue = Queue(settings.queue_name, connection=connection, serializer=SERIALIZER)
    name = settings.queue_name
    queued = queue.count
    processing = len(started_job_ids(connection, settings))
    completed = FinishedJobRegistry(name, connection=connection).get_job_count(cleanup=False)
    failed = FailedJobRegistry(name, connection=connection).get_job_count(cleanup=False)
    workers = len(live_workers(connection, settings))
    return {
        "queue": {
            "queued": queued,
            "processing": processing,
            "completed": completed,
            "failed": failed,
            "total": queued + processing + completed + failed,
        },
        "worker": {
            "running": workers > 0,
            "activeDownloads": len(active_job_ids(connection, settings)),
            "maxConcurrent": settings.workers,
            "workers": workers,
        },
    }
