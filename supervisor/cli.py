"""The `dq` entry point: the queue's commands (`jobs.cli`) plus the ones that run the service."""

from __future__ import annotations

import logging
import sys

import click

from jobs.cli import load_settings, main
from jobs.logs import configure_logging
from supervisor.redis_server import RedisStartError, exec_server
from supervisor.service import EXIT_BUSY, run_supervise, run_up
from supervisor.statelock import StateDirBusy

__all__ = ["main"]
log = logging.getLogger("dq.supervisor")


@main.command()
def up() -> None:
    """Run everything in the foreground: Redis (unless REDIS_URL is set), workers, dashboard."""
    sys.exit(run_up(load_settings()))


@main.command()
def supervise() -> None:
    """Run the supervisor and its workers only (Redis runs elsewhere)."""
    sys.exit(run_supervise(load_settings()))


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("server_args", nargs=-1, type=click.UNPROCESSED)
def redis(server_args: tuple[str, ...]) -> None:
    """Run the state dir's Redis in the foreground, as bin/up embeds it (for process managers).

    It serves DQ_STATE_DIR/redis.sock (no TCP port, append-only persistence, logs to stdout)
    and holds the state dir's Redis lock, so a second Redis there is refused. Extra arguments
    go to redis-server (e.g. --supervised systemd).
    """
    configure_logging()
    settings = load_settings()
    try:
        exec_server(settings.state_dir, settings.redis_socket, server_args)
    except StateDirBusy as error:
        log.error("%s", error)
        sys.exit(EXIT_BUSY)
    except (RedisStartError, OSError) as error:
        log.error("could not start Redis: %s", error)
        sys.exit(3)


if __name__ == "__main__":
    main()
