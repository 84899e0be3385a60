"""The product as users run it: `dq supervise` (the supervisor and its DQ_WORKERS `rq worker`
processes running `jobs.worker.DownloadWorker`), fed by `bin/enqueue --from-file` or by the
HTTP API of a running `dq dashboard` (`POST /api/download-queue`).

Nothing here reaches into the product's internals: jobs go in through the command, progress
is read from RQ's own registries in Redis, processes and their figures from /proc.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.worker_registration import get_keys

from config import Settings
from jobs.connection import SERIALIZER
from tests.bench_anchors import ROOT, Transfer
from tests.bench_proc import (
    BenchError,
    children,
    cmdline,
    cpu_seconds,
    free_port,
    pss_bytes,
    rss_bytes,
    terminate,
    wait_for,
)

DQ = str(ROOT / ".venv" / "bin" / "dq")
ENQUEUE = str(ROOT / "bin" / "enqueue")
WORKERS = 4
SAMPLE_INTERVAL = 0.05  # the memory-growth sampling period


def product_env(redis_url: str, work: Path, cert: Path) -> dict[str, str]:
    """os.environ minus DQ_* and REDIS_URL, then the benchmark's own settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DQ_") and key != "REDIS_URL"}
    env.update(
        REDIS_URL=redis_url,
        DQ_DOWNLOAD_DIR=str(work / "downloads"),
        DQ_STATE_DIR=str(work / "state"),
        DQ_ALLOW_PRIVATE_NETWORKS="1",  # nginx is on loopback
        DQ_WORKERS=str(WORKERS),
        DQ_QUEUE_MAX="100000",
        REQUESTS_CA_BUNDLE=str(cert),  # the product trusts the benchmark's self-signed certificate
        SSL_CERT_FILE=str(cert),
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Supervised:
    """One running `dq supervise`."""

    process: subprocess.Popen[bytes]
    started: float  # monotonic time of the launch
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def workers(self) -> list[int]:
        return children(self.pid)

    def check(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"dq supervise exited with {self.process.returncode}: {tail(self.log)}")

    def stop(self, timeout: float = 60, *, hurry: bool = False) -> None:
        """SIGTERM (the workers finish their downloads); in a hurry (the run failed) a second
        one, which stops the running downloads."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            if hurry:
                time.sleep(0.5)
                self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.process.wait()
            raise BenchError(f"dq supervise did not stop within {timeout:g}s of SIGTERM: {tail(self.log)}") from None
        if code != 0:
            raise BenchError(f"dq supervise exited with {code} after SIGTERM: {tail(self.log)}")


def tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def first_error(registry: FailedJobRegistry) -> str:
    for job_id in registry.get_job_ids(cleanup=False)[:1]:
        job = Job.fetch(job_id, connection=registry.connection, serializer=SERIALIZER)
        result = job.latest_result()
        text = (result.exc_string if result is not None else None) or ""
        return f"{job_id}: {text.splitlines()[0] if text else '(no error text)'}"
    return "(none found)"


class Launched:
    """A running `bin/enqueue`; a thread collects its output and notes when it exited, so
    nobody polls it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.exited = 0.0  # time.monotonic() at its exit
        self._output: tuple[bytes, bytes] = (b"", b"")
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        self._output = self.process.communicate()
        self.exited = time.monotonic()

    def result(self, timeout: float) -> tuple[bytes, bytes]:
        """(stdout, stderr) once it exited; killed after `timeout` seconds."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.process.kill()
            self._thread.join()
            raise BenchError(f"bin/enqueue did not exit within {timeout:g}s")
        return self._output


class RegistryWatch:
    """Wakes on every change of the finished and failed registries (Redis keyspace notifications
    from the benchmark's own Redis). The benchmark waits for the product as it waits for an
    anchor's processes, without polling: on 2 cores, a poll every 10 ms took CPU time the
    workers needed, a few per cent of a transfer."""

    def __init__(self, connection: redis.Redis, queue_name: str) -> None:
        self.finished = FinishedJobRegistry(queue_name, connection=connection)
        self.failed = FailedJobRegistry(queue_name, connection=connection)
        db = connection.connection_pool.connection_kwargs.get("db", 0)
        connection.config_set("notify-keyspace-events", "Kz")  # keyspace events of sorted sets
        self.pubsub = connection.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(*(f"__keyspace@{db}__:{registry.key}" for registry in (self.finished, self.failed)))

    def close(self) -> None:
        self.pubsub.close()

    def wait(self, target: int, failed_before: int, timeout: float, running: Supervised | None) -> float:
        """Until `target` jobs are finished: the monotonic time that was seen. A failed job or a
        dead supervisor is a failed run."""
        deadline = time.monotonic() + timeout
        while True:
            if running is not None:
                running.check()
            if self.failed.get_job_count(cleanup=False) > failed_before:
                raise BenchError(f"a product job failed: {first_error(self.failed)}")
            if self.finished.get_job_count(cleanup=False) >= target:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:g}s waiting for {target} finished jobs")
            # The supervisor's health is looked at at least this often.
            if self.pubsub.get_message(timeout=0.25) is not None:
                while self.pubsub.get_message(timeout=0) is not None:
                    pass  # one look at the counts for every change that came together


@dataclass
class Product:
    redis_url: str
    work: Path
    cert: Path
    scratch: Path | None = None  # another dir emptied with the download dir before every run
    env: dict[str, str] = field(init=False)
    runs: int = 0  # numbers the log files

    def __post_init__(self) -> None:
        self.env = product_env(self.redis_url, self.work, self.cert)
        self.settings = Settings.from_env(self.env)
        self.connection = redis.Redis.from_url(self.redis_url)
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    @property
    def download_dir(self) -> Path:
        return self.settings.download_dir

    def clean(self) -> None:
        """An empty download dir, written pages out, so no run pays for the one before."""
        for directory in (self.download_dir, self.scratch):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
                directory.mkdir(parents=True)
        os.sync()

    # --- counting -----------------------------------------------------------------------------
    def finished(self) -> int:
        return FinishedJobRegistry(self.settings.queue_name, connection=self.connection).get_job_count(cleanup=False)

    def failed(self) -> int:
        return self.failed_registry().get_job_count(cleanup=False)

    def failed_registry(self) -> FailedJobRegistry:
        return FailedJobRegistry(self.settings.queue_name, connection=self.connection)

    def status(self, job_id: str) -> str:
        try:
            job = Job.fetch(job_id, connection=self.connection, serializer=SERIALIZER)
        except NoSuchJobError:
            return "missing"
        status = job.get_status(refresh=False)
        return str(status.value) if status is not None else "missing"

    # --- processes ------------------------------------------------------------------------------
    @contextmanager
    def supervised(
        self, label: str, *, extra: dict[str, str] | None = None, ready: bool = True
    ) -> Iterator[Supervised]:
        self.runs += 1
        log = self.logs / f"supervise-{self.runs:02d}-{label}.log"
        with open(log, "wb") as output:
            started = time.monotonic()
            process = subprocess.Popen(
                [DQ, "supervise"],
                cwd=ROOT,
                env={**self.env, **(extra or {})},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        running = Supervised(process, started, log)
        try:
            if ready:
                self.wait_ready(running)
            yield running
        except BaseException:
            try:
                running.stop(15, hurry=True)
            except BenchError:
                pass  # the failure that got us here is the one to report
            raise
        running.stop()

    @contextmanager
    def dashboard(self) -> Iterator[str]:
        """A running `dq dashboard` on a free loopback port: the API's base URL."""
        port = free_port()
        log = self.logs / "dashboard.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [DQ, "dashboard"],
                cwd=ROOT,
                env={**self.env, "DQ_DASHBOARD_HOST": "127.0.0.1", "DQ_DASHBOARD_PORT": str(port)},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            if process.poll() is not None:
                raise BenchError(f"dq dashboard exited with {process.returncode}: {tail(log)}")
            try:
                return requests.get(f"{base}/health", timeout=2).status_code in (200, 503)
            except requests.ConnectionError:
                return False

        try:
            wait_for(answers, 60, "dq dashboard to answer", interval=0.1)
            yield base
        finally:
            terminate(process, 15)

    def wait_ready(self, running: Supervised, timeout: float = 60) -> None:
        """Until the supervisor has its workers and every one is registered in Redis."""

        def ready() -> bool:
            running.check()
            return len(running.workers()) == WORKERS and len(get_keys(connection=self.connection)) >= WORKERS

        wait_for(ready, timeout, f"{WORKERS} registered workers", interval=0.05)
        time.sleep(0.5)  # past the workers' first idle steps

    def enqueue_file(self, urls: list[str], name: str) -> Path:
        listing = self.work / f"{name}.txt"
        listing.write_text("".join(f"{url}\n" for url in urls))
        return listing

    def start_enqueue(self, listing: Path) -> Launched:
        process = subprocess.Popen(
            [ENQUEUE, "--from-file", str(listing)],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return Launched(process)

    def end_enqueue(self, launched: Launched, expected: int) -> list[str]:
        out, err = launched.result(timeout=300)
        process = launched.process
        if process.returncode != 0:
            raise BenchError(f"bin/enqueue exited with {process.returncode}: {err.decode(errors='replace')[-500:]}")
        ids = out.decode().split()
        if len(ids) != expected:
            raise BenchError(f"bin/enqueue printed {len(ids)} job ids for {expected} URLs")
        return ids

    def enqueue(self, urls: list[str], name: str) -> tuple[float, list[str]]:
        """`bin/enqueue --from-file`, the whole command: (seconds, job ids)."""
        listing = self.enqueue_file(urls, name)
        started = time.monotonic()
        launched = self.start_enqueue(listing)
        ids = self.end_enqueue(launched, len(urls))
        return launched.exited - started, ids

    @contextmanager
    def watching(self) -> Iterator[RegistryWatch]:
        """Subscribed to the finished and failed registries before any job goes in."""
        watch = RegistryWatch(self.connection, self.settings.queue_name)
        try:
            yield watch
        finally:
            watch.close()

    # --- the measurements -------------------------------------------------------------------
    def drain(self, urls: list[str], timeout: float) -> float:
        """Jobs enqueued first, then `dq supervise`: seconds from its launch to all finished."""
        self.connection.flushall()
        self.clean()
        self.enqueue(urls, "drain")
        with self.watching() as watch, self.supervised("drain", ready=False) as running:
            end = watch.wait(len(urls), 0, timeout, running)
        saved = sum(1 for _ in self.download_dir.iterdir())
        if saved != len(urls):
            raise BenchError(f"product drain: {saved} files saved for {len(urls)} finished jobs")
        return end - running.started

    def transfer(self, running: Supervised, urls: list[str], timeout: float, api: str | None = None) -> Transfer:
        """Into a running supervisor, through `bin/enqueue` (or, given its base URL, the API of a
        running dashboard): seconds from launching the command (sending the request) until every
        job is finished and every file at its final path; the workers' CPU meanwhile."""
        self.clean()
        workers = running.workers()
        before = sum(cpu_seconds(pid) for pid in workers)
        finished, failed = self.finished(), self.failed()
        with self.watching() as watch:
            if api is not None:
                with requests.Session() as session:
                    started = time.monotonic()
                    answer = session.post(f"{api}/api/download-queue", json={"urls": urls}, timeout=60)
                    command = time.monotonic() - started
                if answer.status_code != 201 or len(answer.json().get("jobIds", [])) != len(urls):
                    raise BenchError(f"POST /api/download-queue answered {answer.status_code}: {answer.text[:300]}")
                end = watch.wait(finished + len(urls), failed, timeout, running)
            else:
                listing = self.enqueue_file(urls, "transfer")
                started = time.monotonic()
                launched = self.start_enqueue(listing)
                end = watch.wait(finished + len(urls), failed, timeout, running)
                self.end_enqueue(launched, len(urls))
                command = launched.exited - started
        names = [url.rsplit("/", 1)[1] for url in urls]
        missing = [name for name in names if not (self.download_dir / name).exists()]
        if missing:
            raise BenchError(f"product: finished jobs without their files: {missing}")
        if running.workers() != workers:
            raise BenchError("a worker was replaced during the transfer (see the supervisor log)")
        return Transfer(end - started, sum(cpu_seconds(pid) for pid in workers) - before, command)

    def idle_memory(self, running: Supervised) -> tuple[int, int]:
        """(RSS, PSS) in bytes of the supervisor and its idle workers together."""
        pids = [running.pid, *running.workers()]
        if len(pids) != WORKERS + 1:
            raise BenchError(f"expected the supervisor and {WORKERS} workers, found {len(pids)} processes")
        return sum(rss_bytes(pid) for pid in pids), sum(pss_bytes(pid) for pid in pids)

    def growth(self, running: Supervised, url: str, timeout: float) -> tuple[int, int]:
        """One download; the VmRSS of every idle worker first, then of all of them every 50 ms
        until it finished (our workers run their job themselves, so one of them downloads).
        (growth, samples): the largest rise of one worker over its idle figure."""
        self.clean()
        workers = running.workers()
        idle = {pid: rss_bytes(pid) for pid in workers}
        peak = dict(idle)
        samples = 0
        finished, failed = self.finished(), self.failed()
        launched = self.start_enqueue(self.enqueue_file([url], "growth"))
        deadline = time.monotonic() + timeout
        while self.finished() < finished + 1:
            running.check()
            if self.failed() > failed:
                raise BenchError(f"the growth download failed: {first_error(self.failed_registry())}")
            if time.monotonic() > deadline:
                raise BenchError(f"the growth download did not finish within {timeout:g}s")
            for pid in workers:
                peak[pid] = max(peak[pid], rss_bytes(pid))
            samples += 1
            time.sleep(SAMPLE_INTERVAL)
        self.end_enqueue(launched, 1)
        if running.workers() != workers:
            raise BenchError("a worker was replaced during the growth download (see the supervisor log)")
        return max(peak[pid] - idle[pid] for pid in workers), samples

    def kill(self, slow_url: str) -> tuple[float, str, bool]:
        """A slow download; SIGKILL its `rq worker` once the job has started; seconds until the
        job is failed, its error line, and whether a new worker took the dead one's place."""
        self.connection.flushall()
        self.clean()
        # One attempt: with retries on, a killed job is queued again (correctly), not failed.
        with self.supervised("kill", extra={"DQ_RETRIES": "0"}) as running:
            _, ids = self.enqueue([slow_url], "kill")
            job_id = ids[0]
            wait_for(lambda: self.status(job_id) == "started", 30, "the slow job to start")
            job = Job.fetch(job_id, connection=self.connection, serializer=SERIALIZER)
            worker = next((pid for pid in running.workers() if job.worker_name in cmdline(pid)), None)
            if worker is None:
                raise BenchError(f"no worker process named {job.worker_name} under the supervisor")
            os.kill(worker, signal.SIGKILL)
            killed = time.monotonic()
            end = wait_for(lambda: self.status(job_id) == "failed", 60, "the killed job to be failed")
            replaced = time.monotonic() + 10
            while time.monotonic() < replaced and (worker in running.workers() or len(running.workers()) < WORKERS):
                time.sleep(0.01)
            respawned = worker not in running.workers() and len(running.workers()) == WORKERS
            error = self.error_of(job_id)
        return end - killed, error, respawned

    def error_of(self, job_id: str) -> str:
        """The job's `error` as `bin/jobs --json` shows it (the user's view)."""
        run = subprocess.run([DQ, "jobs", "--json"], cwd=ROOT, env=self.env, capture_output=True, text=True)
        if run.returncode != 0:
            return f"(bin/jobs exited with {run.returncode})"
        for item in json.loads(run.stdout):
            if item.get("id") == job_id:
                return str(item.get("error"))
        return "(job not listed)"

    def problems(self) -> list[str]:
        """Every ERROR, CRITICAL and Traceback line the supervisor logs hold, for the report."""
        found = []
        for log in sorted(self.logs.glob("*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if "Traceback" in line or " ERROR " in line or " CRITICAL " in line or "ERROR:" in line:
                    found.append(f"{log.name}: {line.strip()[:200]}")
        return found
