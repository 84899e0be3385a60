"""The benchmark's process figures, read from /proc (Linux): RSS, PSS, CPU times, children.

Also the small shared pieces every benchmark module uses: a run failure (`BenchError`,
the only thing that makes `bin/benchmark` exit non-zero), polling, free ports, medians.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1_000_000  # memory figures are decimal megabytes, as the goals are written
MiB = 1024 * 1024
GiB = 1024 * MiB


class BenchError(RuntimeError):
    """A run itself failed (a job did not finish, a process failed): exit non-zero."""


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.01) -> float:
    """Poll until `predicate` is truthy; the monotonic time it was first seen so. BenchError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM; its whole session SIGKILLed if it has not exited after `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_bytes(pid: int) -> int:
    """VmRSS of `pid` in bytes (0 once it is gone)."""
    return _status_kib(pid, "VmRSS:") * 1024


def pss_bytes(pid: int) -> int:
    """Pss from /proc/PID/smaps_rollup in bytes (shared pages split between their sharers)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of `pid` (its reaped children included), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime, stime, cutime, cstime are fields 14-17.
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """The direct children of `pid` (every thread's), from /proc/PID/task/*/children."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found += [int(child) for child in listing.read().split()]
        except (OSError, ValueError):
            continue
    return sorted(set(found))


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as raw:
            return [part.decode(errors="replace") for part in raw.read().split(b"\0") if part]
    except OSError:
        return []


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait4(pid: int) -> tuple[int, float]:
    """Reap `pid`: its exit status code (as `subprocess` reports it) and its CPU seconds."""
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code, usage.ru_utime + usage.ru_stime


def run_children(
    commands: Iterable[Sequence[str]], *, cwd: Path | None = None, log: Path | None = None
) -> tuple[float, float]:
    """Start every command at once, wait for all; (wall seconds, CPU seconds of them all).

    Each command's exit status and CPU come from wait4 on its own pid, so nothing else the
    benchmark started is counted. BenchError when one of them fails.
    """
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(open(log, "ab")) if log is not None else subprocess.DEVNULL
        started = time.monotonic()
        commands = [list(command) for command in commands]
        processes = [
            subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
            for command in commands
        ]
        cpu = 0.0
        failed = []
        for command, process in zip(commands, processes, strict=True):
            code, seconds = wait4(process.pid)
            process.returncode = code  # reaped here: tell Popen, so it never waits again
            cpu += seconds
            if code != 0:
                failed.append(f"{' '.join(command[:2])} exited with {code}")
        elapsed = time.monotonic() - started
    if failed:
        raise BenchError("; ".join(failed) + (f" (see {log})" if log else ""))
    return elapsed, cpu
