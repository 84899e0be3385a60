"""Finding jobs whose worker died, killing their orphan horses, and failing them safely.

RQ notices a dead worker's job only when the execution heartbeat (~90 s) has expired
*and* some live worker happens to run its maintenance (up to 15 min later). Here a job is
judged from the StartedJobRegistry alone (read with `cleanup=False`, never a key scan):

- its worker's key is gone (or says the worker died): dead;
- the worker ran on this host and its PID is not running: dead;
- the worker runs on another host and the execution heartbeat is stale: dead;
- otherwise alive, and never touched. A live worker on this host is trusted over a stale
  heartbeat; two supervisors on one Redis never fail each other's running jobs.

A dead job's horse may still run (its worker was killed, the parent-death signal did not
fire): it is killed, and only once it is gone is the job's attempt ended, so it cannot come
back as `finished` afterwards. A crash and a shutdown end an attempt like any retryable
error: the job waits for its retry (resuming from its partial file) while attempts remain,
else it fails with the recovery (or shutdown) message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from rq.utils import utcparse

from config import Settings
from jobs import history, keys, messages, parts, retries
from jobs.connection import SERIALIZER, reply_text
from jobs.failure import FAILED, end_started_job, set_failure_reason
from jobs.tombstones import is_deleted
from jobs.workers import pid_alive, this_host
from supervisor.processes import ProcessInfo, horse_pids, job_pids, kill_and_wait, list_processes

log = logging.getLogger("dq.supervisor")

# RQ refreshes a running job's execution heartbeat every 30 s (its job_monitoring_interval)
# with a TTL that shrinks to a few seconds once the job is past its timeout. A heartbeat only
# counts as stale this long after its deadline, so a live remote worker never looks dead.
STALE_HEARTBEAT_SLACK = 30.0
# A job in one of these (or gone) never writes to its partial file again; a requeued one might.
ENDED_STATUSES = frozenset({None, "finished", "failed", "stopped", "canceled"})


@dataclass(frozen=True)
class WorkerRecord:
    """What the worker's Redis key says; absent when the key is gone."""

    name: str
    hostname: str | None
    pid: int | None
    died: bool = False  # RQ wrote its death (the key lingers for a minute after)


@dataclass(frozen=True)
class StartedJob:
    """One entry of the StartedJobRegistry, with what is needed to judge it."""

    job_id: str
    execution_id: str
    heartbeat_deadline: float  # unix time the execution heartbeat runs out (the entry's score)
    worker_name: str | None
    worker: WorkerRecord | None
    status: str | None = None
    started_at: float | None = None  # unix time
    timeout: int | None = None
    final_path: str | None = None  # meta["path"]: where the download goes (its partial file beside it)
    created_dir: str | None = None  # meta["created_dir"]: the top-most folder the download created


def why_dead(job: StartedJob, *, host: str, now: float, alive: Callable[[int], bool] = pid_alive) -> str | None:
    """Why the job's worker counts as dead, or None while it is (or may be) alive."""
    worker = job.worker
    if worker is not None and worker.hostname == host and not worker.died:
        if worker.pid is not None and alive(worker.pid):
            return None  # provably running; a stale heartbeat alone never overrides that
        return f"worker {worker.name} (pid {worker.pid}) is not running"
    if job.worker_name is not None and (worker is None or worker.died):
        return f"worker {job.worker_name} is gone"
    if now > job.heartbeat_deadline + STALE_HEARTBEAT_SLACK:
        return f"heartbeat stale for {now - job.heartbeat_deadline:.0f}s"
    return None


def overdue(job: StartedJob, *, now: float, margin: float) -> bool:
    """Running past its timeout plus `margin`: RQ's alarm should have ended it by now."""
    if job.started_at is None or job.timeout is None or job.timeout <= 0:
        return False
    return now - job.started_at > job.timeout + margin


def _int(value: Any) -> int | None:
    text = reply_text(value)
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _timestamp(value: Any) -> float | None:
    text = reply_text(value)
    if not text:
        return None
    try:
        return utcparse(text).timestamp()
    except ValueError:
        return None


def _meta_text(raw_meta: Any, name: str) -> str | None:
    if not raw_meta:
        return None
    try:
        meta = SERIALIZER.loads(raw_meta)
    except ValueError:
        return None
    value = meta.get(name) if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def redis_time(connection: redis.Redis) -> float:
    """Now, by the Redis server's clock: scores written by workers on any host use it too."""
    seconds, micros = cast(tuple[int, int], connection.time())
    return seconds + micros / 1_000_000


def read_started(connection: redis.Redis, queue_name: str) -> list[StartedJob]:
    """The StartedJobRegistry with each job's worker record: O(started jobs), three round trips."""
    entries = cast(list[tuple[bytes, float]], connection.zrange(keys.started(queue_name), 0, -1, withscores=True))
    if not entries:
        return []
    parsed = []
    for member, score in entries:
        job_id, _, execution_id = (reply_text(member) or "").partition(":")
        parsed.append((job_id, execution_id, float(score)))
    with connection.pipeline(transaction=False) as pipe:
        for job_id, execution_id, _score in parsed:
            pipe.hget(keys.execution(job_id, execution_id), "worker_name")
            pipe.hmget(keys.job(job_id), ["status", "started_at", "timeout", "worker_name", "meta"])
        replies = pipe.execute()
    names = set()
    details = []
    for index, (job_id, execution_id, score) in enumerate(parsed):
        execution_worker = reply_text(replies[2 * index])
        status, started_at, timeout, job_worker, meta = replies[2 * index + 1]
        worker_name = execution_worker or reply_text(job_worker)
        if worker_name:
            names.add(worker_name)
        details.append((job_id, execution_id, score, worker_name, status, started_at, timeout, meta))
    ordered = sorted(names)
    with connection.pipeline(transaction=False) as pipe:
        for name in ordered:
            pipe.hmget(keys.worker(name), ["hostname", "pid", "death", "birth"])
        worker_replies = pipe.execute()
    workers: dict[str, WorkerRecord] = {}
    for name, (hostname, pid, death, birth) in zip(ordered, worker_replies, strict=True):
        if hostname is None and pid is None and birth is None:
            continue  # the key is gone
        workers[name] = WorkerRecord(name, reply_text(hostname), _int(pid), died=death is not None)
    return [
        StartedJob(
            job_id=job_id,
            execution_id=execution_id,
            heartbeat_deadline=score,
            worker_name=worker_name,
            worker=workers.get(worker_name) if worker_name else None,
            status=reply_text(status),
            started_at=_timestamp(started_at),
            timeout=_int(timeout),
            final_path=_meta_text(meta, "path"),
            created_dir=_meta_text(meta, "created_dir"),
        )
        for job_id, execution_id, score, worker_name, status, started_at, timeout, meta in details
    ]


@dataclass
class Recovery:
    """Fails the jobs of dead workers (at start and in every cleanup) and of interrupted ones."""

    connection: redis.Redis
    settings: Settings
    host: str = field(default_factory=this_host)
    processes: Callable[[], list[ProcessInfo]] = list_processes
    kill: Callable[[list[int]], bool] = kill_and_wait
    alive: Callable[[int], bool] = pid_alive
    interrupted: dict[str, StartedJob] = field(default_factory=dict)  # by `interrupt`, for `fail_interrupted`

    @property
    def policy(self) -> retries.RetryPolicy:
        return retries.RetryPolicy.from_settings(self.settings)

    def scan(self) -> tuple[list[StartedJob], float]:
        return read_started(self.connection, self.settings.queue_name), redis_time(self.connection)

    def dead(self, jobs: Iterable[StartedJob], now: float) -> list[tuple[StartedJob, str]]:
        found = []
        for job in jobs:
            reason = why_dead(job, host=self.host, now=now, alive=self.alive)
            if reason is not None:
                found.append((job, reason))
        return found

    def recover(self, jobs: Iterable[StartedJob], now: float) -> list[str]:
        """End the attempt of every job whose worker is dead (retry or fail); return their ids."""
        dead = self.dead(jobs, now)
        if not dead:
            return []
        table = self.processes()
        recovered = []
        for job, reason in dead:
            # A job being deleted is the deletion's to finish: no failure is recorded for it.
            started = job.status == "started" and not is_deleted(self.connection, job.job_id)
            if started:
                log.warning("recovering job %s (%s)", job.job_id, reason)
            if not self._kill_horses(job, table):
                continue  # retried in the next cleanup; never fail a job whose horse still runs
            if not started:
                # Ended or deleted already (its worker died after that): only the entry is left.
                self._drop_leftover(job)
                if job.status in ENDED_STATUSES:
                    self.remove_part(job)
                continue
            outcome = end_started_job(
                self.connection,
                self.settings.queue_name,
                job.job_id,
                retries.died(messages.RECOVERED),
                self.policy,
                event=history.RECOVERED,
            )
            if outcome is not None:
                recovered.append(job.job_id)
            if outcome == FAILED:
                self.remove_part(job)
        return recovered

    def _kill_horses(self, job: StartedJob, table: list[ProcessInfo]) -> bool:
        if not job.worker_name:
            return True
        worker_pid = job.worker.pid if job.worker is not None and job.worker.hostname == self.host else None
        pids = horse_pids(job.worker_name, worker_pid, table)
        if not pids:
            return True
        log.warning("killing orphan work horse(s) %s of job %s", ", ".join(map(str, pids)), job.job_id)
        if self.kill(pids):
            return True
        log.error("work horse(s) %s of job %s did not die; job left as it is for now", pids, job.job_id)
        return False

    def _drop_leftover(self, job: StartedJob) -> None:
        self.connection.zrem(keys.started(self.settings.queue_name), f"{job.job_id}:{job.execution_id}")

    def remove_part(self, job: StartedJob) -> None:
        removed = parts.discard(self.settings.download_dir, job.final_path, job.job_id, job.created_dir)
        if removed is not None:
            log.info("removed partial file %s of job %s", removed, job.job_id)

    # --- shutdown ---------------------------------------------------------------------------
    def interrupt(self, workers: Mapping[str, int], message: str) -> list[str]:
        """Stop the downloads of these workers (name → pid) now: reason first, then the kill.

        The failure reason is stored before the process running the job dies, so whoever
        records the failure (a forking worker's parent, or `fail_interrupted`) uses that text.
        """
        jobs, _now = self.scan()
        interrupted = [job for job in jobs if job.worker_name in workers and job.status == "started"]
        for job in interrupted:
            set_failure_reason(self.connection, job.job_id, message)
            self.interrupted[job.job_id] = job
        table = self.processes()
        busy = {job.worker_name for job in interrupted}
        pids = [
            pid for name, worker_pid in workers.items() if name in busy for pid in job_pids(name, worker_pid, table)
        ]
        if pids:
            log.warning(
                "stopping %d running download(s): killing their process(es) %s", len(pids), ", ".join(map(str, pids))
            )
            self.kill(pids)
        return [job.job_id for job in interrupted]

    def fail_interrupted(self, worker_names: Iterable[str], message: str) -> list[str]:
        """End the attempt of what these (now stopped) workers left started: retry or fail.

        A partial file stays while its job will be tried again, and goes once it failed (also
        for the jobs the workers recorded themselves: the horse died before its cleanup).
        """
        names = set(worker_names)
        jobs, _now = self.scan()
        left = {job.job_id: job for job in jobs if job.worker_name in names}
        ended = []
        for job in left.values():
            outcome = end_started_job(
                self.connection,
                self.settings.queue_name,
                job.job_id,
                retries.died(message),
                self.policy,
                event=history.INTERRUPTED,
            )
            if outcome is not None:
                ended.append(job.job_id)
        gone = {**self.interrupted, **left}
        if gone:
            for job, status in zip(gone.values(), parts.statuses(self.connection, list(gone)), strict=True):
                if status not in parts.LIVE_STATUSES:
                    self.remove_part(job)
        self.interrupted.clear()
        return ended
