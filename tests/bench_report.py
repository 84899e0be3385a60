"""The benchmark's figures, its goals, and the lines it prints (rows and the one summary line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL, DEFAULT_MAINTENANCE_TASK_INTERVAL, DEFAULT_WORKER_TTL
from rq.worker import Worker

from tests.bench_proc import MB, GiB, MiB


@dataclass
class Sizes:
    tiny_jobs: int
    big_bytes: int
    big_count: int
    enqueue_jobs: int
    grow_bytes: int

    @property
    def big_total(self) -> int:
        return self.big_bytes * self.big_count


FULL = Sizes(tiny_jobs=1000, big_bytes=256 * MiB, big_count=4, enqueue_jobs=10_000, grow_bytes=1 * GiB)
QUICK = Sizes(tiny_jobs=100, big_bytes=16 * MiB, big_count=4, enqueue_jobs=1000, grow_bytes=64 * MiB)


@dataclass
class Figures:
    """Medians over the runs; seconds unless named otherwise."""

    drain_product: float = 0.0
    drain_rq: float = 0.0
    drain_simple: float = 0.0
    http: dict[str, float] = field(default_factory=dict)  # who → seconds
    http_enqueue: float = 0.0  # of the product's: seconds the bin/enqueue command ran
    https: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # who → CPU seconds of one HTTP run
    enqueue_product: float = 0.0
    enqueue_rq: float = 0.0
    rss: int = 0
    pss: int = 0
    growth: int = 0  # the largest VmRSS rise of one worker over its idle figure
    growth_samples: int = 0
    kill: float = 0.0
    kill_error: str = ""
    kill_respawned: bool = False


def rq_dead_worker_seconds() -> int:
    """How long RQ alone keeps a SIGKILLed worker's job `started`: its heartbeat TTL, from RQ's
    own code and constants (job monitoring interval, capped by the job timeout, plus 60 s)."""
    worker = SimpleNamespace(job_monitoring_interval=DEFAULT_JOB_MONITORING_INTERVAL)
    return int(Worker.get_heartbeat_ttl(worker, SimpleNamespace(timeout=300)))  # type: ignore[arg-type]


def mark(met: bool) -> str:
    return "ok" if met else "MISS"


class Report:
    def __init__(self, sizes: Sizes) -> None:
        self.sizes = sizes
        self.goals: list[bool] = []

    def goal(self, met: bool) -> str:
        self.goals.append(met)
        return mark(met)

    @staticmethod
    def row(who: str, what: str, seconds: float, rate: float, unit: str, extra: str = "") -> str:
        return f"  {who:8s} {what:46s} {seconds:8.3f} s {rate:10.1f} {unit}{extra}"

    def drain(self, f: Figures) -> list[str]:
        n = self.sizes.tiny_jobs
        ours, rq, simple = n / f.drain_product, n / f.drain_rq, n / f.drain_simple
        self.drain_rq_ratio, self.drain_floor_ratio = ours / rq, ours / simple
        self.drain_rq_ok = self.goal(self.drain_rq_ratio >= 4 and ours >= 100)
        self.drain_floor_ok = self.goal(self.drain_floor_ratio >= 0.5)
        return [
            f"drain: {n:,} tiny (1 KiB) downloads, distinct names, 4 workers, launch to all finished",
            self.row("product", "dq supervise (4 x rq worker DownloadWorker)", f.drain_product, ours, "jobs/s"),
            self.row("anchor", "rq worker-pool -n 4 --burst (bare job)", f.drain_rq, rq, "jobs/s"),
            self.row("floor", "4 x rq worker --burst -w SimpleWorker", f.drain_simple, simple, "jobs/s"),
            f"  = {self.drain_rq_ratio:.2f}x rq (goal >= 4x and >= 100 jobs/s: {self.drain_rq_ok}), "
            f"{self.drain_floor_ratio:.2f}x SimpleWorker floor (goal >= 0.5x: {self.drain_floor_ok})",
        ]

    def transfers(self, f: Figures) -> list[str]:
        """The goals are judged on the jobs sent through the API of a running dashboard: like the
        anchors, nothing starts up first. The whole command adds `bin/enqueue`'s own start-up
        (Python and its imports; its per-job cost is the `enqueue` row)."""
        s = self.sizes
        mib = s.big_total / MiB
        what = f"{s.big_count} x {s.big_bytes // MiB} MiB"
        h, t = f.http, f.https
        self.http_ratio = h["aria2c"] / h["product"]
        self.curl_ratio = h["curl"] / h["product"]
        self.https_ratio = t["aria2c"] / t["product"]
        self.http_ok = self.goal(self.http_ratio >= 0.9)
        # Ahead of curl, which never fsyncs; where even the least durable download (the writeback
        # floor) is not ahead of curl, the rule: within 10 % of that floor.
        self.floor_ratio = h["floor-writeback"] / h["product"]
        self.floor_curl_ratio = h["curl"] / h["floor-writeback"]
        self.curl_ok = self.goal(self.curl_ratio > 1 or (self.floor_curl_ratio <= 1 and self.floor_ratio >= 0.9))
        self.https_ok = self.goal(self.https_ratio >= 0.9)
        self.http_whole_curl_ratio = h["curl"] / h["product-whole"]

        def products(figures: dict[str, float]) -> list[str]:
            labels = {
                "product": "POST /api/download-queue -> files in place",
                "product-whole": "bin/enqueue launched -> files in place",
            }
            return [
                self.row("product", label, figures[key], mib / figures[key], "MiB/s") for key, label in labels.items()
            ]

        return [
            f"http: {what} over loopback HTTP (nginx sendfile) into dq supervise (4 workers), aggregate",
            *products(h),
            f"           (the bin/enqueue command ran {f.http_enqueue:.2f} s, Python's start-up and imports included)",
            self.row("anchor", "aria2c -Z -j4 (one process, all URLs)", h["aria2c"], mib / h["aria2c"], "MiB/s"),
            self.row("anchor", "4 x curl -s -o (parallel, no fsync)", h["curl"], mib / h["curl"], "MiB/s"),
            self.row("floor", "4 x raw socket recv_into + write + fsync", h["floor"], mib / h["floor"], "MiB/s"),
            self.row(
                "floor",
                "4 x the same + writeback every 8 MiB",
                h["floor-writeback"],
                mib / h["floor-writeback"],
                "MiB/s",
                f"   (product {h['floor-writeback'] / h['product']:.2f}x this floor)",
            ),
            f"  = {self.http_ratio:.2f}x aria2c (goal >= 0.9x: {self.http_ok}), "
            f"{self.curl_ratio:.2f}x 4 curl (goal > 1x, or >= 0.9x the writeback floor where that floor is "
            f"not ahead of curl either: floor {self.floor_curl_ratio:.2f}x curl, product {self.floor_ratio:.2f}x "
            f"floor: {self.curl_ok})",
            f"  whole command: {h['aria2c'] / h['product-whole']:.2f}x aria2c, "
            f"{self.http_whole_curl_ratio:.2f}x 4 curl",
            f"https: {what} over loopback HTTPS (self-signed certificate, trusted via REQUESTS_CA_BUNDLE)",
            *products(t),
            self.row("anchor", "aria2c -Z -j4 --check-certificate=false", t["aria2c"], mib / t["aria2c"], "MiB/s"),
            self.row("anchor", "4 x curl -s -k -o (parallel, no fsync)", t["curl"], mib / t["curl"], "MiB/s"),
            f"  = {self.https_ratio:.2f}x aria2c (goal >= 0.9x: {self.https_ok}), "
            f"{t['curl'] / t['product']:.2f}x 4 curl; whole command {t['aria2c'] / t['product-whole']:.2f}x aria2c",
        ]

    def cpu(self, f: Figures) -> list[str]:
        gib = self.sizes.big_total / GiB
        per = {who: seconds / gib for who, seconds in f.cpu.items()}
        self.cpu_ratio = per["product"] / per["aria2c"] if per["aria2c"] else float("inf")
        parts = ", ".join(f"{who} {value:.2f}" for who, value in per.items())
        return [
            f"cpu: CPU seconds per GiB over HTTP ({self.sizes.big_count} x {self.sizes.big_bytes // MiB} MiB): {parts}",
            f"  = product {self.cpu_ratio:.2f}x aria2c (product: the 4 workers' utime+stime+cutime+cstime; "
            "others: wait4 of their processes)",
        ]

    def enqueue(self, f: Figures) -> list[str]:
        n = self.sizes.enqueue_jobs
        ours, rq = n / f.enqueue_product, n / f.enqueue_rq
        self.enqueue_ratio = ours / rq
        self.enqueue_ok = self.goal(self.enqueue_ratio >= 0.9)
        return [
            f"enqueue: {n:,} URLs, jobs/s",
            self.row("product", "bin/enqueue --from-file (whole command)", f.enqueue_product, ours, "jobs/s"),
            self.row("anchor", "rq Queue.enqueue_many, one pipeline, in-process", f.enqueue_rq, rq, "jobs/s"),
            f"  = {self.enqueue_ratio:.2f}x rq (goal >= 0.9x: {self.enqueue_ok})",
        ]

    def memory(self, f: Figures) -> list[str]:
        self.rss_ok = self.goal(f.rss / MB <= 250)
        self.growth_ok = self.goal(f.growth / MB <= 20)
        return [
            f"rss: supervisor + 4 idle workers: RSS {f.rss / MB:.1f} MB, PSS {f.pss / MB:.1f} MB "
            f"(goal RSS <= 250 MB: {self.rss_ok})",
            f"growth: one worker downloading {self.sizes.grow_bytes // MiB} MiB: +{f.growth / MB:.1f} MB "
            f"(VmRSS max - idle, {f.growth_samples} samples every 50 ms; goal <= 20 MB: {self.growth_ok})",
        ]

    def kill(self, f: Figures) -> list[str]:
        self.kill_ok = self.goal(f.kill <= 3)
        rq = rq_dead_worker_seconds()
        return [
            f"kill: SIGKILLed worker -> job failed: {f.kill:.2f} s (goal <= 3 s: {self.kill_ok}); "
            f"error {f.kill_error!r}; a new worker took its place: {'yes' if f.kill_respawned else 'NO'}",
            f"  RQ alone (not measured): >= {rq} s, the job's heartbeat TTL (min(job timeout, "
            f"DEFAULT_JOB_MONITORING_INTERVAL {DEFAULT_JOB_MONITORING_INTERVAL} s) + 60 s); worker TTL "
            f"{DEFAULT_WORKER_TTL} s; then found by a registry cleanup (maintenance every "
            f"{DEFAULT_MAINTENANCE_TASK_INTERVAL} s)",
        ]

    def summary(self, f: Figures) -> str:
        met = sum(self.goals)
        return (
            f"summary: drain {self.drain_rq_ratio:.2f}x rq {self.drain_rq_ok}, "
            f"{self.drain_floor_ratio:.2f}x floor {self.drain_floor_ok} | "
            f"http {self.http_ratio:.2f}x aria2c {self.http_ok} (curl {self.curl_ratio:.2f}x, floor "
            f"{self.floor_ratio:.2f}x {self.curl_ok}; whole command {self.http_whole_curl_ratio:.2f}x curl) | "
            f"https {self.https_ratio:.2f}x {self.https_ok} | enqueue {self.enqueue_ratio:.2f}x {self.enqueue_ok} | "
            f"rss {f.rss / MB:.0f} MB {self.rss_ok} | growth {f.growth / MB:.1f} MB {self.growth_ok} | "
            f"cpu {self.cpu_ratio:.2f}x aria2c | kill {f.kill:.2f} s {self.kill_ok} | "
            f"goals met {met}/{len(self.goals)}"
        )
