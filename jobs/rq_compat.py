"""The few places where we rely on RQ beyond its documented surface, all here.

pyproject.toml pins RQ to the minor version these were checked against (3.0), and
tests/test_rq_compat.py fails loudly when an upgrade changes any of them:

- `record_failure`: RQ has no public call that records a failure for a job no worker is
  handling any more (crash recovery, the timeout backstop, shutdown). `rq.job_lifecycle.
  record_job_failure` is the one its own synchronous path and abandoned-job cleanup use
  (status, FailedJobRegistry, failure Result, in the caller's pipeline), but it is
  undocumented and calls the private `Job._handle_failure`.
- `MAINTENANCE_LOCK_VALUE`: `Queue.acquire_maintenance_lock` stores the literal `1` under
  `Queue.registry_cleaning_key`; the supervisor recognises a lock RQ itself left behind
  by that value, and RQ exports no constant for it.
- `hook_arguments`: our worker overrides RQ's documented hooks with `*args, **kwargs` (so
  a new keyword in RQ does not break it) and finds the arguments it reads by binding them
  to RQ's own signature. A renamed parameter raises here instead of being missed.
- RQ's storage layout, read directly where one round trip or one Lua call must see it
  (recovery, deletion, the guarded progress write): the job hash's `status`, `meta`,
  `origin`, `worker_name`, `started_at`, `timeout` fields, the worker hash's `hostname`,
  `pid`, `birth`, `death`, and `<job id>:<execution id>` as the StartedJobRegistry's
  members. Key names come from RQ's helpers (`jobs.keys`).
- Retries (`jobs.retries`): a job waiting for its retry is written as RQ writes a scheduled
  one (status `scheduled`, the job hash's `meta` field, a ScheduledJobRegistry member scored
  by the unix time it is due, kept exact where RQ's own `schedule` rounds down to a second),
  and a Lua script moves due ones back (status `queued`, RPUSH onto the queue's list, the
  queue's key in `Queue.redis_queues_keys`), so a deleted job can never slip back in between.
- `callback_names`: RQ reads a job's callback names into private attributes and exposes
  them only through properties that import them; refusing a foreign job (`jobs.allowed`)
  must see the names without importing anything.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from redis.client import Pipeline
from rq.job import Job
from rq.job_lifecycle import record_job_failure

MAINTENANCE_LOCK_VALUE = b"1"


def record_failure(job: Job, message: str, pipeline: Pipeline) -> None:
    """Mark `job` failed with `message` as its failure text, inside `pipeline` (in MULTI)."""
    record_job_failure(job, message, pipeline)


def hook_arguments(hook: Callable[..., Any], worker: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """RQ's call of `hook` (the base class's function) bound to its names: `.arguments["job"]`.

    Raises TypeError when RQ calls a hook with arguments its own signature does not take.
    """
    bound = inspect.signature(hook).bind(worker, *args, **kwargs)
    bound.apply_defaults()
    return bound


def call_with(hook: Callable[..., Any], bound: inspect.BoundArguments) -> Any:
    """Call `hook` (a bound `super()` method) with the arguments bound above, maybe changed."""
    return hook(*bound.args[1:], **bound.kwargs)


def callback_names(job: Job) -> list[str]:
    """The success, failure and stopped callbacks a job names (as stored), never imported."""
    names = (job._success_callback_name, job._failure_callback_name, job._stopped_callback_name)
    return [name for name in names if name]
