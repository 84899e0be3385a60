"""The job timeout and the stop of a running job, for a worker that runs its job itself.

Our workers run each job in their own main thread (no fork per job: a fork costs more than
a tiny download, see `jobs.worker`). Two things must still reach a job blocked in a socket
call, from outside it:

- its timeout: RQ's SIGALRM death penalty, which this class is (RQ's `death_penalty_class`
  attribute), raising `JobTimeoutException`;
- a stop (RQ's `stop-job` command, which `jobs.deletion` sends to a job that wrote no
  progress since its deletion began): the command arrives in the worker's pubsub thread,
  which calls `request_stop`; that signals the main thread with `STOP_SIGNAL`, whose
  handler raises `JobDeleted` there. A signal aimed at the main thread interrupts its
  blocked `recv`/`poll` (EINTR), and Python then runs the handler before retrying.

Both act only while the job function itself runs (the `with` block around `job.perform()`):
a stop that arrives before or after is dropped, so RQ's own bookkeeping is never cut
short. A job stuck where no signal reaches it (inside C code that retries EINTR itself) is
the supervisor's to kill, worker and all (`supervisor.cleanup`).

The previous SIGALRM handler and the time left on its alarm are put back afterwards, so a
process that has its own alarm (pytest-timeout around an in-process worker) keeps it.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Any

from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from jobs.errors import JobDeleted

STOP_SIGNAL = signal.SIGUSR1  # unused by RQ and by our processes otherwise

_running: str | None = None  # the job whose function runs in the main thread now
_stop_requested: str | None = None


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    job_id = _stop_requested
    if job_id is not None and job_id == _running:
        _clear_stop()
        raise JobDeleted(job_id)


def _clear_stop() -> None:
    global _stop_requested
    _stop_requested = None


def request_stop(job_id: str) -> bool:
    """From any thread: stop `job_id` if its function runs in this process now."""
    global _stop_requested
    if job_id != _running:
        return False
    _stop_requested = job_id
    main = threading.main_thread().ident
    assert main is not None
    signal.pthread_kill(main, STOP_SIGNAL)
    return True


def running_job() -> str | None:
    return _running


class StoppableDeathPenalty(UnixSignalDeathPenalty):
    """RQ's SIGALRM timeout around `job.perform()`, which also opens the job to `request_stop`."""

    def __init__(self, timeout: Any, exception: Any = JobTimeoutException, **kwargs: Any) -> None:
        super().__init__(timeout, exception, **kwargs)
        self._job_id: str | None = kwargs.get("job_id")
        self._previous_alarm: Any = signal.SIG_DFL
        self._previous_deadline: float | None = None

    def setup_death_penalty(self) -> None:
        global _running
        self._previous_alarm = signal.getsignal(signal.SIGALRM)
        left, _interval = signal.setitimer(signal.ITIMER_REAL, 0)
        self._previous_deadline = time.monotonic() + left if left > 0 else None
        _clear_stop()
        _running = self._job_id
        signal.signal(STOP_SIGNAL, _on_stop_signal)
        super().setup_death_penalty()

    def cancel_death_penalty(self) -> None:
        global _running
        _running = None
        _clear_stop()
        super().cancel_death_penalty()
        signal.signal(signal.SIGALRM, self._previous_alarm)
        if self._previous_deadline is not None:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, self._previous_deadline - time.monotonic()))
