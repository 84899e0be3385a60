"""Workers as this host sees them: which are really alive, and the signal that ties a
process's life to its parent's (set by every spawned worker)."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket

import redis
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.worker import BaseWorker, Worker

from config import Settings
from jobs.connection import SERIALIZER

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


def this_host() -> str:
    """The host name RQ records for workers started here (`socket.gethostname()`)."""
    return socket.gethostname()


def worker_alive(hostname: str | None, pid: int | None, host: str | None = None) -> bool:
    """Whether a worker registered in Redis is running, as far as this host can tell.

    A worker on this host is alive only if its PID is; one on another host cannot be
    probed from here, so its Redis key (which expires with its heartbeat) is trusted.
    """
    if hostname != (host or this_host()):
        return True
    return pid is not None and pid_alive(pid)


def live_workers(connection: redis.Redis, settings: Settings) -> list[BaseWorker]:
    """Workers of the queue that really run: a dead worker's key lingers for up to its TTL
    (minutes), so one registered on this host also needs a running PID."""
    queue = Queue(settings.queue_name, connection=connection, serializer=SERIALIZER)
    host = this_host()
    workers = Worker.all(queue=queue, connection=connection, serializer=SERIALIZER)
    return [worker for worker in workers if worker_alive(worker.hostname, worker.pid, host)]


def active_job_ids(connection: redis.Redis, settings: Settings) -> list[str]:
    """Jobs really being downloaded now: started, and their worker is alive and busy with them."""
    registry = StartedJobRegistry(settings.queue_name, connection=connection)
    pairs = registry.get_job_and_execution_ids(cleanup=False)
    if not pairs:
        return []
    workers = live_workers(connection, settings)
    busy = {w.get_current_job_id() for w in workers if w.get_state() == "busy"}
    return [job_id for job_id, _execution in pairs if job_id in busy]
