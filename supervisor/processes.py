"""Finding and killing processes: the supervisor's view of /proc."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

from jobs.workers import pid_alive


def send_signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    pgid: int
    argv: tuple[str, ...]

    def names_worker(self, worker_name: str) -> bool:
        """True for an `rq worker ... --name <worker_name>` process, or a fork of one (a horse)."""
        argv = self.argv
        return any(argv[i] == "--name" and argv[i + 1] == worker_name for i in range(len(argv) - 1)) or (
            f"--name={worker_name}" in argv
        )


def list_processes() -> list[ProcessInfo]:
    """Every process this user can see under /proc (skips those that vanish meanwhile)."""
    processes = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[-1].split()
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                argv = tuple(part.decode(errors="replace") for part in cmdline.read().split(b"\0") if part)
        except OSError:
            continue
        if fields[0] == "Z":
            continue
        processes.append(ProcessInfo(int(entry.name), int(fields[1]), int(fields[2]), argv))
    return processes


def horse_pids(worker_name: str, worker_pid: int | None, processes: Iterable[ProcessInfo]) -> list[int]:
    """The work horses of one worker, also when the worker itself is already gone.

    A horse is a fork of its worker, so its command line still names the worker; unlike the
    worker (or a scheduler child) it leads its own process group (RQ calls `setpgrp` in it).
    The environment is no help: RQ sets `RQ_JOB_ID` after the fork with `os.environ`, which
    never reaches `/proc/<pid>/environ`.
    """
    return [
        process.pid
        for process in processes
        if process.pid != worker_pid
        and process.pgid == process.pid
        and (process.names_worker(worker_name) or (worker_pid is not None and process.ppid == worker_pid))
    ]


def job_pids(worker_name: str, worker_pid: int | None, processes: Iterable[ProcessInfo]) -> list[int]:
    """The processes to kill to stop a worker's running job now: its horses, or else the worker.

    Our workers run their job themselves (`jobs.worker`), so stopping one that ignores every
    signal takes the worker down too; the supervisor fails the job and starts a new worker.
    """
    horses = horse_pids(worker_name, worker_pid, processes)
    if horses or worker_pid is None:
        return horses
    return [worker_pid]


def kill_and_wait(pids: Iterable[int], timeout: float = 2.0) -> bool:
    """SIGKILL each process with its group; True once none is alive (within `timeout`)."""
    targets = list(pids)
    for pid in targets:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            send_signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in targets):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True
