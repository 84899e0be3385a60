"""Redis is data, never code: a job written into Redis by hand naming a function that is not
ours (or a callback) fails with the refusal line, and nothing of it is imported or run.

Injected as an attacker with access to Redis would do it: RQ's own `Queue.enqueue` with the
JSON serializer our workers use, naming `os.system` or a module whose import leaves a marker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq import Callback, Queue
from rq.job import Job

from config import Settings
from jobs import messages
from jobs.allowed import ALLOWED_FUNCTIONS, AllowedJob, refusal
from jobs.connection import SERIALIZER
from jobs.worker import DownloadWorker
from tests.helpers import Service, error_of, status_of, wait_ended, wait_status

pytestmark = pytest.mark.timeout(90)


def attacker_queue(connection: redis.Redis, settings: Settings) -> Queue:
    return Queue(settings.queue_name, connection=connection, serializer=SERIALIZER)


def test_the_allowed_functions_are_the_ones_we_enqueue() -> None:
    assert ALLOWED_FUNCTIONS == {"jobs.track.download_track", "jobs.playlist.fetch_playlist"}
    assert DownloadWorker.job_class is AllowedJob


@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("os.system", ("touch {marker}",)),  # would run a shell command
        ("tests.hostile_module.run", ()),  # importing it alone would leave the marker
    ],
)
def test_a_foreign_function_injected_into_redis_is_neither_imported_nor_run(
    tmp_path: Path,
    connection: redis.Redis,
    settings: Settings,
    burst_worker: Callable[[], DownloadWorker],
    monkeypatch: pytest.MonkeyPatch,
    function: str,
    args: tuple[str, ...],
) -> None:
    marker = tmp_path / "marker"
    monkeypatch.setenv("DQ_TEST_IMPORT_MARKER", str(marker))
    job = attacker_queue(connection, settings).enqueue(function, *(arg.format(marker=marker) for arg in args))
    burst_worker()
    assert not marker.exists()
    assert status_of(connection, job.id) == "failed"
    assert error_of(connection, job.id) == messages.function_not_allowed(function)
    assert error_of(connection, job.id) == f"Refused: job function not allowed ({function})"


def test_a_callback_on_one_of_our_functions_is_refused_unimported(
    tmp_path: Path,
    connection: redis.Redis,
    settings: Settings,
    burst_worker: Callable[[], DownloadWorker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = tmp_path / "imported"
    monkeypatch.setenv("DQ_TEST_IMPORT_MARKER", str(marker))
    job = attacker_queue(connection, settings).enqueue(
        "jobs.track.download_track",
        kwargs={"url": "http://192.0.2.1/x.mp3", "dest": ""},
        on_failure=Callback("tests.hostile_module.run"),
        on_success=Callback("tests.hostile_module.run"),
    )
    burst_worker()
    assert not marker.exists()
    assert status_of(connection, job.id) == "failed"
    line = error_of(connection, job.id) or ""
    assert line.startswith("Refused: job function not allowed (jobs.track.download_track with callback")


def test_our_own_jobs_pass_the_check(connection: redis.Redis, settings: Settings) -> None:
    job = attacker_queue(connection, settings).enqueue("jobs.track.download_track", kwargs={"url": "x"})
    fetched = AllowedJob.fetch(job.id, connection=connection, serializer=SERIALIZER)
    assert refusal(fetched) is None
    assert fetched.func.__name__ == "download_track"
    hostile = Job.fetch(
        attacker_queue(connection, settings).enqueue("os.system", "true").id,
        connection=connection,
        serializer=SERIALIZER,
    )
    assert refusal(hostile) is not None


def test_real_worker_processes_refuse_an_injected_job(
    tmp_path: Path,
    env: dict[str, str],
    connection: redis.Redis,
    settings: Settings,
    start_service: Callable[..., Service],
) -> None:
    """The supervisor's own `rq worker` processes, started as in production."""
    start_service(env)
    marker = tmp_path / "owned"
    job = attacker_queue(connection, settings).enqueue("os.system", f"touch {marker}")
    wait_ended(connection, [job.id], timeout=60)
    wait_status(connection, job.id, "failed")
    assert error_of(connection, job.id) == "Refused: job function not allowed (os.system)"
    assert not marker.exists()
