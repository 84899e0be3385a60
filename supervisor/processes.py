"""Small process tools shared by the supervisor's parts."""

from __future__ import annotations

import ctypes
import errno
import os
import signal

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(expected_parent: int, sig: int = signal.SIGKILL) -> None:
    """In a child: be killed with `sig` when the parent dies (Linux); exit if it already has.

    The parent may die between fork and the prctl call, so the parent pid is checked after.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != expected_parent:
        os._exit(1)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM
    # A zombie child still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def send_signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True
