"""The no-fork worker's job timeout and stop (`jobs.interrupt`), on a real blocked socket."""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest
from rq.timeouts import JobTimeoutException

from jobs import interrupt
from jobs.errors import JobDeleted

pytestmark = pytest.mark.timeout(30)


def stop_later(job_id: str, delay: float, answers: list[bool]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        answers.append(interrupt.request_stop(job_id))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_stop_from_another_thread_interrupts_a_blocked_recv_with_job_deleted() -> None:
    left, right = socket.socketpair()
    answers: list[bool] = []
    started = time.monotonic()
    with left, right, pytest.raises(JobDeleted):
        with interrupt.StoppableDeathPenalty(60, JobTimeoutException, job_id="job-1"):
            thread = stop_later("job-1", 0.2, answers)
            left.recv(1)  # nothing ever arrives
    thread.join()
    assert answers == [True]
    assert 0.15 < time.monotonic() - started < 2
    assert interrupt.running_job() is None


def test_a_stop_for_another_job_or_after_the_job_changes_nothing() -> None:
    answers: list[bool] = []
    with interrupt.StoppableDeathPenalty(60, JobTimeoutException, job_id="job-1"):
        stop_later("job-2", 0.0, answers).join()
        time.sleep(0.05)  # a stray signal would raise here
    assert interrupt.request_stop("job-1") is False
    time.sleep(0.05)
    assert answers == [False]


def test_the_job_timeout_interrupts_a_blocked_recv() -> None:
    left, right = socket.socketpair()
    started = time.monotonic()
    with left, right, pytest.raises(JobTimeoutException):
        with interrupt.StoppableDeathPenalty(1, JobTimeoutException, job_id="job-1"):
            left.recv(1)
    assert 0.9 < time.monotonic() - started < 3


def test_an_alarm_set_before_the_job_still_fires_after_it() -> None:
    """pytest-timeout (and anyone else) keeps its SIGALRM around an in-process job."""
    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with interrupt.StoppableDeathPenalty(60, JobTimeoutException, job_id="job-1"):
            time.sleep(0.1)
        assert signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL
        deadline = time.monotonic() + 3
        while not fired and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fired == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
