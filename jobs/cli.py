"""The `dq` command line; every `bin/X` runs `dq X`.

Exit codes: 0 done, 1 the operation failed (a job failed, an id was not found),
2 bad input or bad settings (nothing was changed), 3 Redis unreachable.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

import click
import redis

from config import Settings, SettingsError
from jobs import display
from jobs.connection import RedisUnavailable, connect
from jobs.errors import InvalidRequest
from jobs.queue import STATES, TrackRequest, enqueue_tracks, fetch_jobs, job_view, list_jobs, stats

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REDIS = 1, 2, 3
WATCH_INTERVAL = 0.5


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as error:
        fail(str(error), EXIT_BAD_INPUT)


def open_redis(settings: Settings) -> redis.Redis:
    try:
        return connect(settings)
    except RedisUnavailable as error:
        fail(str(error), EXIT_REDIS)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """download-queue: a download job queue for music servers, on RQ."""


# --- running the service -------------------------------------------------------------------
@main.command()
def up() -> None:
    """Run everything in the foreground: Redis (unless REDIS_URL is set), workers, dashboard."""
    from supervisor.service import run_up

    settings = load_settings()
    sys.exit(run_up(settings))


@main.command()
def supervise() -> None:
    """Run the supervisor and its workers only (Redis runs elsewhere)."""
    from supervisor.service import run_supervise

    settings = load_settings()
    sys.exit(run_supervise(settings))


# --- the queue -----------------------------------------------------------------------------
def read_url_lines(stream: TextIO) -> list[tuple[int, str]]:
    """Non-blank, non-comment lines with their 1-based line numbers."""
    lines = []
    for number, raw in enumerate(stream, start=1):
        text = raw.strip()
        if text and not text.startswith("#"):
            lines.append((number, text))
    return lines


@main.command()
@click.argument("urls", nargs=-1)
@click.option("--from-file", "from_file", type=click.File("r"), help="Read one URL per line (- for stdin).")
@click.option("--dest", default="", help="Folder relative to the download dir.")
@click.option("--name", default=None, help="File name to save as (one URL only).")
@click.option("--json", "as_json", is_flag=True, help="Print job objects as JSON.")
@click.option("--wait", is_flag=True, help="Show progress until the jobs end; exit 0 only if all completed.")
def enqueue(
    urls: Sequence[str], from_file: TextIO | None, dest: str, name: str | None, as_json: bool, wait: bool
) -> None:
    """Put one track job per URL on the queue; print one job id per line."""
    settings = load_settings()
    requests_: list[TrackRequest] = []
    try:
        for url in urls:
            requests_.append(TrackRequest(url, dest, name).checked())
        if from_file is not None:
            for number, url in read_url_lines(from_file):
                try:
                    requests_.append(TrackRequest(url, dest, name).checked())
                except InvalidRequest as error:
                    raise InvalidRequest(f"line {number}: {error}") from None
    except InvalidRequest as error:
        fail(f"{error} (nothing was enqueued)", EXIT_BAD_INPUT)
    if not requests_:
        fail("no URL given (nothing was enqueued)", EXIT_BAD_INPUT)
    if name is not None and len(requests_) > 1:
        fail("--name needs exactly one URL (nothing was enqueued)", EXIT_BAD_INPUT)
    connection = open_redis(settings)
    jobs = enqueue_tracks(connection, settings, requests_)
    print_enqueued([job_view(job) for job in jobs], as_json)
    if wait:
        sys.exit(wait_for(connection, [job.id for job in jobs]))


def print_enqueued(views: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(views, indent=2))
    else:
        for view in views:
            click.echo(view["id"])


def wait_for(connection: redis.Redis, job_ids: list[str], *, clock: Callable[[], float] = time.monotonic) -> int:
    """Follow jobs until each ended: bars in a terminal, a line per state change otherwise."""
    tty = sys.stderr.isatty()
    seen: dict[str, str] = {}
    drawn = 0
    while True:
        views = [job_view(job) for job in fetch_jobs(connection, job_ids)]
        gone = len(job_ids) - len(views)
        if tty:
            block = display.bars(views)
            if drawn:
                click.echo(f"\x1b[{drawn}F\x1b[J", nl=False, err=True)
            click.echo(block, err=True)
            drawn = block.count("\n") + 1
        else:
            for view in views:
                if seen.get(view["id"]) != view["state"]:
                    seen[view["id"]] = view["state"]
                    click.echo(display.line(view), err=True)
        if all(view["state"] in ("completed", "failed", "partial") for view in views):
            ok = gone == 0 and all(view["state"] == "completed" for view in views)
            if gone:
                click.echo(f"{gone} job(s) were deleted while waiting", err=True)
            return 0 if ok else EXIT_FAILED
        time.sleep(WATCH_INTERVAL)


@main.command(name="jobs")
@click.option("--state", type=click.Choice(STATES + ("partial",)), default=None, help="Only jobs in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of job objects.")
@click.option("--watch", is_flag=True, help="Keep showing live progress until interrupted.")
def jobs_command(state: str | None, as_json: bool, watch: bool) -> None:
    """List jobs and albums still kept in Redis (completed for a day, failed for a week)."""
    settings = load_settings()
    connection = open_redis(settings)
    if as_json:
        click.echo(json.dumps(list_jobs(connection, settings, state), indent=2))
        return
    if not watch:
        click.echo(display.table(list_jobs(connection, settings, state)))
        return
    drawn = 0
    tty = sys.stdout.isatty()
    try:
        while True:
            views = list_jobs(connection, settings, state)
            block = display.bars(views) if tty else display.table(views)
            if tty and drawn:
                click.echo(f"\x1b[{drawn}F\x1b[J", nl=False)
            click.echo(block if tty else block + "\n")
            drawn = block.count("\n") + 1
            time.sleep(WATCH_INTERVAL if tty else 2.0)
    except KeyboardInterrupt:
        pass


@main.command(name="stats")
@click.option("--json", "as_json", is_flag=True, help="Print the original API's JSON shape.")
def stats_command(as_json: bool) -> None:
    """Queue and worker figures."""
    settings = load_settings()
    connection = open_redis(settings)
    figures = stats(connection, settings)
    if as_json:
        click.echo(json.dumps(figures))
        return
    queue, worker = figures["queue"], figures["worker"]
    click.echo(
        f"queue: {queue['queued']} queued, {queue['processing']} processing, "
        f"{queue['completed']} completed, {queue['failed']} failed ({queue['total']} in all)"
    )
    click.echo(
        f"workers: {worker['workers']} running, {worker['activeDownloads']} downloading "
        f"(at most {worker['maxConcurrent']} at once)"
    )


if __name__ == "__main__":
    main()
