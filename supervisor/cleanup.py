"""Startup recovery and the periodic cleanup, run by the supervisor loop.

Every `DQ_CLEANUP_INTERVAL` seconds, holding RQ's maintenance lock for the queue (so two
supervisors, or a worker's own maintenance, never clean the same job twice):

1. the dead-worker check of `supervisor.recovery` (crash → `Recovered from server crash...`);
2. a backstop for the job timeout: a job of a live worker on this host running longer than
   its timeout plus `BACKSTOP_MARGIN` (a job that ignored RQ's alarm) has the process running
   it killed (its worker; a new one is started) and is failed with `Processing timeout (<n>s exceeded)`;
3. the partial files this host's downloads started (`jobs.parts`) whose job ended or vanished
   are removed: judged by the job id in their name, no memory of this process needed;
4. RQ's own registry maintenance, minus the StartedJobRegistry's (which would fail jobs of
   live workers with RQ's generic text; step 1 covers that registry);
5. jobs stranded in RQ's intermediate list (a worker died between taking a job off the
   queue and registering it as started) go back to the front of the queue: they never ran;
6. every `jobs.retention.RETENTION_INTERVAL`: album records none of whose jobs is kept and
   events older than the longest retention (DQ_KEEP_COMPLETED / DQ_KEEP_FAILED) are dropped.

Before taking the lock, and at startup, it also refreshes this supervisor's publication of
its workers' settings (`jobs.published`), which `bin/enqueue` judges private URLs by, and
this host's heartbeat (`jobs.health`), which `bin/health` and `/health` judge the supervisor by.

It reads only the StartedJobRegistry and the registries' expired ranges (ZREMRANGEBYSCORE),
never a key scan, so its cost does not grow with 100 000 finished or failed jobs.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis
from rq import worker_registration
from rq.queue import Queue
from rq.rate_limit import RateLimitRegistry
from rq.registry import DeferredJobRegistry, FailedJobRegistry, FinishedJobRegistry, ReadyJobRegistry

from config import Settings
from jobs import health, history, keys, messages, parts, published, retention, retries
from jobs.connection import SERIALIZER
from jobs.failure import FAILED, end_started_job, set_failure_reason
from jobs.rq_compat import MAINTENANCE_LOCK_VALUE
from supervisor.processes import job_pids
from supervisor.recovery import Recovery, StartedJob, overdue, why_dead

log = logging.getLogger("dq.supervisor")

BACKSTOP_MARGIN = 5.0  # seconds past the job timeout before the supervisor steps in
PARENT_RECORD_WAIT = 3.0  # after killing a horse of a live worker, let that worker record the failure
STARTUP_LOCK_WAIT = 10.0  # seconds the startup recovery waits for the maintenance lock
STUCK_RQ_LOCK_AFTER = 60.0  # RQ holds it for milliseconds; this long means its holder died
STRANDED_AFTER = 10.0  # a worker moves a dequeued job to the started registry within milliseconds

# Back to the front of the queue, only if still queued (never started) and still stranded.
_REQUEUE_STRANDED = """
if redis.call('exists', KEYS[3]) == 0 then
  return redis.call('lrem', KEYS[1], 0, ARGV[1]) * 0
end
if redis.call('hget', KEYS[3], 'status') ~= 'queued' then
  return 0
end
if redis.call('lrem', KEYS[1], 0, ARGV[1]) == 0 then
  return 0
end
redis.call('lpush', KEYS[2], ARGV[1])
return 1
"""

_RELEASE_IF_OURS = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


@dataclass
class MaintenanceLock:
    """RQ's per-queue maintenance lock (`jobs.keys.maintenance_lock`), held briefly.

    RQ's workers take it with `SET NX EX 899` and delete it when done. We take the same key
    with a token and a short TTL, so a supervisor killed while holding it blocks nobody for
    long, and we only ever delete our own token. A lock RQ itself left behind (its holder
    died within those milliseconds) would block cleanup for 15 minutes: after
    `STUCK_RQ_LOCK_AFTER` we take it over.
    """

    connection: redis.Redis
    queue_name: str
    ttl: float
    token: bytes = field(default_factory=lambda: secrets.token_hex(8).encode())
    blocked_since: float | None = None

    @property
    def key(self) -> str:
        return keys.maintenance_lock(self.queue_name)

    def acquire(self, now: float) -> bool:
        ttl_ms = max(1000, int(self.ttl * 1000))
        if self.connection.set(self.key, self.token, nx=True, px=ttl_ms):
            self.blocked_since = None
            return True
        if self.blocked_since is None:
            self.blocked_since = now
        if now - self.blocked_since >= STUCK_RQ_LOCK_AFTER and self.connection.get(self.key) == MAINTENANCE_LOCK_VALUE:
            log.warning(
                "RQ's maintenance lock for %r was held for %gs; taking it over",
                self.queue_name,
                now - self.blocked_since,
            )
            self.connection.set(self.key, self.token, px=ttl_ms)
            self.blocked_since = None
            return True
        return False

    def release(self) -> None:
        self.connection.eval(_RELEASE_IF_OURS, 1, self.key, self.token)


@dataclass
class CleanupReport:
    skipped: bool = False  # another supervisor (or a worker's maintenance) held the lock
    recovered: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    parts_removed: list[Path] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    retention_pass: retention.RetentionReport | None = None


@dataclass
class Cleanup:
    """What the supervisor loop calls: `startup()`, `run(now)`, and the shutdown pair."""

    connection: redis.Redis
    settings: Settings
    recovery: Recovery
    lock: MaintenanceLock
    # job id → when the supervisor fails it itself if its (live) worker has not recorded it
    pending_kills: dict[str, float] = field(default_factory=dict)
    # job id → when (loop clock) it was first seen in RQ's intermediate list and not started
    stranded_since: dict[str, float] = field(default_factory=dict)
    next_retention: float = 0.0  # loop clock: when the next retention pass is due
    publisher: str = field(default_factory=published.publisher_id)

    @classmethod
    def create(cls, connection: redis.Redis, settings: Settings, **recovery_options: object) -> Cleanup:
        recovery = Recovery(connection, settings, **recovery_options)  # type: ignore[arg-type]
        lock_ttl = max(10.0, 5 * settings.cleanup_interval)
        return cls(connection, settings, recovery, MaintenanceLock(connection, settings.queue_name, lock_ttl))

    # --- at start, before any worker runs --------------------------------------------------
    def startup(self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        """Recover the jobs of dead workers, then sweep stale partial files.

        Waits a little for the lock, then goes on without it: the safe failure is a
        transaction, so the lock only saves duplicate work, while starting the workers
        before recovery would let RQ's own maintenance fail these jobs with its generic text.
        """
        self.publish()
        deadline = clock() + STARTUP_LOCK_WAIT
        locked = self.lock.acquire(clock())
        while not locked and clock() < deadline:
            sleep(0.1)
            locked = self.lock.acquire(clock())
        try:
            jobs, now = self.recovery.scan()
            recovered = self.recovery.recover(jobs, now)
            log.info("startup recovery: %d started job(s) found, %d recovered", len(jobs), len(recovered))
            self.sweep_parts()
        finally:
            if locked:
                self.lock.release()

    def sweep_parts(self) -> list[Path]:
        """Remove partial files whose job ended or is gone; at start (it walks the folder)."""
        return parts.sweep_tree(self.connection, self.settings.download_dir)

    # --- every DQ_CLEANUP_INTERVAL --------------------------------------------------------
    def run(self, now: float) -> CleanupReport:
        """One cleanup round; `now` is the loop's monotonic clock (for pending kills)."""
        self.publish()
        if not self.lock.acquire(now):
            return CleanupReport(skipped=True)
        try:
            jobs, redis_now = self.recovery.scan()
            report = CleanupReport()
            report.recovered = self.recovery.recover(jobs, redis_now)
            report.timed_out = self._backstop(jobs, redis_now, now, set(report.recovered))
            report.parts_removed = parts.sweep_tracked(self.connection, self.settings.download_dir, self.recovery.host)
            self._rq_maintenance()
            report.requeued = self._requeue_stranded({job.job_id for job in jobs}, now)
            if now >= self.next_retention:
                self.next_retention = now + retention.RETENTION_INTERVAL
                report.retention_pass = retention.apply(self.connection, self.settings, redis_now)
                if report.retention_pass.albums_removed:
                    log.info("retention: %d album record(s) expired", len(report.retention_pass.albums_removed))
            return report
        finally:
            self.lock.release()

    def _backstop(self, jobs: list[StartedJob], redis_now: float, now: float, recovered: set[str]) -> list[str]:
        """Kill and fail jobs of live workers on this host that outran their timeout."""
        running = {job.job_id for job in jobs if job.status == "started"}
        self.pending_kills = {job_id: due for job_id, due in self.pending_kills.items() if job_id in running}
        failed: list[str] = []
        table = None
        for job in jobs:
            worker = job.worker
            if (
                job.job_id in recovered
                or job.status != "started"
                or worker is None
                or worker.hostname != self.recovery.host  # each host's supervisor polices its own
                or why_dead(job, host=self.recovery.host, now=redis_now, alive=self.recovery.alive) is not None
                or not overdue(job, now=redis_now, margin=BACKSTOP_MARGIN)
            ):
                continue
            message = messages.processing_timeout(job.timeout or self.settings.job_timeout)
            due = self.pending_kills.get(job.job_id)
            if due is not None:
                if now >= due and self._fail(job, message):
                    failed.append(job.job_id)
                continue
            log.warning("job %s ran past its timeout of %ss without stopping: killing it", job.job_id, job.timeout)
            set_failure_reason(self.connection, job.job_id, message)
            table = table if table is not None else self.recovery.processes()
            pids = job_pids(worker.name, worker.pid, table)
            if pids and self.recovery.kill(pids):
                if worker.pid in pids:  # the worker ran the job itself: nobody else can record it
                    if self._fail(job, message):
                        failed.append(job.job_id)
                    continue
                # Its worker sees the horse die and records `message`; if it does not, we do.
                self.pending_kills[job.job_id] = now + PARENT_RECORD_WAIT
            elif not pids and self._fail(job, message):
                failed.append(job.job_id)
        return failed

    def _fail(self, job: StartedJob, message: str) -> bool:
        self.pending_kills.pop(job.job_id, None)
        outcome = end_started_job(
            self.connection, self.settings.queue_name, job.job_id, retries.died(message), self.recovery.policy
        )
        if outcome == FAILED:
            self.recovery.remove_part(job)
        return outcome is not None

    def _requeue_stranded(self, started: set[str], now: float) -> list[str]:
        """Put jobs a dying worker left between queue and started registry back in the queue.

        RQ itself finds them only in a worker's 10-minute maintenance, and then fails them.
        """
        queue = Queue(self.settings.queue_name, connection=self.connection, serializer=SERIALIZER)
        intermediate = queue.intermediate_queue
        waiting = [job_id for job_id in intermediate.get_job_ids() if job_id not in started]
        self.stranded_since = {job_id: self.stranded_since.get(job_id, now) for job_id in waiting}
        requeued = []
        for job_id, since in self.stranded_since.items():
            if now - since < STRANDED_AFTER:
                continue
            lua_keys = [intermediate.key, queue.key, keys.job(job_id)]
            if self.connection.eval(_REQUEUE_STRANDED, len(lua_keys), *lua_keys, job_id):
                log.warning("job %s was stranded between queue and worker; put back at the front", job_id)
                history.record(self.connection, job_id, history.ENQUEUED, "requeued: its worker died taking it")
                requeued.append(job_id)
        for job_id in requeued:
            del self.stranded_since[job_id]
        return requeued

    def _rq_maintenance(self) -> None:
        """RQ's `clean_registries`, except the StartedJobRegistry (see the module docstring)."""
        queue = Queue(self.settings.queue_name, connection=self.connection, serializer=SERIALIZER)
        for registry in (
            FinishedJobRegistry(queue=queue),
            FailedJobRegistry(queue=queue),
            DeferredJobRegistry(queue=queue),
            ReadyJobRegistry(queue=queue),
        ):
            registry.cleanup()
        for rate_limits in RateLimitRegistry.all(self.connection):
            rate_limits.cleanup()
        worker_registration.clean_worker_registry(queue)

    def promote(self) -> list[str]:
        """Move retries that are due back to the queue (called every loop tick)."""
        moved = retries.promote_due(self.connection, self.settings.queue_name)
        if moved:
            log.info("retry due: %s back in the queue", ", ".join(moved))
        return moved

    def publish(self) -> None:
        """Tell the commands that enqueue what our workers allow (refreshes its expiry), and
        refresh this host's heartbeat (`jobs.health`): at start and every round, locked or not."""
        published.publish(self.connection, self.settings, self.publisher)
        health.beat(self.connection, self.settings)

    def withdraw(self) -> None:
        """Remove our publication and heartbeat: after a clean shutdown no worker of ours runs."""
        published.withdraw(self.connection, self.publisher)
        health.stop(self.connection)

    # --- shutdown ---------------------------------------------------------------------------
    def interrupt(self, workers: Mapping[str, int], message: str) -> list[str]:
        return self.recovery.interrupt(workers, message)

    def fail_interrupted(self, worker_names: Iterable[str], message: str) -> list[str]:
        return self.recovery.fail_interrupted(worker_names, message)
