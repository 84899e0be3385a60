"""Benchmark: figures and ratios against a baseline measured in the same run.

    bin/benchmark [--jobs N] [--megabytes M]

1. Queue drain: N tiny track downloads on 4 burst workers, our `DownloadWorker` (job code
   imported before fork) against RQ's plain `Worker` (each work horse imports it again).
2. Engine: one M-megabyte download through `jobs.download` against a bare `requests`
   `iter_content` loop writing to a file; throughput and peak Python memory.

Everything runs on 127.0.0.1 against a temporary Redis and the fault-injecting server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import redis
import requests
from rq.queue import Queue

from jobs.connection import SERIALIZER, SERIALIZER_PATH
from jobs.download import Target, download
from supervisor.redis_server import RedisServer
from tests.faultserver import FaultServer

WORKERS = 4


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def drain(url: str, server: FaultServer, jobs: int, worker_class: str, workdir: Path) -> tuple[float, int]:
    """Seconds for `WORKERS` burst workers to drain `jobs` tiny downloads; median worker RSS (KiB)."""
    connection = redis.Redis.from_url(url)
    connection.flushall()
    queue = Queue("bench", connection=connection, serializer=SERIALIZER)
    with connection.pipeline() as pipeline:
        queue.enqueue_many(
            [
                Queue.prepare_data(
                    "jobs.track.download_track",
                    kwargs={"url": server.url(f"/bytes/1000/b{i}.flac"), "dest": "bench"},
                    result_ttl=600,
                    timeout=60,
                )
                for i in range(jobs)
            ],
            pipeline=pipeline,
        )
        pipeline.execute()
    env = dict(os.environ, REDIS_URL=url, DQ_DOWNLOAD_DIR=str(workdir), DQ_ALLOW_PRIVATE_NETWORKS="1")
    rq = str(Path(sys.executable).with_name("rq"))
    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [
                rq,
                "worker",
                "bench",
                "--burst",
                "--url",
                url,
                "--worker-class",
                worker_class,
                "--serializer",
                SERIALIZER_PATH,
                "--name",
                f"bench-{worker_class}-{i}-{time.time_ns()}",
                "--logging_level",
                "WARNING",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(WORKERS)
    ]
    rss: list[int] = []
    while any(p.poll() is None for p in processes):
        rss += [rss_kib(p.pid) for p in processes if p.poll() is None]
        time.sleep(0.25)
    elapsed = time.monotonic() - started
    finished = queue.finished_job_registry.get_job_count(cleanup=False)
    if finished != jobs:
        raise SystemExit(f"only {finished} of {jobs} jobs finished with {worker_class}")
    return elapsed, int(statistics.median([r for r in rss if r] or [0]))


def engine(server: FaultServer, megabytes: int, workdir: Path) -> dict[str, tuple[float, int]]:
    url = server.url(f"/bytes/{megabytes * 1024 * 1024}/big.flac")
    figures: dict[str, tuple[float, int]] = {}

    def baseline() -> None:
        with requests.get(url, stream=True, timeout=30) as response, open(workdir / "plain.flac", "wb") as out:
            for chunk in response.iter_content(64 * 1024):
                out.write(chunk)

    def ours() -> None:
        download(url, Target("engine"), download_dir=workdir, request_timeout=30, allow_private=True)

    for name, run in (("requests iter_content (baseline)", baseline), ("jobs.download", ours)):
        tracemalloc.start()
        started = time.monotonic()
        run()
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        figures[name] = (elapsed, peak)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300, help="tiny downloads per drain run (default 300)")
    parser.add_argument("--megabytes", type=int, default=200, help="size of the engine download (default 200)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp, FaultServer() as server:
        workdir = Path(temp)
        redis_server = RedisServer(workdir / "redis", socket_path=workdir / "redis" / "r.sock", persistent=False)
        redis_server.start()
        try:
            print(f"queue drain: {args.jobs} tiny downloads, {WORKERS} workers")
            base_s, base_rss = drain(redis_server.url, server, args.jobs, "rq.worker.Worker", workdir / "a")
            ours_s, ours_rss = drain(redis_server.url, server, args.jobs, "jobs.worker.DownloadWorker", workdir / "b")
            print(
                f"  rq Worker (baseline)     {base_s:7.2f} s  {args.jobs / base_s:7.1f} jobs/s  "
                f"worker RSS {base_rss / 1024:6.1f} MiB"
            )
            print(
                f"  jobs.worker.DownloadWorker {ours_s:5.2f} s  {args.jobs / ours_s:7.1f} jobs/s  "
                f"worker RSS {ours_rss / 1024:6.1f} MiB"
            )
            print(f"  speed-up: {base_s / ours_s:.2f}x")
        finally:
            redis_server.stop()

        print(f"engine: one {args.megabytes} MiB download over loopback")
        figures = engine(server, args.megabytes, workdir)
        for name, (seconds, peak) in figures.items():
            print(
                f"  {name:34s} {seconds:6.2f} s  {args.megabytes / seconds:8.1f} MiB/s  "
                f"peak Python memory {peak / 1024 / 1024:6.2f} MiB"
            )
        (base_s, base_peak), (ours_s, ours_peak) = figures.values()
        print(f"  throughput ratio (ours/baseline): {base_s / ours_s:.2f}x; memory ratio: {ours_peak / base_peak:.2f}x")


if __name__ == "__main__":
    main()
