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
- `write_queued`: what `Queue.enqueue_many` writes for jobs without dependencies (each
  job's hash as `Job.to_dict` gives it, status `queued`, `enqueued_at`; its id RPUSHed onto
  the queue's list; the queue's key in `Queue.redis_queues_keys`), in two commands per job
  fewer: one HSET per job with the status inside, one RPUSH for every id. A batch of 10,000
  URLs spends most of its time on the commands themselves.
- `callback_names`: RQ reads a job's callback names into private attributes and exposes
  them only through properties that import them; refusing a foreign job (`jobs.allowed`)
  must see the names without importing anything.
"""

from __future__ import annotations

import functools
import inspect
import uuid
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from redis.client import Pipeline
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.queue import EnqueueData, Queue
from rq.utils import now, utcformat

MAINTENANCE_LOCK_VALUE = b"1"


def record_failure(job: Job, message: str, pipeline: Pipeline) -> None:
    """Mark `job` failed with `message` as its failure text, inside `pipeline` (in MULTI)."""
    record_job_failure(job, message, pipeline)


@functools.cache
def _signature(hook: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(hook)  # RQ's functions do not change while we run; this is per job


def hook_arguments(hook: Callable[..., Any], worker: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """RQ's call of `hook` (the base class's function) bound to its names: `.arguments["job"]`.

    Raises TypeError when RQ calls a hook with arguments its own signature does not take.
    """
    bound = _signature(hook).bind(worker, *args, **kwargs)
    bound.apply_defaults()
    return bound


def call_with(hook: Callable[..., Any], bound: inspect.BoundArguments) -> Any:
    """Call `hook` (a bound `super()` method) with the arguments bound above, maybe changed."""
    return hook(*bound.args[1:], **bound.kwargs)


def callback_names(job: Job) -> list[str]:
    """The success, failure and stopped callbacks a job names (as stored), never imported."""
    names = (job._success_callback_name, job._failure_callback_name, job._stopped_callback_name)
    return [name for name in names if name]


def queued_job_hash(data: EnqueueData, origin: str, enqueued_at: str, serializer: Any) -> dict[Any, bytes | str | int]:
    """The hash `Job.to_dict` gives a new queued job made from `data` (no callbacks, retries,
    dependencies or TTL), built without a Job object: creating 10,000 of those costs more
    than writing them."""
    job_tuple = (data.func, None, data.args or (), data.kwargs or {})
    fields: dict[Any, bytes | str | int] = {  # Any: redis-py's key type
        "created_at": enqueued_at,
        "data": zlib.compress(serializer.dumps(job_tuple)),
        "success_callback_name": "",
        "failure_callback_name": "",
        "stopped_callback_name": "",
        "started_at": "",
        "ended_at": "",
        "last_heartbeat": "",
        "worker_name": "",
        "group_id": "",
        "origin": origin,
        "enqueued_at": enqueued_at,
        "status": JobStatus.QUEUED.value,
    }
    optional = {
        "description": data.description,
        "timeout": data.timeout,
        "result_ttl": data.result_ttl,
        "failure_ttl": data.failure_ttl,
    }
    fields.update({name: value for name, value in optional.items() if value is not None})
    if data.meta:
        fields["meta"] = serializer.dumps(data.meta)
    return fields


# One call for a whole batch: the fields every job shares are sent once, the rest per job.
# (The job keys are built here from RQ's prefix, so they are not declared: one Redis, no cluster.)
_WRITE_QUEUED = """
local prefix, shared_count = ARGV[1], tonumber(ARGV[2])
local shared = {}
for i = 3, 2 + 2 * shared_count do shared[#shared + 1] = ARGV[i] end
local names_at = 3 + 2 * shared_count
local name_count = tonumber(ARGV[names_at])
local names = {}
for i = 1, name_count do names[i] = ARGV[names_at + i] end
local ids = {}
for i = names_at + name_count + 1, #ARGV, name_count + 1 do
  local fields = {}
  for n = 1, name_count do
    fields[#fields + 1] = names[n]
    fields[#fields + 1] = ARGV[i + n]
  end
  for _, value in ipairs(shared) do fields[#fields + 1] = value end
  redis.call('HSET', prefix .. ARGV[i], unpack(fields))
  ids[#ids + 1] = ARGV[i]
end
if #ids > 0 then
  redis.call('SADD', KEYS[2], KEYS[1])
  for i = 1, #ids, 4000 do
    redis.call('RPUSH', KEYS[1], unpack(ids, i, math.min(i + 3999, #ids)))
  end
end
return #ids
"""


def write_queued(pipeline: Pipeline, queue: Queue, batch: Sequence[EnqueueData]) -> list[str]:
    """Queue new jobs (no dependencies, at the back) inside `pipeline`, as `enqueue_many`
    would, in one call; their ids, in order."""
    ids = [data.job_id or str(uuid.uuid4()) for data in batch]
    # Each job its own moment, as enqueue_many gives them: listings order a batch by it.
    hashes = [queued_job_hash(data, queue.name, utcformat(now()), queue.serializer) for data in batch]
    if not hashes:
        return ids
    first = hashes[0]
    if any(fields.keys() != first.keys() for fields in hashes):
        raise ValueError("a batch of queued jobs must store the same fields")
    shared = {name: value for name, value in first.items() if all(fields[name] == value for fields in hashes)}
    own = [name for name in first if name not in shared]
    arguments: list[Any] = [Job.key_for(""), len(shared), *(item for pair in shared.items() for item in pair)]
    arguments += [len(own), *own]
    for job_id, fields in zip(ids, hashes, strict=True):
        arguments += [job_id, *(fields[name] for name in own)]
    pipeline.eval(_WRITE_QUEUED, 2, queue.key, queue.redis_queues_keys, *arguments)
    return ids
