"""The anchors: what the product is measured against, in the same run, on the same servers.

- plain RQ draining tiny downloads: `rq worker-pool -n 4 --burst` (a forked work horse per job)
  and four `rq worker --burst -w rq.worker.SimpleWorker` (no fork: the floor for RQ);
- big transfers: one `aria2c -j4` for all URLs, four parallel `curl -s -o`, and four forked
  processes running `tests.bench_jobs.floor_get` (raw socket, one reused buffer, fsync), once
  with the whole file left to its fsync and once with its writeback started as it arrives;
- enqueueing: RQ's own `Queue.enqueue_many` of `Queue.prepare_data` jobs in one pipeline.

Every timing runs from launch to the last process's exit; CPU comes from wait4 of the
processes themselves.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from rq.queue import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from tests.bench_jobs import floor_get
from tests.bench_proc import BenchError, run_children, wait4

ANCHOR_QUEUE = "bench"
FETCH = "tests.bench_jobs.fetch"
ROOT = Path(__file__).resolve().parent.parent
RQ = str(Path(sys.executable).with_name("rq"))


@dataclass
class Transfer:
    seconds: float
    cpu: float  # CPU seconds of the processes that moved the bytes
    command: float = 0.0  # the product's: seconds bin/enqueue (or the API request) itself took, of `seconds`


def enqueue_fetches(connection: redis.Redis, urls: list[str], out_dir: Path) -> float:
    """The bare jobs, in one pipeline: seconds it took (RQ's own enqueue_many)."""
    queue = Queue(ANCHOR_QUEUE, connection=connection)
    started = time.monotonic()
    with connection.pipeline() as pipeline:
        queue.enqueue_many(
            [
                Queue.prepare_data(FETCH, args=(url, str(out_dir / f"{index:05d}.flac")), timeout=60)
                for index, url in enumerate(urls)
            ],
            pipeline=pipeline,
        )
        pipeline.execute()
    return time.monotonic() - started


def rq_drain(
    connection: redis.Redis, redis_url: str, urls: list[str], out_dir: Path, *, simple: bool, log: Path
) -> float:
    """Seconds from launching 4 plain RQ workers (burst) until they exit, every job finished."""
    connection.flushall()
    out_dir.mkdir(parents=True, exist_ok=True)
    enqueue_fetches(connection, urls, out_dir)
    common = ["--burst", "--url", redis_url, "--path", str(ROOT), ANCHOR_QUEUE]
    if simple:
        commands = [
            [RQ, "worker", "-w", "rq.worker.SimpleWorker", "--name", f"bench-simple-{i}-{time.time_ns()}", *common]
            for i in range(4)
        ]
    else:
        commands = [[RQ, "worker-pool", "-n", "4", *common]]
    elapsed, _ = run_children(commands, cwd=ROOT, log=log)
    queue = Queue(ANCHOR_QUEUE, connection=connection)
    finished = FinishedJobRegistry(queue=queue).get_job_count(cleanup=False)
    failed = FailedJobRegistry(queue=queue).get_job_count(cleanup=False)
    if finished != len(urls):
        kind = "SimpleWorker" if simple else "worker-pool"
        raise BenchError(f"rq {kind}: {finished} of {len(urls)} jobs finished, {failed} failed (see {log})")
    return elapsed


def aria2c(binary: str, urls: list[str], out_dir: Path, log: Path) -> Transfer:
    """One aria2c for all URLs: -Z makes each URL its own download (else they are mirrors of one)."""
    command = [
        binary, "-Z", "-j4", "--allow-overwrite=true", "--auto-file-renaming=false", "--check-certificate=false",
        "-q", "-d", str(out_dir), *urls,
    ]  # fmt: skip
    return Transfer(*run_children([command], log=log))


def curls(binary: str, urls: list[str], out_dir: Path, log: Path) -> Transfer:
    commands = [[binary, "-s", "-k", "-o", str(out_dir / url.rsplit("/", 1)[1]), url] for url in urls]
    return Transfer(*run_children(commands, log=log))


def floor(port: int, paths: list[str], out_dir: Path, *, writeback: bool) -> Transfer:
    """Four forked processes, each `floor_get` of one file; timed from the first fork."""
    started = time.monotonic()
    pids = []
    for path in paths:
        pid = os.fork()
        if pid == 0:  # the child: no cleanup handlers, no buffered output of the parent's
            code = 1
            try:
                floor_get("127.0.0.1", port, path, str(out_dir / path.rsplit("/", 1)[1]), writeback=writeback)
                code = 0
            except OSError as error:
                print(f"floor: {path}: {error}", file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        pids.append(pid)
    cpu = 0.0
    codes = []
    for pid in pids:
        code, seconds = wait4(pid)
        codes.append(code)
        cpu += seconds
    elapsed = time.monotonic() - started
    if any(codes):
        raise BenchError(f"the raw-socket floor failed: exit codes {codes}")
    return Transfer(elapsed, cpu)


def rq_enqueue(connection: redis.Redis, urls: list[str], out_dir: Path) -> float:
    """Seconds for RQ's in-process enqueue_many of one bare job per URL (one pipeline)."""
    connection.flushall()
    seconds = enqueue_fetches(connection, urls, out_dir)
    queued = Queue(ANCHOR_QUEUE, connection=connection).count
    if queued != len(urls):
        raise BenchError(f"rq enqueue_many: {queued} of {len(urls)} jobs queued")
    return seconds


def check_files(out_dir: Path, names: list[str], size: int, who: str) -> None:
    """Every file there, whole: a transfer that wrote less is a failed run, not a fast one."""
    for name in names:
        path = out_dir / name
        actual = path.stat().st_size if path.exists() else -1
        if actual != size:
            raise BenchError(f"{who}: {path} has {actual} bytes, expected {size}")
