"""What `bin/up` and `bin/supervise` run: Redis when embedded, the supervisor, the dashboard."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

from config import Settings, SettingsError
from jobs.connection import RedisUnavailable, connect
from jobs.logs import configure_logging
from jobs.workers import set_parent_death_signal
from supervisor.cleanup import Cleanup
from supervisor.loop import Supervisor
from supervisor.pool import WorkerPool
from supervisor.redis_server import RedisServer, RedisStartError

log = logging.getLogger("dq.supervisor")


def worker_env(settings: Settings) -> dict[str, str]:
    """The workers' environment: ours, with REDIS_URL pinned to the server we use."""
    env = dict(os.environ)
    env["REDIS_URL"] = settings.effective_redis_url
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_supervise(settings: Settings) -> int:
    configure_logging()
    try:
        connection = connect(settings)
    except RedisUnavailable as error:
        log.error("%s", error)
        return 3
    settings.download_dir.mkdir(parents=True, exist_ok=True)
    pool = WorkerPool(settings, env=worker_env(settings))
    supervisor = Supervisor(settings, pool, Cleanup.create(connection, settings))
    log.info(
        "supervising %d workers on queue %r at %s", settings.workers, settings.queue_name, settings.effective_redis_url
    )
    return supervisor.run()


def start_dashboard(settings: Settings) -> subprocess.Popen[bytes]:
    parent = os.getpid()
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "dashboard"],
        env=worker_env(settings),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=lambda: set_parent_death_signal(parent, signal.SIGTERM),
    )


def run_up(settings: Settings) -> int:
    configure_logging()
    try:
        settings.check_dashboard_bind()
    except SettingsError as error:
        log.error("%s", error)
        return 2
    server: RedisServer | None = None
    if settings.embedded_redis:
        server = RedisServer(settings.state_dir, socket_path=settings.redis_socket)
        try:
            server.start()
        except RedisStartError as error:
            log.error("could not start the embedded Redis: %s", error)
            return 3
        log.info("embedded Redis (%s) listening on %s", os.path.basename(server.binary), server.url)
    dashboard = start_dashboard(settings)
    try:
        return run_supervise(settings)
    finally:
        dashboard.terminate()
        try:
            dashboard.wait(10)
        except subprocess.TimeoutExpired:
            dashboard.kill()
        if server is not None:
            server.stop()
