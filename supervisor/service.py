"""What `bin/up` and `bin/supervise` run: Redis when embedded, the supervisor, the dashboard.

One of each per state dir (`supervisor.statelock`): a second supervisor or Redis on a state
dir in use exits with EXIT_BUSY and a message naming the holder. `bin/up` watches its embedded
Redis: if it exits or loses its socket, the workers are killed and `bin/up` exits 3.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable

import redis

from config import Settings, SettingsError
from jobs.connection import RedisUnavailable, connect
from jobs.logs import configure_logging
from jobs.urls import redacted
from jobs.workers import set_parent_death_signal
from supervisor.audit import AuditFollower
from supervisor.cleanup import Cleanup
from supervisor.loop import Supervisor
from supervisor.pool import WorkerPool
from supervisor.redis_server import RedisServer, RedisStartError
from supervisor.statelock import SUPERVISOR, StateDirBusy, StateLock

log = logging.getLogger("dq.supervisor")
EXIT_BUSY = 1  # the state dir is in use by another supervisor or Redis


def worker_env(settings: Settings) -> dict[str, str]:
    """The workers' environment: ours, with REDIS_URL pinned to the server we use."""
    env = dict(os.environ)
    env["REDIS_URL"] = settings.effective_redis_url
    env["PYTHONUNBUFFERED"] = "1"
    return env


def supervisor_lock(settings: Settings, label: str) -> StateLock | None:
    """This state dir's supervisor lock, taken; None (logged) when another process holds it."""
    lock = StateLock(settings.state_dir, SUPERVISOR, label)
    try:
        lock.acquire()
    except StateDirBusy as error:
        log.error("%s", error)
        return None
    return lock


def run_supervise(
    settings: Settings, *, watchdog: Callable[[], str | None] | None = None, lock: StateLock | None = None
) -> int:
    configure_logging(settings.log_format)
    if lock is None:
        lock = supervisor_lock(settings, "dq supervise")
        if lock is None:
            return EXIT_BUSY
    try:
        return _supervise(settings, watchdog)
    finally:
        lock.release()


def _supervise(settings: Settings, watchdog: Callable[[], str | None] | None) -> int:
    try:
        connection = connect(settings)
    except RedisUnavailable as error:
        log.error("%s", error)
        return 3
    settings.download_dir.mkdir(parents=True, exist_ok=True)
    pool = WorkerPool(settings, env=worker_env(settings))
    cleanup = Cleanup.create(connection, settings)
    # Positioned before the startup recovery runs, so its events are in the log too.
    audit = AuditFollower.at_end(connection)
    supervisor = Supervisor(settings, pool, cleanup, audit=audit, watchdog=watchdog)
    log.info(
        "supervising %d workers on queue %r at %s",
        settings.workers,
        settings.queue_name,
        redacted(settings.effective_redis_url),
    )
    code = supervisor.run()
    if supervisor.lost is None:
        try:
            cleanup.withdraw()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            log.warning("could not withdraw the published settings (they expire on their own): %s", error)
    return code


def start_dashboard(settings: Settings) -> subprocess.Popen[bytes]:
    parent = os.getpid()
    return subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "dashboard"],
        env=worker_env(settings),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=lambda: set_parent_death_signal(parent, signal.SIGTERM),
    )


def run_up(settings: Settings) -> int:
    configure_logging(settings.log_format)
    try:
        settings.check_dashboard_bind()
    except SettingsError as error:
        log.error("%s", error)
        return 2
    lock = supervisor_lock(settings, "dq up")
    if lock is None:
        return EXIT_BUSY
    server: RedisServer | None = None
    if settings.embedded_redis:
        server = RedisServer(settings.state_dir, socket_path=settings.redis_socket)
        try:
            server.start()
        except StateDirBusy as error:
            log.error("%s", error)
            lock.release()
            return EXIT_BUSY
        except RedisStartError as error:
            log.error("could not start the embedded Redis: %s", error)
            lock.release()
            return 3
        log.info("embedded Redis (%s) listening on %s", os.path.basename(server.binary), server.url)
    dashboard = start_dashboard(settings)
    try:
        return run_supervise(settings, watchdog=server.lost if server is not None else None, lock=lock)
    finally:
        dashboard.terminate()
        try:
            dashboard.wait(10)
        except subprocess.TimeoutExpired:
            dashboard.kill()
        if server is not None:
            server.stop()
