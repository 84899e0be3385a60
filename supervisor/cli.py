"""The `dq` entry point: the queue's commands (`jobs.cli`) plus the ones that run the service
(`up`, `supervise`, `dashboard`, `redis`) and probe it (`health`)."""

from __future__ import annotations

import json
import logging
import signal
import sys

import click

from config import SettingsError
from jobs.cli import EXIT_BAD_INPUT, EXIT_FAILED, fail, load_settings, main, open_redis
from jobs.connection import connect
from jobs.logs import configure_logging
from jobs.urls import redacted

# The service's own modules (Flask and rq-dashboard among them, over half of all start-up
# time) are imported by the commands that run it, so `dq enqueue` in a script loads none.

__all__ = ["main"]
log = logging.getLogger("dq.supervisor")


@main.command()
def up() -> None:
    """Run everything in the foreground: Redis (unless REDIS_URL is set), workers, dashboard."""
    from supervisor.service import run_up

    sys.exit(run_up(load_settings()))


@main.command()
def supervise() -> None:
    """Run the supervisor and its workers only (Redis runs elsewhere)."""
    from supervisor.service import run_supervise

    sys.exit(run_supervise(load_settings()))


@main.command()
def dashboard() -> None:
    """Serve the web dashboard (rq-dashboard) at DQ_DASHBOARD_HOST:DQ_DASHBOARD_PORT."""
    from jobs.dashboard import make_dashboard_server

    settings = load_settings()
    configure_logging(settings.log_format)  # the server's own lines (waitress) too
    try:
        settings.check_dashboard_bind()
    except SettingsError as error:
        fail(str(error), EXIT_BAD_INPUT)
    connection = open_redis(settings)
    address = f"{settings.dashboard_host}:{settings.dashboard_port}"
    try:
        server = make_dashboard_server(settings, connection)
    except OSError as error:
        fail(f"cannot serve the dashboard on {address}: {error}", EXIT_FAILED)

    def stop(signum: int, frame: object) -> None:
        # SystemExit unwinds waitress's loop, so process managers see a clean exit 0.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    auth = "basic auth" if settings.dashboard_auth else "no auth (loopback only)"
    if settings.api_token is not None:
        auth += ", API token"
    logging.getLogger("dq.dashboard").info(
        "dashboard on http://%s/ (%s), Redis %s", address, auth, redacted(settings.effective_redis_url)
    )
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the /health object as JSON.")
def health(as_json: bool) -> None:
    """Check Redis, the supervisor heartbeat, the workers and the queue's length.

    One line per check (or, with --json, what /health answers). Exit 0 ok or warn,
    1 fail, 3 Redis unreachable.
    """
    from jobs import health as health_checks

    settings = load_settings()
    result = health_checks.check(connect(settings, check=False), settings)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo("\n".join(health_checks.lines(result)))
    sys.exit(health_checks.exit_code(result))


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("server_args", nargs=-1, type=click.UNPROCESSED)
def redis(server_args: tuple[str, ...]) -> None:
    """Run the state dir's Redis in the foreground, as bin/up embeds it (for process managers).

    It serves DQ_STATE_DIR/redis.sock (no TCP port, append-only persistence, logs to stdout)
    and holds the state dir's Redis lock, so a second Redis there is refused. Extra arguments
    go to redis-server (e.g. --supervised systemd).
    """
    from supervisor.redis_server import RedisStartError, exec_server
    from supervisor.service import EXIT_BUSY
    from supervisor.statelock import StateDirBusy

    settings = load_settings()
    configure_logging(settings.log_format)
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
