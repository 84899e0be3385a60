"""config/supervisord.conf under the real supervisord (Debian's `supervisor` package).

Each test runs `supervisord -n -c` on a copy of the shipped file whose three path prefixes
(see its header) point at this checkout and temporary dirs, with small settings. supervisord
runs on /usr/bin/python3 with the OS's own `supervisor` package: this project's package has
the same name, so the environment passed to it carries no PYTHONPATH.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from rq.worker import BaseWorker, Worker

from jobs import messages
from jobs.views import fetch_jobs, job_view
from jobs.workers import pid_alive
from tests.faultserver import FaultServer, pattern_bytes
from tests.helpers import (
    CHECKOUT_PREFIX,
    DOWNLOADS_PREFIX,
    PROGRAMS,
    ROOT,
    STATE_PREFIX,
    SUPERVISORD_CONF,
    enqueue,
    format_environment,
    free_port,
    log_text,
    parse_environment,
    supervisord_parser,
    wait_until,
)

SUPERVISORD = "/usr/bin/supervisord"
SUPERVISORCTL = "/usr/bin/supervisorctl"
SUPERVISOR = "download-queue-supervisor"
DASHBOARD = "download-queue-dashboard"
# Python variables that would make /usr/bin/supervisord import something other than its own package.
LEAKY = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONUSERBASE")


def deployed_config(
    directory: Path,
    state_dir: Path,
    download_dir: Path,
    settings: Mapping[str, str],
    *,
    stopwaitsecs: int | None = None,
    keep_redis: bool = False,
) -> Path:
    """The shipped file with its path prefixes replaced and `settings` merged into its environment."""
    text = SUPERVISORD_CONF.read_text()
    # Longest prefixes first: the checkout prefix is a prefix of the other two.
    text = text.replace(STATE_PREFIX, str(state_dir)).replace(DOWNLOADS_PREFIX, str(download_dir))
    text = text.replace(CHECKOUT_PREFIX, str(ROOT))
    parser = supervisord_parser(text)
    environment = parse_environment(parser.get("supervisord", "environment"))
    environment.update(settings)
    parser.set("supervisord", "environment", format_environment(environment))
    if stopwaitsecs is not None:
        parser.set(PROGRAMS["supervisor"], "stopwaitsecs", str(stopwaitsecs))
    if not keep_redis:
        parser.remove_section(PROGRAMS["redis"])
    (state_dir / "log").mkdir(parents=True, exist_ok=True)  # as the file's header says to
    path = directory / "supervisord.conf"
    with path.open("w") as handle:
        parser.write(handle)  # comments are dropped: what is left are the settings
    assert "%(here)s" not in path.read_text()
    return path


@dataclass
class Supervisord:
    process: subprocess.Popen[bytes]
    config: Path
    env: dict[str, str]
    state_dir: Path
    program_pids: set[int] = field(default_factory=set)

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SUPERVISORCTL, "-c", str(self.config), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.config.parent,
        )

    def pid(self, program: str | None = None) -> int:
        """A program's pid (0 when not running), or supervisord's own."""
        output = self.ctl("pid", *([program] if program else [])).stdout.strip()
        pid = int(output) if output.isdigit() else 0
        if pid and program:
            self.program_pids.add(pid)
        return pid

    def log(self) -> str:
        return log_text(self.state_dir / "log" / "supervisord.log")

    def program_log(self, program: str) -> str:
        return log_text(self.state_dir / "log" / f"{program}.log")


@pytest.fixture
def start_supervisord(tmp_path: Path, env: dict[str, str]) -> Iterator[Callable[..., Supervisord]]:
    if not (os.access(SUPERVISORD, os.X_OK) and os.access(SUPERVISORCTL, os.X_OK)):
        pytest.fail("these tests need the OS's supervisord: apt-get install -y supervisor")
    started: list[Supervisord] = []
    clean_env = {key: value for key, value in env.items() if key not in LEAKY}
    # Settings reach the programs only through the config's environment= (that is under test).
    clean_env = {key: value for key, value in clean_env.items() if not key.startswith("DQ_") and key != "REDIS_URL"}

    def start(config: Path, state_dir: Path) -> Supervisord:
        with open(config.parent / "supervisord.out", "wb") as output:  # the child keeps its own copy
            process = subprocess.Popen(
                [SUPERVISORD, "-n", "-c", str(config)],
                env=clean_env,
                cwd=config.parent,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        daemon = Supervisord(process, config, clean_env, state_dir)
        started.append(daemon)
        ready = wait_until(
            lambda: process.poll() is not None or daemon.ctl("pid").returncode == 0, timeout=30, interval=0.2
        )
        assert ready and process.poll() is None, (config.parent / "supervisord.out").read_text(errors="replace")
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.pid(SUPERVISOR)
            daemon.process.send_signal(signal.SIGTERM)  # ordered shutdown, each program's stopwaitsecs
            try:
                daemon.process.wait(90)
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait(10)
        for pid in daemon.program_pids:  # never leave a supervisor behind (its workers die with it)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def wait_for_workers(connection: redis.Redis, count: int, parent: int, timeout: float = 60) -> list[BaseWorker]:
    """Wait until exactly `count` live registered workers run, all children of `parent`."""
    live: list[BaseWorker] = []

    def ready() -> bool:
        live[:] = [w for w in Worker.all(connection=connection) if w.pid and pid_alive(w.pid)]
        return len(live) == count and all(parent_of(w.pid) == parent for w in live if w.pid)

    assert wait_until(ready, timeout, interval=0.2), [(w.name, w.pid, w.pid and parent_of(w.pid)) for w in live]
    return live


def parent_of(pid: int) -> int:
    """The parent pid, or 0 once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def job_view_of(connection: redis.Redis, job_id: str) -> dict[str, object]:
    """The job's view (the shape `dq jobs --json` prints), read in process; {} once it is gone."""
    jobs = fetch_jobs(connection, [job_id])
    return job_view(jobs[0]) if jobs else {}


def wait_until_downloading(connection: redis.Redis, job_id: str, timeout: float = 30) -> None:
    def downloading() -> bool:
        view = job_view_of(connection, job_id)
        progress = view.get("progress")
        return view.get("state") == "processing" and isinstance(progress, dict) and progress["bytes_done"] > 0

    assert wait_until(downloading, timeout, interval=0.1), job_view_of(connection, job_id)


def queue_settings(env: dict[str, str], **overrides: str) -> dict[str, str]:
    """The test's settings (small timeouts, the test Redis) for the config's environment=."""
    settings = {key: value for key, value in env.items() if key.startswith("DQ_") or key == "REDIS_URL"}
    settings["DQ_DASHBOARD_PORT"] = str(free_port())  # never the shared default 9181
    settings.update(overrides)
    return settings


@pytest.mark.timeout(180)
def test_supervisord_restarts_a_killed_supervisor_and_its_job_is_recovered(
    env: dict[str, str],
    tmp_path: Path,
    connection: redis.Redis,
    fault_server: FaultServer,
    start_supervisord: Callable[..., Supervisord],
) -> None:
    state_dir, download_dir = Path(env["DQ_STATE_DIR"]), Path(env["DQ_DOWNLOAD_DIR"])
    # A job timeout well past the test, so only the crash can end the download.
    settings = queue_settings(env, DQ_JOB_TIMEOUT="120")
    config = deployed_config(tmp_path, state_dir, download_dir, settings, stopwaitsecs=15)
    daemon = start_supervisord(config, state_dir)

    supervisor_pid = daemon.pid(SUPERVISOR)
    assert supervisor_pid, daemon.ctl("status").stdout
    # No shell between supervisord and the Python supervisor, which owns the 4 workers.
    assert parent_of(supervisor_pid) == daemon.pid()
    assert Path(f"/proc/{supervisor_pid}/exe").resolve().name.startswith("python")
    assert Path(f"/proc/{supervisor_pid}/cmdline").read_bytes().split(b"\0")[1:3] == [
        str(ROOT / ".venv" / "bin" / "dq").encode(),
        b"supervise",
    ]
    wait_for_workers(connection, 4, parent=supervisor_pid)

    # The dashboard program serves on the configured port.
    port = settings["DQ_DASHBOARD_PORT"]

    def dashboard_answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    assert wait_until(dashboard_answers, timeout=30, interval=0.3), daemon.program_log(DASHBOARD)

    [job_id] = enqueue(env, fault_server.url("/slow/3000000/long.flac?seconds=120"))
    wait_until_downloading(connection, job_id)

    os.kill(supervisor_pid, signal.SIGKILL)
    assert wait_until(lambda: daemon.pid(SUPERVISOR) not in (0, supervisor_pid), timeout=30, interval=0.2), daemon.log()
    new_pid = daemon.pid(SUPERVISOR)
    assert "exited: download-queue-supervisor (terminated by SIGKILL; not expected)" in daemon.log()
    # The new supervisor runs 4 fresh workers; the old ones died with their supervisor.
    wait_for_workers(connection, 4, parent=new_pid)
    assert fault_server.wait_until(lambda server: server.active == 0, timeout=10)

    # Issue 3's startup recovery fails the interrupted job as a crash.
    def recovered() -> bool:
        return job_view_of(connection, job_id).get("state") == "failed"

    assert wait_until(recovered, timeout=60, interval=0.3), (
        job_view_of(connection, job_id),
        daemon.program_log(SUPERVISOR)[-3000:],
    )
    assert job_view_of(connection, job_id)["error"] == messages.RECOVERED
    assert not list(download_dir.rglob("long.flac"))


@pytest.mark.timeout(180)
def test_supervisorctl_stop_lets_the_running_download_finish(
    env: dict[str, str],
    tmp_path: Path,
    connection: redis.Redis,
    fault_server: FaultServer,
    start_supervisord: Callable[..., Supervisord],
) -> None:
    state_dir, download_dir = Path(env["DQ_STATE_DIR"]), Path(env["DQ_DOWNLOAD_DIR"])
    settings = queue_settings(env, DQ_SHUTDOWN_GRACE="20", DQ_JOB_TIMEOUT="60")
    config = deployed_config(tmp_path, state_dir, download_dir, settings, stopwaitsecs=30)
    daemon = start_supervisord(config, state_dir)
    supervisor_pid = daemon.pid(SUPERVISOR)
    wait_for_workers(connection, 4, parent=supervisor_pid)

    size, seconds = 400_000, 5
    [job_id] = enqueue(env, fault_server.url(f"/slow/{size}/short.flac?seconds={seconds}"))
    wait_until_downloading(connection, job_id)

    began = time.monotonic()
    stopped = daemon.ctl("stop", SUPERVISOR, timeout=90)
    took = time.monotonic() - began
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, (stopped.stdout, stopped.stderr)

    # When `stop` returns, the download has completed, not been cut short.
    view = job_view_of(connection, job_id)
    assert view["state"] == "completed", (view, daemon.program_log(SUPERVISOR)[-3000:])
    assert (download_dir / "short.flac").read_bytes() == pattern_bytes(size)
    assert took > 1.0, f"stop returned after {took:.1f}s, before the download could have finished"
    assert "stopped: download-queue-supervisor (exit status 0)" in daemon.log()
    assert not pid_alive(supervisor_pid)
    assert Worker.count(connection=connection) == 0
    assert "shutting down" in daemon.program_log(SUPERVISOR)  # its log file is under the state dir


@pytest.mark.timeout(120)
def test_shipped_config_runs_its_own_redis_and_stops_it_last(
    tmp_path: Path, start_supervisord: Callable[..., Supervisord]
) -> None:
    """The file as shipped (only paths and the dashboard port changed): its Redis program on a
    socket in the state dir, 4 workers on it, and a shutdown that stops Redis after the supervisor."""
    state_dir, download_dir = tmp_path / "state", tmp_path / "downloads"
    config = deployed_config(
        tmp_path, state_dir, download_dir, {"DQ_DASHBOARD_PORT": str(free_port())}, keep_redis=True
    )
    daemon = start_supervisord(config, state_dir)
    own_redis = redis.Redis.from_url(f"unix://{state_dir}/redis.sock")

    def redis_answers() -> bool:
        try:
            return bool(own_redis.ping())
        except redis.exceptions.ConnectionError:
            return False

    try:
        assert wait_until(redis_answers, timeout=30, interval=0.1), daemon.program_log("download-queue-redis")
        # Its Redis holds the state dir's lock (`dq redis` execs into redis-server, same pid).
        redis_pid = daemon.pid("download-queue-redis")
        assert (state_dir / "redis.lock").read_text() == f"{redis_pid} dq redis\n"
        # Read only now: a supervisor that started before Redis answered exited 3 and was
        # started again by supervisord (startretries), as the file's comment says.
        assert wait_until(lambda: daemon.ctl("status", SUPERVISOR).stdout.split()[1:2] == ["RUNNING"], 30)
        wait_for_workers(own_redis, 4, parent=daemon.pid(SUPERVISOR))
        assert (state_dir / "appendonlydir").is_dir() or (state_dir / "appendonly.aof").exists()
    finally:
        own_redis.close()

    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(60) == 0
    log = daemon.log()
    order = [log.index(f"stopped: {program}") for program in (DASHBOARD, SUPERVISOR, "download-queue-redis")]
    assert order == sorted(order), log
    assert "stopped: download-queue-supervisor (exit status 0)" in log
