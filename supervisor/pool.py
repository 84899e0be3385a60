"""The worker processes: exactly `DQ_WORKERS` `rq worker` processes, each in its own session.

Each spawn gets a unique name (a dead worker's name stays taken in Redis for its TTL),
dies with the supervisor (parent-death signal), and runs `jobs.worker.DownloadWorker`.
A terminal's Ctrl-C reaches only the supervisor, which then decides what the workers get.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from config import Settings
from jobs.connection import SERIALIZER_PATH
from jobs.workers import set_parent_death_signal

WORKER_CLASS = "jobs.worker.DownloadWorker"
JOB_CLASS = "jobs.allowed.AllowedJob"  # the worker insists on it too; said here for `ps` readers
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)  # seconds, for a worker that keeps dying young
HEALTHY_AFTER = 30.0  # a worker that lived this long resets its slot's backoff

log = logging.getLogger("dq.supervisor")


@dataclass
class WorkerProcess:
    slot: int
    name: str
    process: subprocess.Popen[bytes]
    started_at: float

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Slot:
    index: int
    worker: WorkerProcess | None = None
    failures: int = 0  # consecutive early deaths
    restart_at: float = 0.0  # when the slot may spawn again


@dataclass
class WorkerPool:
    """Spawns and watches the workers; `step(now)` is driven by the supervisor loop."""

    settings: Settings
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    spawning: bool = True
    slots: list[Slot] = field(default_factory=list)
    spawned: int = 0

    def __post_init__(self) -> None:
        if not self.slots:
            self.slots = [Slot(i) for i in range(self.settings.workers)]

    @property
    def name_prefix(self) -> str:
        return f"dq.{socket.gethostname()}.{os.getpid()}"

    def command(self, name: str) -> list[str]:
        rq = Path(sys.executable).with_name("rq")
        return [
            str(rq), "worker", self.settings.queue_name,  # Redis from RQ_REDIS_URL: see spawn()
            "--worker-class", WORKER_CLASS,
            "--job-class", JOB_CLASS,
            "--serializer", SERIALIZER_PATH,
            "--name", name,
            "--logging_level", "INFO",
        ]  # fmt: skip

    def spawn(self, slot: Slot, now: float) -> WorkerProcess:
        self.spawned += 1
        name = f"{self.name_prefix}.{slot.index + 1}.{self.spawned}"
        supervisor_pid = os.getpid()
        process = subprocess.Popen(
            self.command(name),
            stdin=subprocess.DEVNULL,
            # `rq worker`'s --url would show a Redis password to every local user in `ps`.
            env={**self.env, "RQ_REDIS_URL": self.settings.effective_redis_url},
            # Own session: a terminal's Ctrl-C or a process group signal does not reach it.
            start_new_session=True,
            preexec_fn=lambda: set_parent_death_signal(supervisor_pid),
        )
        slot.worker = WorkerProcess(slot.index, name, process, now)
        log.info("started worker %s (pid %d)", name, process.pid)
        return slot.worker

    def reap(self, now: float) -> list[WorkerProcess]:
        """Notice dead workers, schedule their replacement with backoff; return the dead."""
        dead = []
        for slot in self.slots:
            worker = slot.worker
            if worker is None or worker.process.poll() is None:
                continue
            dead.append(worker)
            slot.worker = None
            lived = now - worker.started_at
            slot.failures = 0 if lived >= HEALTHY_AFTER else slot.failures + 1
            delay = RESTART_BACKOFF[min(slot.failures, len(RESTART_BACKOFF)) - 1] if slot.failures else 0.0
            slot.restart_at = now + delay
            if self.spawning:
                log.warning(
                    "worker %s (pid %d) exited with %s after %.1fs; restarting in %.1fs",
                    worker.name, worker.pid, worker.process.returncode, lived, delay,
                )  # fmt: skip
        return dead

    def step(self, now: float) -> list[WorkerProcess]:
        """Reap dead workers, (re)spawn those whose backoff has passed; return the dead."""
        dead = self.reap(now)
        if self.spawning:
            for slot in self.slots:
                if slot.worker is None and now >= slot.restart_at:
                    self.spawn(slot, now)
        return dead

    @property
    def live(self) -> list[WorkerProcess]:
        return [slot.worker for slot in self.slots if slot.worker is not None]

    def signal_all(self, sig: int) -> None:
        for worker in self.live:
            try:
                worker.process.send_signal(sig)
            except ProcessLookupError:
                pass

    def warm_stop(self) -> None:
        """Stop taking jobs; running jobs go on (SIGTERM to the worker parents only)."""
        self.spawning = False
        self.signal_all(signal.SIGTERM)

    def kill_all(self) -> None:
        self.spawning = False
        self.signal_all(signal.SIGKILL)
