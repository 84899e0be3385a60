"""The supervisor's main loop: a `step(now)` that tests drive with an explicit clock.

Signal handlers only set flags (`request_stop`); every decision is taken in `step`.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from config import Settings
from supervisor.workers import WorkerPool

log = logging.getLogger("dq.supervisor")

TICK = 0.2  # seconds between steps; cheap: a step only polls child processes


@dataclass
class Supervisor:
    settings: Settings
    pool: WorkerPool
    clock: Callable[[], float] = time.monotonic
    stop_requests: int = 0
    stopping_since: float | None = None
    done: bool = False
    _handled_requests: int = field(default=0, repr=False)

    # --- signals: flags only -------------------------------------------------------------
    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        self.stop_requests += 1

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # --- the loop ------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self.pool.step(now)

    def step(self, now: float) -> None:
        if self.stop_requests > self._handled_requests:
            self._handled_requests = self.stop_requests
            self._on_stop_request(now)
        self.pool.step(now)
        if self.stopping_since is not None:
            self._step_shutdown(now)

    def _on_stop_request(self, now: float) -> None:
        if self.stopping_since is None:
            log.info(
                "shutting down: workers finish their downloads (up to %gs), queued jobs stay queued",
                self.settings.shutdown_grace,
            )
            self.stopping_since = now
            self.pool.warm_stop()
        else:
            log.warning("second stop request: stopping now")
            self.pool.kill_all()

    def _step_shutdown(self, now: float) -> None:
        assert self.stopping_since is not None
        if not self.pool.live:
            self.done = True
            return
        if now - self.stopping_since >= self.settings.shutdown_grace:
            log.warning("shutdown grace of %gs ran out: stopping the remaining downloads",
                        self.settings.shutdown_grace)
            self.pool.kill_all()

    def run(self) -> int:
        self.install_signal_handlers()
        self.start(self.clock())
        while not self.done:
            time.sleep(TICK)
            self.step(self.clock())
        log.info("supervisor stopped")
        return 0
