"""The HTTP API's latency under load, against a real `dq up` (embedded Redis, 4 workers, waitress).

    bin/api-latency [--concurrent 200] [--posts 1000] [--post-concurrency 50]

1. `--concurrent` clients send `GET /api/download-queue/stats` at the same moment (each on its
   own connection), three rounds;
2. `--posts` `POST /api/download-queue` of one distinct URL each, `--post-concurrency` at a time,
   while the workers download what was posted (1 KiB files from a local server);
3. the floor: the same concurrency on `GET /static/favicon.ico` (the same server and auth,
   no Redis), to tell the server's cost from ours.

Prints p50/p90/p99/max per phase and one summary line. DQ_API_RATE is raised for the run: the
load comes from one address, which the rate limit would (rightly) refuse.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.faultserver import FaultServer

TOKEN = "latency-token"
ROOT = Path(__file__).resolve().parent.parent
DQ = str(Path(sys.executable).with_name("dq"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def summary(name: str, seconds: list[float], wall: float, failures: int) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    figures = {
        "p50": percentile(ms, 0.50),
        "p90": percentile(ms, 0.90),
        "p99": percentile(ms, 0.99),
        "max": max(ms),
        "rate": len(ms) / wall if wall > 0 else 0.0,
    }
    print(
        f"{name:<34} n={len(ms):>5}  p50 {figures['p50']:7.1f} ms  p90 {figures['p90']:7.1f} ms  "
        f"p99 {figures['p99']:7.1f} ms  max {figures['max']:7.1f} ms  {figures['rate']:7.0f} req/s"
        + (f"  FAILED {failures}" if failures else ""),
        flush=True,
    )
    return figures


def burst(count: int, request: Callable[[int], requests.Response]) -> tuple[list[float], float, int]:
    """`count` requests started together (a barrier), one thread and connection each."""
    gate = threading.Barrier(count)

    def one(index: int) -> tuple[float, bool]:
        gate.wait()
        started = time.perf_counter()
        answer = request(index)
        return time.perf_counter() - started, answer.ok

    began = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(one, range(count)))
    return [r[0] for r in results], time.perf_counter() - began, sum(1 for r in results if not r[1])


def paced(
    count: int, concurrency: int, request: Callable[[requests.Session, int], requests.Response]
) -> tuple[list[float], float, int]:
    """`count` requests, `concurrency` in flight at a time (each thread keeps its connection)."""
    local = threading.local()

    def one(index: int) -> tuple[float, bool]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        started = time.perf_counter()
        answer = request(local.session, index)
        return time.perf_counter() - started, answer.status_code == 201

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(count)))
    return [r[0] for r in results], time.perf_counter() - began, sum(1 for r in results if not r[1])


def start_up(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DQ_") and key != "REDIS_URL"}
    env.update(
        {
            "DQ_DOWNLOAD_DIR": str(home / "downloads"),
            "DQ_STATE_DIR": str(home / "state"),
            "DQ_DASHBOARD_PORT": str(port),
            "DQ_API_TOKEN": TOKEN,
            "DQ_API_RATE": "1000000000",
            "DQ_QUEUE_MAX": "1000000",
            "DQ_QUEUE_WARN": "1000000",
            "DQ_ALLOW_PRIVATE_NETWORKS": "1",
        }
    )
    log = (home / "up.log").open("wb")
    return subprocess.Popen([DQ, "up"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--posts", type=int, default=1000)
    parser.add_argument("--post-concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dq-latency-") as tmp:
        home = Path(tmp)
        port = free_port()
        base = f"http://127.0.0.1:{port}/"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        files = FaultServer()
        files.start()
        up = start_up(home, port)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    answer = requests.get(base + "api/download-queue/stats", headers=headers, timeout=2)
                    if answer.ok and answer.json()["worker"]["workers"] >= 4:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline or up.poll() is not None:
                    print((home / "up.log").read_text(errors="replace"), file=sys.stderr)
                    return 1
                time.sleep(0.3)

            def stats(_index: int) -> requests.Response:
                return requests.get(base + "api/download-queue/stats", headers=headers, timeout=60)

            def floor(_index: int) -> requests.Response:
                return requests.get(base + "static/favicon.ico", headers=headers, timeout=60)

            def post(session: requests.Session, index: int) -> requests.Response:
                url = files.url(f"/bytes/1024/latency-{index}.flac")
                return session.post(base + "api/download-queue", json={"url": url}, headers=headers, timeout=60)

            print(f"dq up on {base}: {args.concurrent} concurrent GETs x {args.rounds}, {args.posts} POSTs")
            floor_times: list[float] = []
            stats_times: list[float] = []
            floor_wall = stats_wall = 0.0
            failures = 0
            for _round in range(args.rounds):
                times, wall, failed = burst(args.concurrent, floor)
                floor_times += times
                floor_wall += wall
                failures += failed
                times, wall, failed = burst(args.concurrent, stats)
                stats_times += times
                stats_wall += wall
                failures += failed
            floor_figures = summary("floor: GET /static/favicon.ico", floor_times, floor_wall, 0)
            stats_figures = summary("GET /api/download-queue/stats", stats_times, stats_wall, failures)
            post_times, post_wall, post_failures = paced(args.posts, args.post_concurrency, post)
            post_figures = summary("POST /api/download-queue", post_times, post_wall, post_failures)
            print(
                f"summary: stats p50 {stats_figures['p50']:.1f} ms p99 {stats_figures['p99']:.1f} ms "
                f"({stats_figures['p99'] / floor_figures['p99']:.2f}x the floor's p99); "
                f"POST p50 {post_figures['p50']:.1f} ms p99 {post_figures['p99']:.1f} ms, "
                f"{post_figures['rate']:.0f}/s; failures {failures + post_failures}",
                flush=True,
            )
            return 0 if failures + post_failures == 0 else 1
        finally:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
            files.stop()


if __name__ == "__main__":
    sys.exit(main())
