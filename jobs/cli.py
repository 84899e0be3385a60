"""The `dq` command line for the queue: enqueue, jobs, delete, retry, stats.

`supervisor.cli` adds the commands that run the service (`up`, `supervise`) and is the
`dq` entry point; every `bin/X` runs `dq X`.

Exit codes: 0 done, 1 the operation failed (a job failed, an id was not found),
2 bad input or bad settings (nothing was changed), 3 Redis unreachable.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from typing import Any, NoReturn, TextIO

import click
import redis

from config import Settings, SettingsError
from jobs import history
from jobs.connection import RedisUnavailable, connect
from jobs.enqueue import TrackRequest, backlog_warning, enqueue_album, enqueue_playlist, enqueue_tracks
from jobs.errors import InvalidRequest, QueueFull
from jobs.ids import AmbiguousId, resolve_all
from jobs.logs import configure_logging
from jobs.stats import stats
from jobs.views import ENDED, PARTIAL, STATES, list_jobs, views_of, waited_views

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REDIS = 1, 2, 3
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it
WATCH_INTERVAL = 0.5
ALL_EVENTS = "*"  # what `--history` without an id stands for


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
    # The listings' and progress bars' modules (rich: a third of `dq`'s imports) are imported
    # by the commands that draw, so `dq enqueue` in a script starts without them.


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
@click.option("--album", "album_name", default=None, metavar="NAME", help="One album of the URLs, in DEST/NAME/.")
@click.option("--playlist", "playlist_url", default=None, metavar="URL", help="One album from an M3U/M3U8 playlist.")
@click.option("--force", is_flag=True, help="Enqueue even if the same download is queued; replace its file.")
def enqueue(
    urls: Sequence[str],
    from_file: TextIO | None,
    dest: str,
    name: str | None,
    as_json: bool,
    wait: bool,
    album_name: str | None,
    playlist_url: str | None,
    force: bool,
) -> None:
    """Put one track job per URL on the queue; print one job id per line.

    The same URL and destination as a job still queued or running prints that job's id
    instead (--force enqueues anyway).

    With --album or --playlist: one album; its id is printed first, then its track ids.
    """
    settings = load_settings()
    if playlist_url is not None:
        if urls or from_file is not None or name is not None:
            fail("--playlist takes no URLs, --from-file or --name (nothing was enqueued)", EXIT_BAD_INPUT)
        sys.exit(enqueue_album_command(settings, album_name, [], dest, as_json, wait, playlist_url=playlist_url))
    if album_name is not None and name is not None:
        fail(
            "--name cannot be used with --album: album tracks are named by the album (nothing was enqueued)",
            EXIT_BAD_INPUT,
        )
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
    if album_name is not None:
        sys.exit(enqueue_album_command(settings, album_name, [r.url for r in requests_], dest, as_json, wait))
    connection = open_redis(settings)
    try:
        job_ids = enqueue_tracks(connection, settings, requests_, force=force)
    except InvalidRequest as error:
        fail(f"{error} (nothing was enqueued)", EXIT_BAD_INPUT)
    except QueueFull as error:
        fail(f"{error} (nothing was enqueued)", EXIT_FAILED)
    print_enqueued(connection, job_ids, as_json)
    warn_if_backlogged(connection, settings)
    if wait:
        sys.exit(wait_for(connection, job_ids))


def enqueue_album_command(
    settings: Settings,
    album_name: str | None,
    urls: list[str],
    dest: str,
    as_json: bool,
    wait: bool,
    *,
    playlist_url: str | None = None,
) -> int:
    """Enqueue one album (from URLs or a playlist); print its id, then its track ids."""
    connection = open_redis(settings)
    try:
        if playlist_url is not None:
            # The tracks are known only once a worker has read the playlist.
            record, _playlist_job = enqueue_playlist(connection, settings, playlist_url, album_name, dest)
            track_ids: list[str] = []
        else:
            assert album_name is not None
            record, track_ids = enqueue_album(connection, settings, album_name, urls, dest)
    except InvalidRequest as error:
        fail(f"{error} (nothing was enqueued)", EXIT_BAD_INPUT)
    except QueueFull as error:
        fail(f"{error} (nothing was enqueued)", EXIT_FAILED)
    ids = [record.id] + track_ids
    print_enqueued(connection, ids, as_json)
    warn_if_backlogged(connection, settings)
    return wait_for(connection, ids) if wait else 0


def warn_if_backlogged(connection: redis.Redis, settings: Settings) -> None:
    warning = backlog_warning(connection, settings)
    if warning is not None:
        click.echo(f"warning: {warning}", err=True)


def print_enqueued(connection: redis.Redis, ids: list[str], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(views_of(connection, ids), indent=2))
    else:
        click.echo("\n".join(ids))


def wait_for(connection: redis.Redis, job_ids: list[str]) -> int:
    """Follow jobs until each ended: bars in a terminal, a line per state change otherwise.

    Ctrl-C stops the waiting, not the jobs: it says so and how to delete them (exit 130).
    """
    from jobs import display, terminal  # rich: loaded only by the commands that draw (see main)

    tty = sys.stderr.isatty()
    seen: dict[str, str] = {}
    top: list[dict[str, Any]] | None = None
    screen = terminal.live(terminal.console(sys.stderr)) if tty else None
    try:
        with screen if screen is not None else nullcontext():
            while True:
                top, tracks_of = waited_views(connection, job_ids)
                if screen is not None:
                    screen.update(terminal.Bars(top, tracks_of), refresh=True)
                else:
                    for view in top + [track for tracks in tracks_of.values() for track in tracks]:
                        if seen.get(view["id"]) != view["state"]:
                            seen[view["id"]] = view["state"]
                            click.echo(display.line(view), err=True)
                if all(view["state"] in ENDED for view in top):
                    break
                time.sleep(WATCH_INTERVAL)
    except KeyboardInterrupt:
        going = job_ids if top is None else [view["id"] for view in top if view["state"] not in ENDED]
        click.echo(display.stopped_waiting(going), err=True)
        return EXIT_INTERRUPTED
    gone = len(job_ids) - len(views_of(connection, job_ids))
    if gone:
        click.echo(display.deleted_while_waiting(gone), err=True)
    return 0 if gone == 0 and all(view["state"] == "completed" for view in top) else EXIT_FAILED


@main.command(name="jobs")
@click.option("--state", type=click.Choice(STATES + (PARTIAL,)), default=None, help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most N (default: a screenful).")
@click.option("--all", "show_all", is_flag=True, help="Show every job kept, however many.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of every job object.")
@click.option("--watch", is_flag=True, help="Keep showing live progress until interrupted.")
@click.option(
    "--history",
    "history_of",
    is_flag=False,
    flag_value=ALL_EVENTS,
    default=None,
    metavar="[ID]",
    help="Show the event history (of one job or album), deleted jobs included.",
)
def jobs_command(
    state: str | None, limit: int | None, show_all: bool, as_json: bool, watch: bool, history_of: str | None
) -> None:
    """List jobs and albums: running first, then queued, then the latest finished.

    On a terminal: a table cut to its width and height, a header and totals, each album one
    entry. Piped: one plain line per job and album, nothing cut. Completed jobs are kept for a
    day, failed ones for a week.
    """
    if limit is not None and show_all:
        fail("--limit and --all exclude each other", EXIT_BAD_INPUT)
    if as_json and (limit is not None or show_all):
        fail("--json prints every job; --limit and --all are for the listing", EXIT_BAD_INPUT)
    settings = load_settings()
    connection = open_redis(settings)
    if history_of is not None:
        one = None if history_of == ALL_EVENTS else history_of
        events = history.read(connection, one)
        if one and not events:
            # A prefix; it may name a job only the history still knows (deleted, expired).
            everything = history.read(connection, limit=history.MAX_EVENTS)
            known = {event[field] for event in everything for field in ("job", "album") if event[field]}
            one = resolved(connection, [one], known)[0]
            events = history.read(connection, one)
        if as_json:
            click.echo(json.dumps(events, indent=2))
        elif one and not events:
            fail(f"no events for {history_of}", EXIT_FAILED)
        else:
            click.echo("\n".join(event_line(event) for event in events) if events else "no events")
        return
    if as_json:
        click.echo(json.dumps(list_jobs(connection, settings, state), indent=2))
        return
    from jobs import display, listing, terminal  # rich: loaded only by the commands that draw (see main)

    tty = sys.stdout.isatty()
    fit_screen = limit is None and not show_all

    def table(bars: bool = False) -> terminal.JobsTable:
        views = list_jobs(connection, settings)
        return terminal.JobsTable(views, state=state, limit=limit, fit_screen=fit_screen, bars=bars)

    def plain() -> str:
        views = listing.ordered(list_jobs(connection, settings, state))
        return display.plain_listing(views[:limit] if limit is not None else views)

    if not watch:
        if tty:
            terminal.console(sys.stdout).print(table())
        else:
            click.echo(plain())
        return
    try:
        if not tty:
            while True:
                click.echo(plain() + "\n")
                time.sleep(2.0)
        with terminal.live(terminal.console(sys.stdout)) as screen:
            while True:
                screen.update(table(bars=True), refresh=True)
                time.sleep(WATCH_INTERVAL)
    except KeyboardInterrupt:
        pass


def resolved(connection: redis.Redis, ids: Sequence[str], known: Iterable[str] = ()) -> list[str]:
    """Full ids for what was typed (any unique prefix of 6+ characters); exit 2 when ambiguous."""
    try:
        return resolve_all(connection, ids, known)
    except AmbiguousId as error:
        fail(f"{error} (nothing was changed)", EXIT_BAD_INPUT)


def event_line(event: dict[str, Any]) -> str:
    """`<time>  <job id>  <event>  <message>  (album <id>)`: one line per event."""
    parts = [event["at"], event["job"] or "", event["event"] or ""]
    if event.get("message"):
        parts.append(event["message"])
    if event.get("album") and event["album"] != event["job"]:
        parts.append(f"(album {event['album']})")
    return "  ".join(parts)


@main.command()
@click.argument("ids", nargs=-1, required=True)
def delete(ids: Sequence[str]) -> None:
    """Delete jobs or albums in any state; print `<id> deleted|cancelled|not found` per id.

    A running download is stopped first (its .part removed); downloaded files stay.
    """
    from jobs.deletion import NOT_FOUND, delete_jobs

    settings = load_settings()
    configure_logging(settings.log_format)  # stdout stays the contract; warnings go to stderr
    connection = open_redis(settings)
    outcomes = delete_jobs(connection, settings, resolved(connection, ids))
    for item_id, outcome in outcomes:
        click.echo(f"{item_id} {outcome}")
    if any(outcome == NOT_FOUND for _, outcome in outcomes):
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("ids", nargs=-1, required=True)
def retry(ids: Sequence[str]) -> None:
    """Start failed jobs again with a fresh attempt budget; print `<id> retried|not found|not failed`.

    An album id retries the album's failed tracks.
    """
    from jobs.requeue import RETRIED, retry_jobs

    settings = load_settings()
    configure_logging(settings.log_format)
    connection = open_redis(settings)
    outcomes = retry_jobs(connection, resolved(connection, ids))
    for item_id, outcome in outcomes:
        click.echo(f"{item_id} {outcome}")
    if any(outcome != RETRIED for _, outcome in outcomes):
        sys.exit(EXIT_FAILED)


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
