"""Helpers shared by the test modules: running `dq` and its supervisors as real processes,
reading jobs back from Redis, and the deployment files' formats.

Fixtures and pytest hooks live in conftest.py; the fault-injecting HTTP server in faultserver.py.
A helper that only one test module needs stays in that module.

Helpers that call into `jobs` import it where they need it: conftest.py imports this module, so
a module-level import that fails would stop the whole suite from being collected, not just the
tests that use that helper.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.utils import as_text

from config import Settings
from jobs.connection import SERIALIZER
from jobs.enqueue import TrackRequest, enqueue_tracks, track_job_data
from jobs.views import error_line
from jobs.workers import live_workers as running

ROOT = Path(__file__).resolve().parent.parent
DQ = str(Path(sys.executable).with_name("dq"))

# Small settings so end-to-end tests run in seconds; production defaults are asserted
# separately in test_settings.py.
FAST_SETTINGS = {
    "DQ_REQUEST_TIMEOUT": "1",
    "DQ_JOB_TIMEOUT": "8",
    "DQ_CLEANUP_INTERVAL": "0.5",
    "DQ_SHUTDOWN_GRACE": "4",
    "DQ_ALLOW_PRIVATE_NETWORKS": "1",
    # Phase 1's behaviour, which the checklist tests pin down: one attempt per job.
    # tests/test_retries.py turns retries on with RETRY_SETTINGS.
    "DQ_RETRIES": "0",
}

# Retries on, with delays short enough for tests (the contract's are 1,2,5,10 s).
RETRY_SETTINGS = {"DQ_RETRIES": "3", "DQ_RETRY_DELAYS": "0.2,0.4", "DQ_RETRY_AFTER_MAX": "10"}

# A fault-server path at 20 kB/s for 20 s: well above the stall guard, far from done.
SLOW = "/slow/400000/{name}.flac?seconds=20"

# How long tests keep watching a deleted job for anything of it to come back: longer than a
# progress interval, a worker's monitoring loop tick and a cleanup interval together.
NEVER_BACK_SECONDS = 4.0


# --- waiting, ports, processes -------------------------------------------------------------------
def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is truthy or `timeout` seconds pass; its last verdict."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def log_text(path: Path) -> str:
    """A log file's text so far; empty before the process has written it."""
    return path.read_text(errors="replace") if path.exists() else ""


def pid_running(pid: int) -> bool:
    """The process exists and is not a zombie (read from /proc, not through the code under test)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


# --- `dq` commands -------------------------------------------------------------------------------
def run_dq(
    args: list[str], env: Mapping[str, str], *, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`dq ARGS` as a real process from the checkout; its output as text."""
    return subprocess.run(
        [DQ, *args], env=dict(env), input=input, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def enqueue(env: Mapping[str, str], *args: str) -> list[str]:
    """`dq enqueue ARGS`; the ids it printed (for an album or a playlist: the album id first)."""
    result = run_dq(["enqueue", *args], env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def listed(env: Mapping[str, str], *args: str) -> dict[str, dict[str, Any]]:
    """`dq jobs --json ARGS`, by id."""
    result = run_dq(["jobs", "--json", *args], env)
    assert result.returncode == 0, result.stderr
    return {view["id"]: view for view in json.loads(result.stdout)}


def dq_stats(env: Mapping[str, str]) -> dict[str, Any]:
    """`dq stats --json`: {"queue": {...}, "worker": {...}}."""
    result = run_dq(["stats", "--json"], env)
    assert result.returncode == 0, result.stderr
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def wait_listed_ended(env: Mapping[str, str], ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Poll `dq jobs --json` until every one of `ids` is completed, failed or partial; the last listing."""
    views: dict[str, dict[str, Any]] = {}

    def ended() -> bool:
        views.clear()
        views.update(listed(env))
        return all(views.get(i, {}).get("state") in ("completed", "failed", "partial") for i in ids)

    assert wait_until(ended, timeout, interval=0.3), {i: views.get(i) for i in ids}
    return views


# --- supervisors and their workers ---------------------------------------------------------------
@dataclass
class Service:
    """A `dq supervise` (or `dq up`) process started by a test."""

    process: subprocess.Popen[str]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return log_text(self.log_path)

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill_group(self) -> None:
        """SIGKILL the whole process group (the supervisor and anything left in it)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)


def live_workers(connection: redis.Redis, env: Mapping[str, str]) -> int:
    """Workers really running (a killed worker's key lingers in Redis for minutes)."""
    return len(running(connection, Settings.from_env(env)))


def spawned_workers(service: Service) -> list[tuple[str, int]]:
    """(name, pid) of every worker this supervisor started, from its log."""
    return [(m[1], int(m[2])) for m in re.finditer(r"started worker (\S+) \(pid (\d+)\)", service.log())]


def wait_workers_registered(connection: redis.Redis, service: Service, count: int, timeout: float = 30) -> None:
    """`count` workers of this supervisor are running and registered in Redis."""

    def ready() -> bool:
        live = [(n, p) for n, p in spawned_workers(service) if pid_running(p)]
        return len(live) >= count and all(connection.exists(f"rq:worker:{n}") for n, _ in live)

    assert wait_until(ready, timeout), service.log()


def register_fake_worker(connection: redis.Redis, name: str, pid: int, hostname: str | None = None) -> None:
    """A worker's registration in Redis, as `rq worker` writes it, for a process of our choice."""
    key = f"rq:worker:{name}"
    connection.hset(key, mapping={"hostname": hostname or socket.gethostname(), "pid": pid, "birth": "x"})
    connection.expire(key, 120)


def worker_pid(connection: redis.Redis, worker_name: str) -> int:
    """The pid a registered worker wrote to Redis."""
    raw = connection.hget(f"rq:worker:{worker_name}", "pid")
    assert raw, f"worker {worker_name} is not registered"
    return int(raw)


# --- jobs in Redis -------------------------------------------------------------------------------
def status_of(connection: redis.Redis, job_id: str) -> str | None:
    """RQ's status of a job ("queued", "started", "finished", ...); None when the job is gone.

    Compares equal to rq's `JobStatus` members, which are `str`s.
    """
    raw = connection.hget(f"rq:job:{job_id}", "status")
    return raw.decode() if isinstance(raw, bytes) else raw


def error_of(connection: redis.Redis, job_id: str) -> str | None:
    """The one-line error of a job, as `dq jobs` shows it."""
    return error_line(Job.fetch(job_id, connection=connection, serializer=SERIALIZER))


def worker_of(connection: redis.Redis, job_id: str) -> str:
    """The name of the worker that took the job."""
    raw = connection.hget(f"rq:job:{job_id}", "worker_name")
    assert raw, f"job {job_id} has no worker"
    return as_text(raw)


def downloading(connection: redis.Redis, job_ids: list[str], download_dir: Path) -> bool:
    """Every job started, and each has its `.part` on disk (bytes are flowing)."""
    if any(status_of(connection, job_id) != "started" for job_id in job_ids):
        return False
    return len(list(download_dir.rglob("*.part"))) >= len(job_ids)


def wait_ended(connection: redis.Redis, job_ids: list[str], timeout: float) -> dict[str, str | None]:
    """Wait until RQ has ended every job (finished, failed, stopped or canceled); their statuses."""
    ended = ("finished", "failed", "stopped", "canceled")
    ok = wait_until(lambda: all(status_of(connection, i) in ended for i in job_ids), timeout, interval=0.1)
    states = {job_id: status_of(connection, job_id) for job_id in job_ids}
    assert ok, states
    return states


def wait_status(connection: redis.Redis, job_id: str, wanted: str, timeout: float = 30) -> None:
    """Wait until the job's RQ status is `wanted` (a string or a `JobStatus`)."""
    ok = wait_until(lambda: status_of(connection, job_id) == wanted, timeout=timeout, interval=0.1)
    assert ok, f"job {job_id} is {status_of(connection, job_id)}, not {wanted}"


def enqueue_track(connection: redis.Redis, settings: Settings, url: str) -> str:
    """Enqueue one track in process, as `dq enqueue` would but without checking the URL; its id."""
    [job_id] = enqueue_tracks(connection, settings, [TrackRequest(url)])
    return job_id


def insert_started_job(
    connection: redis.Redis,
    settings: Settings,
    *,
    worker_name: str,
    started_ago: float,
    final_path: Path | None = None,
    heartbeat_ttl: int = 120,
) -> str:
    """A job as a worker leaves it mid-download: status started, an execution in the registry."""
    data = track_job_data(TrackRequest("http://127.0.0.1:9/x.flac"), settings)
    queue = Queue(settings.queue_name, connection=connection, serializer=SERIALIZER)
    job = queue.create_job(
        data.func,
        kwargs=data.kwargs,
        timeout=data.timeout,
        result_ttl=data.result_ttl,
        failure_ttl=data.failure_ttl,
        description=data.description,
        meta=data.meta,
    )
    job.worker_name = worker_name
    job.started_at = datetime.fromtimestamp(time.time() - started_ago, tz=UTC)
    if final_path is not None:
        job.meta["path"] = str(final_path)
    with connection.pipeline() as pipe:
        job.save(pipeline=pipe)
        job.set_status(JobStatus.STARTED, pipeline=pipe)
        Execution.create(job, heartbeat_ttl, pipeline=pipe, worker_name=worker_name)
        pipe.execute()
    return job.id


# --- deletion ------------------------------------------------------------------------------------
def traces(connection: redis.Redis, item_id: str) -> list[str]:
    """Every place in Redis that still names `item_id`, but the deliberate ones.

    Key names (what `redis-cli --scan --pattern '*<id>*'` finds) and members of RQ's lists,
    sets and sorted sets (queues, registries, worker indexes). The event history stream
    (`dq:events`) and the tombstone set (`dq:deleted`) keep the id on purpose.
    """
    found = [as_text(key) for key in connection.scan_iter(match=f"*{item_id}*")]
    for raw_key in connection.scan_iter(match="rq:*"):
        key = as_text(raw_key)
        kind = as_text(connection.type(raw_key))
        members: list[bytes | str]
        if kind == "list":
            members = list(connection.lrange(raw_key, 0, -1))
        elif kind == "set":
            members = list(connection.smembers(raw_key))
        elif kind == "zset":
            members = list(connection.zrange(raw_key, 0, -1))
        else:
            continue
        if any(item_id in as_text(member) for member in members):
            found.append(f"{key} (member)")
    return found


def assert_never_back(connection: redis.Redis, env: Mapping[str, str], *item_ids: str) -> None:
    """For NEVER_BACK_SECONDS nothing in Redis names the deleted items; then `dq jobs` lists none."""
    deadline = time.monotonic() + NEVER_BACK_SECONDS
    while time.monotonic() < deadline:
        for item_id in item_ids:
            assert traces(connection, item_id) == [], item_id
        time.sleep(0.2)
    assert set(listed(env)) & set(item_ids) == set()


# --- the dashboard -------------------------------------------------------------------------------
USER, PASSWORD = "listener", "s3cret-ü"
# A download that stays busy for a while without tripping the low-speed abort (1 KiB/s):
# ~20 KB/s for 60 s. Tests that use it raise DQ_JOB_TIMEOUT above that (long_env).
SLOW_PATH = "/slow/1200000/{name}.flac?seconds=60"
LONG_JOB_TIMEOUT = "120"


@dataclass
class Dashboard:
    """A `dq dashboard` process started by a test (the `start_dashboard` fixture)."""

    process: subprocess.Popen[str]
    base_url: str
    log_path: Path

    def url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    def log(self) -> str:
        return log_text(self.log_path)


def dashboard_env(env: Mapping[str, str], *, auth: bool = False, **extra: str) -> dict[str, str]:
    """The test env with a free dashboard port, our credentials when `auth`, and `extra`."""
    environment = dict(env)
    environment["DQ_DASHBOARD_PORT"] = str(free_port())
    if auth:
        environment["DQ_DASHBOARD_USERNAME"] = USER
        environment["DQ_DASHBOARD_PASSWORD"] = PASSWORD
    environment.update(extra)
    return environment


def long_env(env: Mapping[str, str]) -> dict[str, str]:
    """The test env with a job timeout long enough for SLOW_PATH downloads."""
    return {**env, "DQ_JOB_TIMEOUT": LONG_JOB_TIMEOUT}


# --- deployment files (config/) ------------------------------------------------------------------
CONFIG_DIR = ROOT / "config"
SUPERVISORD_CONF = CONFIG_DIR / "supervisord.conf"

# The three path prefixes supervisord.conf is written with (see its header).
STATE_PREFIX = "%(here)s/../var"
DOWNLOADS_PREFIX = "%(here)s/../downloads"
CHECKOUT_PREFIX = "%(here)s/.."

PROGRAMS = {
    "redis": "program:download-queue-redis",
    "supervisor": "program:download-queue-supervisor",
    "dashboard": "program:download-queue-dashboard",
}

ENV_ENTRY = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)="([^"]*)"\s*(?:,|$)')


def supervisord_parser(text: str | None = None) -> configparser.RawConfigParser:
    """Parse like supervisord does: `;`/`#` inline comments, no interpolation, lenient."""
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text if text is not None else SUPERVISORD_CONF.read_text())
    return parser


def parse_environment(value: str) -> dict[str, str]:
    """supervisord's `KEY="value",...` list; every value in our file is quoted, so this is exact."""
    entries: dict[str, str] = {}
    position = 0
    text = value.strip()
    while position < len(text):
        match = ENV_ENTRY.match(text, position)
        assert match, f"unparsable environment entry at {text[position:]!r}"
        entries[match.group(1)] = match.group(2)
        position = match.end()
    return entries


def format_environment(entries: dict[str, str]) -> str:
    """The inverse of parse_environment; refuses values supervisord would misread."""
    for value in entries.values():
        assert '"' not in value and "%" not in value, value
    return ",".join(f'{key}="{value}"' for key, value in entries.items())
