"""Benchmark: the real product against anchors measured in the same invocation.

    bin/benchmark [--quick] [--runs N]

What it measures (full sizes; --quick: 100 jobs, 4 x 16 MiB, 1,000 enqueues, 64 MiB):

- drain: 1,000 tiny (1 KiB) downloads with distinct names, enqueued with `bin/enqueue
  --from-file` before `dq supervise` (4 `DownloadWorker`s) starts; seconds from its launch
  until RQ's FinishedJobRegistry holds them all. Anchors: `rq worker-pool -n 4 --burst` and
  four `rq worker --burst -w rq.worker.SimpleWorker` (no fork) running a bare `requests` job.
- http / https: 4 x 256 MiB from nginx (sendfile; HTTPS with a self-signed certificate the
  product trusts through REQUESTS_CA_BUNDLE), aggregate MiB/s into a running supervisor until
  all four jobs are finished and their files in place: from sending `POST /api/download-queue`
  to a running `dq dashboard` (the goals: like the anchors, nothing starts up first), and from
  launching `bin/enqueue` (the whole command, Python's start-up included). Anchors: one
  `aria2c -j4`, four parallel `curl`, and (HTTP) four raw-socket processes, with the fsync
  alone and with the writeback started as bytes come.
- cpu: CPU seconds per GiB of that HTTP run, the product's four workers
  against aria2c, curl and the raw-socket floor (wait4).
- enqueue: `bin/enqueue --from-file` of 10,000 URLs, the whole command (Python start-up
  included), against RQ's in-process `Queue.enqueue_many` of as many jobs in one pipeline.
- rss: VmRSS (and PSS) of the supervisor and its 4 idle workers together.
- growth: VmRSS of the workers every 50 ms while one of them downloads 1 GiB, over its idle figure.
- kill: a rate-limited download's `rq worker` SIGKILLed once the job started; seconds until
  the job is `failed` (RQ alone: its heartbeat TTL, printed from RQ's constants).

It starts its own Redis (unix socket) and nginx on free loopback ports, writes its files to a
temporary dir (read once, so they are in the page cache), installs nginx, aria2 and curl with
apt-get when missing and run as root, and flushes Redis between phases. The last line is one
summary of ratios with ok/MISS per goal. Exit 0 whether goals are met or not (this is a
measurement); 1 when a run itself fails (a job did not finish, a process failed).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
import rq

from supervisor.redis_server import RedisServer
from tests import bench_anchors as anchors
from tests.bench_proc import BenchError, median
from tests.bench_product import WORKERS, Product
from tests.bench_report import FULL, QUICK, Figures, Report, Sizes
from tests.bench_servers import Files, Nginx, ensure_tools, version_of

# The transfers take a second each, and on a virtual machine any one of them (product or
# anchor alike) now and then runs 30-80 % slow, its page-cache copies stalled: a median of 7
# keeps such a run from deciding a ratio, for a few seconds more.
TRANSFER_RUNS = 7


def transfer_runs(runs: int) -> int:
    return max(runs, TRANSFER_RUNS)


def say(*lines: str) -> None:
    print("\n".join(lines), flush=True)


def fresh(directory: Path, *others: Path) -> Path:
    """An empty `directory` (and `others`: every earlier run's files go just before each run, see
    Product.scratch), with the previous run's pages written out first."""
    for emptied in (directory, *others):
        shutil.rmtree(emptied, ignore_errors=True)
        emptied.mkdir(parents=True)
    os.sync()
    return directory


def repeat(runs: int, measure: Callable[[], float]) -> float:
    return median([measure() for _ in range(runs)])


class Bench:
    def __init__(self, sizes: Sizes, runs: int, work: Path, tools: dict[str, str]) -> None:
        self.sizes, self.runs, self.work, self.tools = sizes, runs, work, tools
        self.logs = work / "logs"
        self.logs.mkdir(parents=True)
        self.files = Files(work / "www", sizes.big_bytes, sizes.big_count, sizes.grow_bytes, sizes.tiny_jobs)
        self.nginx = Nginx(tools["nginx"], tools["openssl"], work / "nginx", self.files.root)
        self.redis = RedisServer(
            work / "redis", socket_path=work / "redis" / "r.sock", persistent=False, owner="benchmark"
        )
        self.out = work / "anchor-out"  # the anchors' files: same file system as the product's
        self.figures = Figures()

    def setup(self) -> None:
        started = time.monotonic()
        self.files.create()
        self.nginx.start()
        self.redis.start()
        self.connection = redis.Redis.from_url(self.redis.url)
        # The anchors' files go when the product's do, just before each of its runs: memory freed
        # seconds earlier can be handed back to the hypervisor, and the first writer after that
        # pays to fault it in again (a first product run took 2.8 s instead of 1.2 s that way).
        self.product = Product(self.redis.url, self.work / "product", self.nginx.cert, scratch=self.out)
        s = self.sizes
        say(
            f"setup: Redis on {self.redis.url}, nginx http :{self.nginx.http_port} https :{self.nginx.https_port}, "
            f"files {s.big_count} x {s.big_bytes // (1 << 20)} MiB + {s.grow_bytes // (1 << 20)} MiB + "
            f"{s.tiny_jobs:,} x 1 KiB in {self.work} ({time.monotonic() - started:.1f} s)"
        )

    def keep_logs(self) -> Path:
        """The anchors', nginx's and the product's logs, copied out of the temporary dir."""
        kept = Path(tempfile.gettempdir()) / f"dq-bench-logs-{time.strftime('%Y%m%d-%H%M%S')}"
        for source in (self.logs, self.work / "product" / "logs", self.nginx.dir):
            if source.is_dir():
                shutil.copytree(source, kept / source.relative_to(self.work), ignore=shutil.ignore_patterns("*.pem"))
        return kept

    def stop(self) -> None:
        self.nginx.stop()
        if self.redis.process is not None:
            self.redis.stop()

    def urls(self, paths: list[str], *, tls: bool = False) -> list[str]:
        return [self.nginx.url(path, tls=tls) for path in paths]

    # --- phases ---------------------------------------------------------------------------------
    def drain(self) -> None:
        f, n = self.figures, self.sizes.tiny_jobs
        urls = self.urls(self.files.tiny)
        timeout = max(120.0, n / 2)

        def plain(simple: bool) -> float:
            log = self.logs / ("rq-simple.log" if simple else "rq-pool.log")
            return anchors.rq_drain(self.connection, self.redis.url, urls, fresh(self.out), simple=simple, log=log)

        f.drain_rq = repeat(self.runs, lambda: plain(False))
        f.drain_simple = repeat(self.runs, lambda: plain(True))
        f.drain_product = repeat(self.runs, lambda: self.product.drain(urls, timeout))

    def enqueue(self) -> None:
        f, n = self.figures, self.sizes.enqueue_jobs
        urls = [self.nginx.url(f"/tiny/e{index:06d}.flac") for index in range(n)]
        f.enqueue_rq = repeat(self.runs, lambda: anchors.rq_enqueue(self.connection, urls, self.out))

        def ours() -> float:
            self.connection.flushall()
            seconds, _ = self.product.enqueue(urls, "enqueue")
            return seconds

        f.enqueue_product = repeat(self.runs, ours)
        self.connection.flushall()

    def anchor_transfer(self, who: str, tls: bool) -> anchors.Transfer:
        out = fresh(self.out, self.product.download_dir)
        urls = self.urls(self.files.big, tls=tls)
        if who == "aria2c":
            result = anchors.aria2c(self.tools["aria2c"], urls, out, self.logs / "aria2c.log")
        elif who == "curl":
            result = anchors.curls(self.tools["curl"], urls, out, self.logs / "curl.log")
        else:
            result = anchors.floor(self.nginx.http_port, self.files.big, out, writeback=who == "floor-writeback")
        anchors.check_files(out, [path.rsplit("/", 1)[1] for path in self.files.big], self.sizes.big_bytes, who)
        return result

    def transfers(self) -> None:
        """One supervisor: idle memory; the HTTP and HTTPS runs, each run of the product right after
        one of every anchor (the same minute, the same state of the page cache); then the growth."""
        f, s, product = self.figures, self.sizes, self.product
        self.connection.flushall()
        self.check_trust()
        timeout = max(120.0, s.big_total / (5 << 20))
        with product.supervised("transfers") as running, product.dashboard() as api:
            f.rss, f.pss = product.idle_memory(running)
            for tls, figures in ((False, f.http), (True, f.https)):
                urls = self.urls(self.files.big, tls=tls)
                contenders = ("aria2c", "curl") if tls else ("aria2c", "curl", "floor", "floor-writeback")
                results: dict[str, list[anchors.Transfer]] = {who: [] for who in contenders}
                ours: list[anchors.Transfer] = []  # through the API
                commands: list[anchors.Transfer] = []  # through bin/enqueue
                for _ in range(transfer_runs(self.runs)):
                    for who in contenders:
                        results[who].append(self.anchor_transfer(who, tls))
                    ours.append(product.transfer(running, urls, timeout, api))
                    commands.append(product.transfer(running, urls, timeout))
                for who, transfers in results.items():
                    figures[who] = median([result.seconds for result in transfers])
                figures["product"] = median([result.seconds for result in ours])
                figures["product-whole"] = median([result.seconds for result in commands])
                if not tls:
                    f.cpu = {who: median([result.cpu for result in transfers]) for who, transfers in results.items()}
                    f.cpu = {"product": median([result.cpu for result in ours]), **f.cpu}
                    f.http_enqueue = median([result.command for result in commands])
            grow_url = self.nginx.url(self.files.grow)
            growths = [product.growth(running, grow_url, timeout) for _ in range(self.runs)]
            f.growth = int(median([g[0] for g in growths]))
            f.growth_samples = min(g[1] for g in growths)

    def check_trust(self) -> None:
        """The product's `requests`, in the product's environment, verifies against our certificate."""
        url = self.nginx.url(self.files.tiny[0], tls=True)
        probe = (
            "import requests, sys; s = requests.Session(); "
            f"v = s.merge_environment_settings({url!r}, {{}}, None, None, None)['verify']; "
            f"r = s.get({url!r}, timeout=10); print(v, r.status_code)"
        )
        run = subprocess.run([sys.executable, "-c", probe], env=self.product.env, capture_output=True, text=True)
        if run.returncode != 0 or run.stdout.split() != [str(self.nginx.cert), "200"]:
            raise BenchError(f"the product's requests does not trust the benchmark's certificate: {run.stderr[-300:]}")

    def kill(self) -> None:
        f = self.figures
        results = [self.product.kill(self.nginx.url(self.files.slow)) for _ in range(self.runs)]
        f.kill = median([result[0] for result in results])
        f.kill_error = results[-1][1]
        f.kill_respawned = all(result[2] for result in results)


def versions(tools: dict[str, str]) -> str:
    return ", ".join(
        [
            f"{os.cpu_count()} CPUs",
            f"Python {platform.python_version()}",
            f"rq {rq.__version__}",
            version_of([tools["nginx"], "-v"]).replace("nginx version: ", ""),
            version_of([tools["aria2c"], "--version"]).replace(" version", ""),
            " ".join(version_of([tools["curl"], "--version"]).split()[:2]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, well under a minute (bin/test runs it)")
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="runs per measurement (transfers: at least 7); figures are medians (default 1)",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    sizes = QUICK if args.quick else FULL
    started = time.monotonic()
    try:
        tools = ensure_tools()
        runs = f"{args.runs} run(s) each, transfers {transfer_runs(args.runs)}"
        say(f"download-queue benchmark ({'quick' if args.quick else 'full'}, {runs}, medians): "
            f"{versions(tools)}")  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="dq-bench-") as temp:
            bench = Bench(sizes, args.runs, Path(temp), tools)
            try:
                bench.setup()
                report = Report(sizes)
                bench.drain()
                say(*report.drain(bench.figures))
                bench.transfers()
                say(*report.transfers(bench.figures), *report.cpu(bench.figures))
                bench.enqueue()
                say(*report.enqueue(bench.figures), *report.memory(bench.figures))
                bench.kill()
                say(*report.kill(bench.figures))
                problems = bench.product.problems()
            except BenchError as error:
                kept = bench.keep_logs()
                raise BenchError(f"{error} (logs kept in {kept})") from None
            finally:
                bench.stop()
    except BenchError as error:
        print(f"benchmark failed: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    say(f"product logs: {len(problems)} ERROR/Traceback line(s)" + "".join(f"\n  {line}" for line in problems[:10]))
    say(f"took {time.monotonic() - started:.1f} s ({WORKERS} workers everywhere)", report.summary(bench.figures))


if __name__ == "__main__":
    main()
