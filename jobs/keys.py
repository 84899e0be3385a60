"""Every Redis key name the project reads or writes, RQ's and ours, from one place.

RQ's keys come from RQ's own helpers, so they follow `RQ_KEY_PREFIX` (read by `rq.defaults`
when rq is first imported) exactly as RQ's workers do; nothing here spells `rq:` by hand.
Our own keys live under `dq:`:

    dq:deleted            sorted set of tombstones: deleted job/album ids, scored by time
    dq:reason:<job id>    why the supervisor is about to kill the job's process (1 h TTL)
    dq:album:<album id>   hash: one album's record
    dq:albums             sorted set of album ids, scored by creation time
    dq:events             stream: the event history
    dq:published          hash: what each running supervisor tells the commands that enqueue
                          (field `<hostname>:<pid>`, see `jobs.published`)
    dq:backoff:<host:port>  until when every job for that server waits (its Retry-After)
    dq:parts:<hostname>   set: partial files downloads on that host have started (`jobs.parts`)
    dq:files              hash: final path → the URL whose download wrote it
    dq:urls               hash: `<dest>\0<name>\0<url>` → the job last enqueued for it
    dq:heartbeat:<hostname>  the unix time that host's supervisor last ran its cleanup (TTL)
    dq:metrics            hash: counters every worker adds to (`jobs.metrics`)
    dq:metrics:duration   hash: the job-duration histogram's bucket counts, sum and count
"""

from __future__ import annotations

import redis
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution, ExecutionRegistry
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.queue import Queue
from rq.registry import (
    BaseRegistry,
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rq.worker import BaseWorker

TOMBSTONES = "dq:deleted"
EVENTS = "dq:events"
ALBUMS = "dq:albums"
PUBLISHED = "dq:published"
FILES = "dq:files"
ACTIVE_URLS = "dq:urls"
_FAILURE_REASON_PREFIX = "dq:reason:"
_BACKOFF_PREFIX = "dq:backoff:"
_PARTS_PREFIX = "dq:parts:"
_ALBUM_PREFIX = "dq:album:"
HEARTBEAT_PREFIX = "dq:heartbeat:"  # SCAN matches on it to find every host's heartbeat
METRICS = "dq:metrics"
DURATIONS = "dq:metrics:duration"
# Some of RQ's key names exist only on instances, which want a connection: redis-py's client
# connects on first command, and these instances never send one.
_UNUSED = redis.Redis()


# --- ours -----------------------------------------------------------------------------------
def failure_reason(job_id: str) -> str:
    return _FAILURE_REASON_PREFIX + job_id


def album(album_id: str) -> str:
    return _ALBUM_PREFIX + album_id


def backoff(where: str) -> str:
    return _BACKOFF_PREFIX + where


def parts(hostname: str) -> str:
    return _PARTS_PREFIX + hostname


def heartbeat(hostname: str) -> str:
    return HEARTBEAT_PREFIX + hostname


# --- RQ's, by RQ's helpers ------------------------------------------------------------------
def job(job_id: str) -> str:
    return Job.key_for(job_id)


def job_dependents(job_id: str) -> str:
    return Job.dependents_key_for(job_id)


def job_dependencies(job_id: str) -> str:
    # Only an instance knows it (RQ 3.0 spells it `rq:job::<id>:dependencies`, double colon).
    return Job(id=job_id, connection=_UNUSED).dependencies_key


def results(job_id: str) -> str:
    return Result.get_key(job_id)


def executions(job_id: str) -> str:
    """The sorted set of a job's execution ids."""
    return ExecutionRegistry.key_template.format(job_id)


def execution(job_id: str, execution_id: str) -> str:
    return Execution(execution_id, job_id, connection=_UNUSED).key


def worker_executions(worker_name: str) -> str:
    return WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name)


def worker(worker_name: str) -> str:
    return BaseWorker.redis_worker_namespace_prefix + worker_name


def queue(queue_name: str) -> str:
    return Queue.redis_queue_namespace_prefix + queue_name


# The set of every queue's key, which RQ's workers and dashboard list queues by.
QUEUES = Queue.redis_queues_keys


def intermediate_queue(queue_name: str) -> str:
    return IntermediateQueue.get_intermediate_queue_key(queue(queue_name))


def maintenance_lock(queue_name: str) -> str:
    """RQ's per-queue lock for registry cleaning (`Queue.registry_cleaning_key`)."""
    return Queue(queue_name, connection=_UNUSED).registry_cleaning_key


def registry(registry_class: type[BaseRegistry], queue_name: str) -> str:
    return registry_class.key_template.format(queue_name)


def started(queue_name: str) -> str:
    return registry(StartedJobRegistry, queue_name)


def scheduled(queue_name: str) -> str:
    """Jobs waiting for their retry: member the job id, score the unix time it is due."""
    return registry(ScheduledJobRegistry, queue_name)


# Every registry a job id can sit in once it left the queue, but the started one (whose
# members are `<job id>:<execution id>`).
ENDED_REGISTRIES: tuple[type[BaseRegistry], ...] = (
    FinishedJobRegistry,
    FailedJobRegistry,
    CanceledJobRegistry,
    DeferredJobRegistry,
    ScheduledJobRegistry,
)
