"""The RQ worker class our workers run (`rq worker -w jobs.worker.DownloadWorker`).

It differs from RQ's forking `Worker` in five ways:
- it runs each job itself, in its main thread, like RQ's `SimpleWorker`: a fork per job cost
  more than a whole tiny download (measured: a forking worker tops out near 100 jobs/s on
  2 cores, most of it the kernel copying and tearing down page tables). What the fork gave
  is kept another way: the job timeout is RQ's SIGALRM death penalty; RQ's stop command
  interrupts the job in place (`jobs.interrupt`); a job that crashes or hangs past every
  signal takes its worker down with it, and the supervisor fails the job with the right
  message and starts a new worker (`supervisor.recovery`, `supervisor.cleanup`). Every
  worker dies with the supervisor (Linux parent-death signal, set when it is spawned);
- a failed attempt is tried again while attempts remain (`jobs.retries`: the job waits in
  RQ's ScheduledJobRegistry, holding no worker); the last one is stored with the user's
  one-line error first (`Download timeout (30s)`, `Processing timeout (300s exceeded)`, ...),
  RQ's traceback after it;
- a job that was deleted while it ran is never written back (no status, result, heartbeat);
- only our own job functions run (`jobs.allowed`): a job written into Redis by hand naming
  anything else fails with `Refused: job function not allowed (...)`, nothing of it imported;
- the job code and `requests` are imported when the worker starts, not by its first job.

Only RQ's public surface is used: an exception handler (`push_exc_handler`) hears the
job's exception, `death_penalty_class` is ours, and the documented hooks are overridden with
`*args, **kwargs`, their arguments read through `jobs.rq_compat.hook_arguments` (see there).
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import requests  # noqa: F401  (imported at start on purpose, see above)
from rq.job import Job
from rq.logutils import setup_loghandlers
from rq.utils import now
from rq.worker import SimpleWorker, Worker

import jobs.playlist  # noqa: F401  (imported at start on purpose, see above)
import jobs.track  # noqa: F401  (imported at start on purpose, see above)
from config import Settings
from jobs import history, interrupt, messages, metrics, parts, retries
from jobs.allowed import AllowedJob
from jobs.connection import SERIALIZER
from jobs.deletion import purge_job
from jobs.failure import failure_reason
from jobs.logs import setup_worker_logging
from jobs.rq_compat import call_with, hook_arguments
from jobs.tombstones import is_deleted, write_meta_if_alive


def album_of(job: Job) -> str | None:
    return (job.kwargs or {}).get("album_id")


class DownloadWorker(SimpleWorker):
    job_class = AllowedJob
    death_penalty_class = interrupt.StoppableDeathPenalty

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("serializer", SERIALIZER)
        # Not a default: `rq worker` passes its own --job-class (rq.job.Job unless told), and a
        # job class that imports whatever a job names must never run here (jobs.allowed).
        kwargs["job_class"] = AllowedJob
        super().__init__(*args, **kwargs)
        self.settings = Settings.from_env()
        self.policy = retries.RetryPolicy.from_settings(self.settings)
        # job id → how its attempt ended, heard by the exception handler just before RQ calls
        # handle_job_failure. (RQ's maintenance calls the handlers too, for jobs of other
        # workers it cleans up: those are left to our supervisor.)
        self.failures: dict[str, retries.Failure] = {}
        self.causes: dict[str, str] = {}  # job id → its failure's cause label (jobs.metrics)
        self.performing: str | None = None  # the job this worker runs now
        self.push_exc_handler(self._remember_failure)

    def _remember_failure(
        self,
        job: Job,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # A cold shutdown (RQ's SystemExit from a second SIGTERM) ends the job like a kill would.
        cold_stop = isinstance(exc_value, (SystemExit, KeyboardInterrupt))
        if job.id == self.performing and not cold_stop:
            self.failures[job.id] = retries.failure_of(exc_value, job.timeout or 0)
            self.causes[job.id] = metrics.cause_of(exc_value)
        return None  # RQ's own handlers (if any) run too

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        bound = hook_arguments(Worker.bootstrap, self, args, kwargs)
        a = bound.arguments
        # Our own loggers go where RQ's go.
        setup_loghandlers(a["logging_level"], a["date_format"], a["log_format"], name="dq")
        # DQ_LOG_FORMAT for RQ's own handlers (rq.logutils) and the root logger, no credentials,
        # an expected failure one line: before RQ's bootstrap logs, and again for the rq.job
        # handlers it sets up.
        setup_worker_logging(self.settings.log_format)
        super().bootstrap(*args, **kwargs)
        setup_worker_logging(self.settings.log_format)

    def perform_job(self, *args: Any, **kwargs: Any) -> bool:
        job: Job = hook_arguments(Worker.perform_job, self, args, kwargs).arguments["job"]
        self.performing = job.id
        try:
            return bool(super().perform_job(*args, **kwargs))
        finally:
            self.performing = None

    def kill_horse(self, *args: Any, **kwargs: Any) -> None:
        """RQ's stop command kills the horse (from the pubsub thread); here the job is stopped in place.

        RQ's cold shutdown calls it in the main thread, then raises SystemExit, which ends the job anyway.
        """
        job_id = self.performing
        if threading.current_thread() is threading.main_thread():
            return
        if job_id is not None and interrupt.request_stop(job_id):
            self.log.info("Worker %s: stopping job %s in place (stop command)", self.name, job_id)

    def prepare_job_execution(self, *args: Any, **kwargs: Any) -> None:
        job: Job = hook_arguments(Worker.prepare_job_execution, self, args, kwargs).arguments["job"]
        super().prepare_job_execution(*args, **kwargs)
        history.record(self.connection, job.id, history.STARTED, self.name, album_id=album_of(job))

    def execute_job(self, *args: Any, **kwargs: Any) -> None:
        bound = hook_arguments(Worker.execute_job, self, args, kwargs)
        job: Job = bound.arguments["job"]
        super().execute_job(*args, **kwargs)
        if is_deleted(self.connection, job.id):
            # Runs after the job's last write and after our last heartbeat for it, so
            # whatever our own bookkeeping wrote after the deletion began goes here for good.
            purge_job(self.connection, job.id, job.origin)

    def handle_execution_ended(self, *args: Any, **kwargs: Any) -> None:
        job: Job = hook_arguments(Worker.handle_execution_ended, self, args, kwargs).arguments["job"]
        if is_deleted(self.connection, job.id):
            job.ended_at = now()  # what RQ's version sets, minus the heartbeat that would recreate the job
            return
        super().handle_execution_ended(*args, **kwargs)

    def handle_job_success(self, *args: Any, **kwargs: Any) -> None:
        bound = hook_arguments(Worker.handle_job_success, self, args, kwargs)
        job: Job = bound.arguments["job"]
        if is_deleted(self.connection, job.id):
            self._forget(job, bound.arguments["execution"])
            return
        super().handle_job_success(*args, **kwargs)
        result = job.returned if isinstance(job, AllowedJob) else job.return_value()
        with self.connection.pipeline() as pipeline:
            history.record(pipeline, job.id, history.COMPLETED, album_id=album_of(job))
            metrics.record_completed(pipeline, metrics.seconds_between(job.started_at, job.ended_at), result)
            pipeline.execute()

    def handle_job_failure(self, *args: Any, **kwargs: Any) -> None:
        bound = hook_arguments(Worker.handle_job_failure, self, args, kwargs)
        job: Job = bound.arguments["job"]
        if is_deleted(self.connection, job.id):
            self._forget(job, bound.arguments["execution"])
            return
        failure = self.failures.pop(job.id, None)
        cause = self.causes.pop(job.id, metrics.DIED)
        if failure is None:  # RQ's maintenance ends a job that reported nothing (its process died)
            failure = retries.died(self._line_for_silent_end(job))
            job.get_meta(refresh=True)  # the job wrote progress and its partial file's name
        decision = retries.decide(job.meta, failure, self.policy, time.time())
        if decision.retry:
            self._schedule_retry(job, bound.arguments["execution"], decision, failure)
            return
        retries.note_outcome(job, decision, failure, self.policy)
        write_meta_if_alive(self.connection, job.id, SERIALIZER.dumps(job.meta))
        exc_string = bound.arguments["exc_string"]
        bound.arguments["exc_string"] = f"{failure.line}\n\n{exc_string}" if exc_string else failure.line
        call_with(super().handle_job_failure, bound)
        history.record(self.connection, job.id, history.FAILED, failure.line, album_id=album_of(job))
        metrics.record_failure(self.connection, cause)
        meta = job.meta
        parts.discard(self.settings.download_dir, meta.get("path"), job.id, meta.get("created_dir"))

    def _schedule_retry(self, job: Job, execution: Any, decision: retries.Decision, failure: retries.Failure) -> None:
        """What RQ's own retry does (drop the execution, schedule the job), with our timing."""
        url = (job.kwargs or {}).get("url")
        stamp = time.time()
        with self.connection.pipeline() as pipeline:
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            retries.schedule(pipeline, job, decision, failure, self.policy)
            metrics.record_retry(pipeline)
            if failure.backoff and decision.due is not None and isinstance(url, str):
                # The server's Retry-After (capped) is this retry's due time: the host waits as long.
                retries.hold_host(pipeline, retries.host_of(url), decision.due - stamp, stamp)
            pipeline.execute()
        self.log.info(
            "Worker %s: job %s attempt %d/%d failed (%s); retry in %.1fs",
            self.name,
            job.id,
            decision.attempts,
            self.policy.max_attempts,
            failure.line,
            (decision.due or stamp) - stamp,
        )

    def _line_for_silent_end(self, job: Job) -> str:
        """The job ended without reporting (its process was killed): say why, as precisely as we know."""
        reason = failure_reason(self.connection, job.id)
        if reason:
            return reason
        if job.started_at is not None and job.timeout is not None and job.timeout > 0:
            if (now() - job.started_at).total_seconds() >= job.timeout:
                return messages.processing_timeout(job.timeout)
        return messages.DIED

    def _forget(self, job: Job, execution: Any) -> None:
        """Drop our bookkeeping of a deleted job without writing the job itself."""
        self.failures.pop(job.id, None)
        self.causes.pop(job.id, None)
        with self.connection.pipeline() as pipeline:
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            pipeline.execute()
        # A job dequeued while it was being deleted had its keys written back by RQ's own
        # preparation (status, execution); remove them again.
        purge_job(self.connection, job.id, job.origin)
        self.log.info("Worker %s: job %s was deleted while it ran; nothing of it is stored", self.name, job.id)
