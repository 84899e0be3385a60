"""One service per state dir: advisory locks (`flock`) on files in the state dir.

    <state dir>/redis.lock        held for the lifetime of the Redis that serves
                                  `<state dir>/redis.sock`: by `bin/up` and its embedded server,
                                  or by `dq redis` (supervisord, systemd, the Procfile), which
                                  passes it on to the redis-server it execs into
    <state dir>/supervisor.lock   held by the running supervisor (`bin/up`, `bin/supervise`)

A second Redis or supervisor on a state dir in use is refused with a message naming the
holder. The kernel drops a lock with the last descriptor of it, so a killed holder never
leaves a stale lock behind; the file itself stays (removing it would race with the next
holder) and holds the holder's pid and command, for the message only.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

REDIS = "redis"
SUPERVISOR = "supervisor"
ACQUIRE_WAIT = 1.0  # seconds: a holder that was just killed may still be exiting


class StateDirBusy(RuntimeError):
    """Another Redis or supervisor runs on this state dir; the message says which and what to do."""


def busy_message(state_dir: Path, role: str, holder: str) -> str:
    what = "its Redis is run by" if role == REDIS else "a supervisor runs on it as"
    return (
        f"the state dir {state_dir} is in use: {what} {holder}; stop that one first (Ctrl-C or SIGTERM "
        "for bin/up, supervisorctl or systemctl for a process manager), or give this one a DQ_STATE_DIR "
        "of its own"
    )


@dataclass
class StateLock:
    state_dir: Path
    role: str  # REDIS or SUPERVISOR
    label: str  # how a refused second one names the holder: "dq up", "dq supervise", ...
    fd: int | None = None

    @property
    def path(self) -> Path:
        return self.state_dir / f"{self.role}.lock"

    def acquire(self, wait: float = ACQUIRE_WAIT) -> None:
        """Take the lock or raise StateDirBusy; the file then names this process."""
        if self.fd is not None:
            return
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds Redis's data
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder(fd)
                    os.close(fd)
                    raise StateDirBusy(busy_message(self.state_dir, self.role, holder)) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.label}\n".encode(), 0)
        self.fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        pid, _, label = text.partition(" ")
        if not pid.isdigit():
            return "another process (its pid is not recorded yet)"
        return f"pid {pid} ({label})" if label else f"pid {pid}"

    def keep_across_exec(self) -> None:
        """Let the program this process execs into hold the lock (same pid, same lock)."""
        if self.fd is not None:
            os.set_inheritable(self.fd, True)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
