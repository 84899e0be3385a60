"""The supervisor's main loop: a `step(now)` that tests drive with an explicit clock.

Signal handlers only count stop requests; every decision is taken in `step`:

- running: the pool keeps `DQ_WORKERS` workers alive; cleanup runs every
  `DQ_CLEANUP_INTERVAL` and at once when a worker died (so its job is recovered quickly);
  retries that are due go back to the queue every tick;
- first SIGTERM/SIGINT → draining: the workers get SIGTERM (warm shutdown: they take no
  new job and finish the running one); queued jobs stay queued;
- grace ran out → killing: the failure reason is stored and the workers still running a
  download are killed (they run their job themselves, `jobs.worker`); after
  `PARENT_RECORD_WAIT` any other worker left is SIGKILLed;
- second request → killing at once (every worker SIGKILLed);
- once no worker is left, whatever they left started is failed with the shutdown message;
- every tick, the job events recorded since the last one (by workers, `bin/delete`, the API)
  are logged, one line each (`audit`, `supervisor.audit`): the service's log is the audit trail;
- the Redis it depends on went away for good (`watchdog`, `bin/up`'s embedded server exited or
  lost its socket) → lost: the workers are killed (they could record nothing) and `run`
  returns EXIT_REDIS_LOST; the next start recovers their jobs as crashes.
"""

from __future__ import annotations

import enum
import logging
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol, TypeVar

import redis

from config import Settings
from jobs import messages
from supervisor.cleanup import PARENT_RECORD_WAIT
from supervisor.pool import WorkerProcess

log = logging.getLogger("dq.supervisor")

TICK = 0.2  # seconds between steps; cheap: a step polls child processes, cleanup has its own interval
EXIT_REDIS_LOST = 3  # as every command exits when Redis is unreachable
T = TypeVar("T")


class Pool(Protocol):
    """What the loop needs of `supervisor.pool.WorkerPool`."""

    def step(self, now: float) -> list[WorkerProcess]: ...

    @property
    def live(self) -> list[WorkerProcess]: ...

    def warm_stop(self) -> None: ...

    def kill_all(self) -> None: ...


class Caretaker(Protocol):
    """What the loop needs of `supervisor.cleanup.Cleanup`."""

    def startup(self) -> None: ...

    def run(self, now: float) -> object: ...

    def promote(self) -> object: ...

    def interrupt(self, workers: Mapping[str, int], message: str) -> list[str]: ...

    def fail_interrupted(self, worker_names: Iterable[str], message: str) -> list[str]: ...


class AuditTrail(Protocol):
    """What the loop needs of `supervisor.audit.AuditFollower`."""

    def poll(self) -> int: ...

    def drain(self) -> int: ...


class Phase(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"  # warm stop sent, waiting up to the grace
    KILLING = "killing"  # downloads killed, waiting for the workers to go
    LOST = "lost"  # Redis went away: workers killed, waiting for them to go
    DONE = "done"


@dataclass
class Supervisor:
    settings: Settings
    pool: Pool
    cleanup: Caretaker | None = None
    audit: AuditTrail | None = None
    clock: Callable[[], float] = time.monotonic
    # Why the Redis we depend on is gone for good, or None while it serves (bin/up's own server).
    watchdog: Callable[[], str | None] | None = None
    lost: str | None = None
    stop_requests: int = 0
    phase: Phase = Phase.RUNNING
    stopping_since: float | None = None
    next_cleanup: float = 0.0
    kill_deadline: float | None = None  # KILLING: when the remaining workers get SIGKILL
    hard_killed: bool = False
    interrupted_workers: dict[str, int] = field(default_factory=dict)
    interrupted_jobs: list[str] = field(default_factory=list)
    _handled_requests: int = field(default=0, repr=False)

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    # --- signals: flags only -------------------------------------------------------------
    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self.stop_requests += 1

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # --- the loop ------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Recover what a previous run left behind, then start the workers (in that order:
        a worker's own maintenance would otherwise fail those jobs with RQ's generic text)."""
        if self.cleanup is not None:
            self.cleanup.startup()
        self.pool.step(now)
        self.next_cleanup = now + self.settings.cleanup_interval

    def step(self, now: float) -> None:
        if self.watchdog is not None and self.lost is None and self.phase is not Phase.DONE:
            reason = self.watchdog()
            if reason is not None:
                self._on_redis_lost(reason)
        if self.phase is Phase.LOST:
            self.pool.step(now)
            if not self.pool.live:
                self.phase = Phase.DONE
            return
        self._step_phases(now)
        if self.audit is not None:
            # After the phases: a stopping supervisor's last step logs its workers' last events.
            self._redis_call("audit trail", self.audit.drain if self.done else self.audit.poll)

    def _step_phases(self, now: float) -> None:
        if self.stop_requests > self._handled_requests:
            self._handled_requests = self.stop_requests
            self._on_stop_request(now)
        died = self.pool.step(now)
        if self.phase in (Phase.RUNNING, Phase.DRAINING) and (died or now >= self.next_cleanup):
            self._run_cleanup(now)
        if self.phase is Phase.RUNNING and self.cleanup is not None:
            # Every tick, not every cleanup: a retry due in 1 s should not wait for a round.
            self._redis_call("retries", self.cleanup.promote)
        if self.phase is Phase.DRAINING:
            self._step_draining(now)
        elif self.phase is Phase.KILLING:
            self._step_killing(now)

    def _run_cleanup(self, now: float) -> None:
        self.next_cleanup = now + self.settings.cleanup_interval
        if self.cleanup is not None:
            self._redis_call("cleanup", self.cleanup.run, now)

    def _on_redis_lost(self, reason: str) -> None:
        self.lost = reason
        log.error(
            "%s: stopping the workers and exiting; start bin/up again (jobs that were running are "
            "then recovered as crashed)",
            reason,
        )
        self.phase = Phase.LOST
        self.pool.kill_all()
        self.hard_killed = True

    def _on_stop_request(self, now: float) -> None:
        if self.phase is Phase.RUNNING:
            log.info(
                "shutting down: workers finish their downloads (up to %gs), queued jobs stay queued",
                self.settings.shutdown_grace,
            )
            self.phase = Phase.DRAINING
            self.stopping_since = now
            self.pool.warm_stop()
        elif self.phase is Phase.DRAINING:
            log.warning("second stop request: stopping the running downloads now")
            self._interrupt(now, patient=False)
        elif self.phase is Phase.KILLING and not self.hard_killed:
            log.warning("another stop request: killing the workers now")
            self.pool.kill_all()
            self.hard_killed = True

    def _step_draining(self, now: float) -> None:
        assert self.stopping_since is not None
        if not self.pool.live:
            self.phase = Phase.DONE
            log.info("all workers finished; nothing was interrupted")
        elif now - self.stopping_since >= self.settings.shutdown_grace:
            log.warning("shutdown grace of %gs ran out: stopping the remaining downloads", self.settings.shutdown_grace)
            self._interrupt(now, patient=True)

    def _interrupt(self, now: float, *, patient: bool) -> None:
        """Store the reason, kill the running downloads; a patient stop lets idle workers exit."""
        workers = {worker.name: worker.pid for worker in self.pool.live}
        self.interrupted_workers.update(workers)
        self.phase = Phase.KILLING
        if self.cleanup is not None and workers:
            jobs = self._redis_call(
                "interrupt", self.cleanup.interrupt, workers, messages.shutdown(self.settings.shutdown_grace)
            )
            self.interrupted_jobs += jobs or []
        if patient:
            self.kill_deadline = now + PARENT_RECORD_WAIT
        else:
            self.kill_deadline = now
            self.pool.kill_all()
            self.hard_killed = True

    def _step_killing(self, now: float) -> None:
        if self.pool.live:
            if not self.hard_killed and self.kill_deadline is not None and now >= self.kill_deadline:
                log.warning(
                    "%d worker(s) still running after their downloads were stopped: killing them", len(self.pool.live)
                )
                self.pool.kill_all()
                self.hard_killed = True
            return
        if self.cleanup is not None:
            self._redis_call(
                "fail interrupted jobs",
                self.cleanup.fail_interrupted,
                list(self.interrupted_workers),
                messages.shutdown(self.settings.shutdown_grace),
            )
        self.phase = Phase.DONE
        log.info(
            "stopped %d running download(s): %s", len(self.interrupted_jobs), ", ".join(self.interrupted_jobs) or "none"
        )

    def _redis_call(self, what: str, function: Callable[..., T], *args: object) -> T | None:
        """Run one Redis-backed step; an unreachable Redis is logged and retried next time."""
        try:
            return function(*args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            log.error("%s skipped: Redis unreachable (%s)", what, error)
            return None

    def run(self) -> int:
        self.install_signal_handlers()
        self.start(self.clock())
        while not self.done:
            time.sleep(TICK)
            self.step(self.clock())
        if self.lost is not None:
            log.error("supervisor stopped: %s", self.lost)
            return EXIT_REDIS_LOST
        log.info("supervisor stopped")
        return 0
