"""What `jobs.rq_compat` and the worker's hooks assume about RQ: fails loudly on an RQ upgrade
that changes any of it (see the compatibility module's docstring). That RQ runs our
exception handler before `handle_job_failure` is shown by behaviour in
test_worker_inprocess.py: without it every failure would read "Download process died"."""

from __future__ import annotations

import inspect

import pytest
import redis
import rq
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from rq.worker import Worker

from config import Settings
from jobs import keys, rq_compat
from jobs.connection import SERIALIZER
from jobs.enqueue import TrackRequest, track_job_data
from jobs.worker import DownloadWorker

pytestmark = pytest.mark.timeout(30)

# Each hook DownloadWorker overrides, and the parameters it reads by name.
HOOKS = {
    "bootstrap": {"logging_level", "date_format", "log_format"},
    "perform_job": {"job"},
    "kill_horse": set(),  # called by RQ's stop-job command
    "prepare_job_execution": {"job"},
    "execute_job": {"job", "queue"},
    "handle_execution_ended": {"job"},
    "handle_job_success": {"job", "execution"},
    "handle_job_failure": {"job", "exc_string", "execution"},
}


def test_rq_is_the_minor_version_the_overrides_were_checked_against() -> None:
    assert rq.__version__.startswith("3.0."), rq.__version__


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_each_overridden_hook_still_takes_the_arguments_we_read(hook: str) -> None:
    parameters = set(inspect.signature(getattr(Worker, hook)).parameters)
    assert HOOKS[hook] <= parameters


def test_the_worker_overrides_nothing_private_of_rq() -> None:
    ours = {name for name in vars(DownloadWorker) if not name.startswith("__")}
    overridden = {name for name in ours if hasattr(Worker, name)}
    assert {name for name in overridden if name.startswith("_")} == set()
    # job_class, death_penalty_class: documented class attributes
    assert overridden == set(HOOKS) | {"job_class", "death_penalty_class"}


def test_hook_arguments_binds_by_rq_signature_and_refuses_unknown_ones() -> None:
    bound = rq_compat.hook_arguments(Worker.handle_job_failure, object(), ("job", "queue"), {"exc_string": "x"})
    assert bound.arguments["job"] == "job" and bound.arguments["exc_string"] == "x"
    assert bound.arguments["execution"] is None
    with pytest.raises(TypeError):
        rq_compat.hook_arguments(Worker.handle_job_failure, object(), ("job", "queue"), {"no_such_argument": 1})


def test_rq_stores_the_maintenance_lock_value_we_recognise(connection: redis.Redis) -> None:
    queue = Queue("compat", connection=connection)
    assert queue.acquire_maintenance_lock()
    assert connection.get(keys.maintenance_lock("compat")) == rq_compat.MAINTENANCE_LOCK_VALUE


def test_record_failure_marks_the_job_failed_with_our_text(connection: redis.Redis) -> None:
    queue = Queue("compat", connection=connection, serializer=SERIALIZER)
    job = queue.enqueue("jobs.track.download_track", "http://example.com/x")
    job.set_status(JobStatus.STARTED)
    with connection.pipeline() as pipeline:
        pipeline.multi()
        rq_compat.record_failure(job, "Recovered from server crash while processing", pipeline)
        pipeline.execute()
    fetched = Job.fetch(job.id, connection=connection, serializer=SERIALIZER)
    assert fetched.get_status() == JobStatus.FAILED
    assert job.id in FailedJobRegistry("compat", connection=connection).get_job_ids(cleanup=False)
    latest = fetched.latest_result()
    assert latest is not None and latest.exc_string == "Recovered from server crash while processing"


def test_our_key_names_are_the_ones_rq_writes(connection: redis.Redis) -> None:
    queue = Queue("compat", connection=connection, serializer=SERIALIZER)
    parent = queue.enqueue("jobs.track.download_track", "http://example.com/a")
    child = queue.enqueue("jobs.track.download_track", "http://example.com/b", depends_on=parent)
    assert connection.exists(keys.job(child.id))
    assert connection.exists(keys.job_dependencies(child.id))
    assert connection.exists(keys.job_dependents(parent.id))
    assert connection.lrange(keys.queue("compat"), 0, -1) == [parent.id.encode()]


def test_rq_stores_the_job_and_worker_fields_we_read_directly(connection: redis.Redis) -> None:
    queue = Queue("compat", connection=connection, serializer=SERIALIZER)
    job = queue.enqueue("jobs.track.download_track", "http://example.com/a", meta={"path": "x"})
    worker = Worker([queue], connection=connection, name="compat-worker")
    worker.register_birth()
    with connection.pipeline() as pipeline:
        job.prepare_for_execution(worker.name, pipeline)
        pipeline.execute()
    fields = {key.decode() for key in connection.hkeys(keys.job(job.id))}
    assert {"status", "meta", "origin", "worker_name", "started_at", "timeout"} <= fields
    assert connection.hget(keys.job(job.id), "status") == b"started"
    assert SERIALIZER.loads(connection.hget(keys.job(job.id), "meta")) == {"path": "x"}
    worker_fields = {key.decode() for key in connection.hkeys(keys.worker(worker.name))}
    assert {"hostname", "pid", "birth"} <= worker_fields
    worker.register_death()
    assert connection.hexists(keys.worker(worker.name), "death")


def test_a_scheduled_retry_is_stored_as_rq_stores_scheduled_jobs(connection: redis.Redis) -> None:
    """`jobs.retries` writes the job hash's status and meta and the ScheduledJobRegistry by hand
    (exact float due times), and moves due jobs with a Lua script: RQ must read them as its own."""
    from datetime import UTC, datetime

    from rq.registry import ScheduledJobRegistry

    from jobs import retries

    queue = Queue("compat", connection=connection, serializer=SERIALIZER)
    job = queue.enqueue("jobs.track.download_track", url="http://example.com/a.flac")
    queue.remove(job.id)
    policy = retries.RetryPolicy(max_attempts=3, delays=(5,), retry_after_max=10)
    failure = retries.Failure("HTTP 503 Service Unavailable", retryable=True)
    decision = retries.Decision(True, 1, 1_900_000_000.5)
    with connection.pipeline() as pipe:
        retries.schedule(pipe, job, decision, failure, policy)
        pipe.execute()
    fetched = Job.fetch(job.id, connection=connection, serializer=SERIALIZER)
    assert fetched.get_status() == JobStatus.SCHEDULED
    assert fetched.meta["attempts"] == 1 and fetched.meta["last_error"] == failure.line
    registry = ScheduledJobRegistry(queue=queue)
    assert registry.get_job_ids(cleanup=False) == [job.id]
    assert registry.get_scheduled_time(job.id) == datetime.fromtimestamp(1_900_000_000.5, UTC)
    assert retries.promote_due(connection, "compat", now=1_900_000_001) == [job.id]
    assert keys.queue("compat").encode() in connection.smembers(keys.QUEUES)
    assert queue.get_job_ids() == [job.id]
    dequeued = Queue.dequeue_any([queue], timeout=None, connection=connection, serializer=SERIALIZER)
    assert dequeued is not None and dequeued[0].id == job.id and dequeued[0].get_status() == JobStatus.QUEUED


def test_callback_names_reads_what_rq_stores_without_importing(connection: redis.Redis) -> None:
    from rq import Callback, Queue

    from jobs.connection import SERIALIZER
    from jobs.rq_compat import callback_names

    queue = Queue("compat", connection=connection, serializer=SERIALIZER)
    job = queue.enqueue(
        "jobs.track.download_track",
        on_success=Callback("x.success"),
        on_failure=Callback("x.failure"),
        on_stopped=Callback("x.stopped"),
    )
    fetched = Job.fetch(job.id, connection=connection, serializer=SERIALIZER)
    assert callback_names(fetched) == ["x.success", "x.failure", "x.stopped"]
    plain = Job.fetch(queue.enqueue("jobs.track.download_track").id, connection=connection, serializer=SERIALIZER)
    assert callback_names(plain) == []


def test_write_queued_stores_what_enqueue_many_stores(connection: redis.Redis) -> None:
    settings = Settings.from_env({})
    data = track_job_data(TrackRequest("http://example.com/a.flac", dest="x", name="A.flac"), settings)
    theirs = Queue("theirs", connection=connection, serializer=SERIALIZER)
    ours = Queue("ours", connection=connection, serializer=SERIALIZER)
    [their_job] = theirs.enqueue_many([data])
    with connection.pipeline() as pipeline:
        [our_id] = rq_compat.write_queued(pipeline, ours, [data])
        pipeline.execute()

    stamps = {b"created_at", b"enqueued_at"}
    their_hash = connection.hgetall(keys.job(their_job.id))
    our_hash = connection.hgetall(keys.job(our_id))
    assert our_hash.keys() == their_hash.keys()
    assert {k: v for k, v in our_hash.items() if k not in stamps} == {
        k: v.replace(b"theirs", b"ours") for k, v in their_hash.items() if k not in stamps
    }
    assert our_hash[b"created_at"] == our_hash[b"enqueued_at"]
    assert connection.lrange(ours.key, 0, -1) == [our_id.encode()]
    assert {ours.key.encode(), theirs.key.encode()} <= connection.smembers(Queue.redis_queues_keys)
    job = Job.fetch(our_id, connection=connection, serializer=SERIALIZER)
    assert (job.func_name, job.kwargs, job.meta, job.get_status()) == (
        their_job.func_name,
        their_job.kwargs,
        their_job.meta,
        JobStatus.QUEUED,
    )
    assert job.enqueued_at is not None and job.timeout == settings.job_timeout
