"""The `dq` entry point: the queue's commands (`jobs.cli`) plus the ones that run the service."""

from __future__ import annotations

import sys

from jobs.cli import load_settings, main
from supervisor.service import run_supervise, run_up

__all__ = ["main"]


@main.command()
def up() -> None:
    """Run everything in the foreground: Redis (unless REDIS_URL is set), workers, dashboard."""
    sys.exit(run_up(load_settings()))


@main.command()
def supervise() -> None:
    """Run the supervisor and its workers only (Redis runs elsewhere)."""
    sys.exit(run_supervise(load_settings()))


if __name__ == "__main__":
    main()
