"""The deployment files in config/: the settings that keep the shutdown grace, checked by parsing
(and by `systemd-analyze verify` where it exists), and the Procfile's lines run for real."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from config import Settings
from jobs.workers import pid_alive
from tests.helpers import (
    CHECKOUT_PREFIX,
    CONFIG_DIR,
    DOWNLOADS_PREFIX,
    PROGRAMS,
    ROOT,
    STATE_PREFIX,
    SUPERVISORD_CONF,
    parse_environment,
    supervisord_parser,
    wait_until,
)

UNITS = {name: CONFIG_DIR / f"download-queue-{name}.service" for name in ("supervisor", "dashboard", "redis")}
PROCFILE = CONFIG_DIR / "Procfile"
DEFAULT_GRACE = Settings().shutdown_grace  # 300
SHELLS = {"sh", "bash", "dash", "zsh", "env"}


# --- helpers ---------------------------------------------------------------------------------
def truthy(value: str) -> bool:
    return value.strip().lower() in ("true", "yes", "on", "1")


def setting_lines_without_comment(path: Path, key_value: re.Pattern[str], exempt: set[str]) -> list[str]:
    """Setting lines not covered by a comment: each run of settings must start below a comment.

    A "run" is consecutive non-blank lines; a comment line anywhere above a setting in its run
    covers it (e.g. `User=` and `Group=` under one comment).
    """
    uncovered = []
    commented = False
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("["):
            commented = False
        elif stripped.startswith(("#", ";")):
            commented = True
        elif line[:1].isspace():
            continue  # a continuation line of a multi-line value
        else:
            match = key_value.match(stripped)
            if match and match.group(1) not in exempt and not commented:
                uncovered.append(stripped)
    return uncovered


# --- supervisord.conf ------------------------------------------------------------------------
def test_supervisord_conf_keeps_the_shutdown_grace() -> None:
    parser = supervisord_parser()
    environment = parse_environment(parser.get("supervisord", "environment"))
    grace = float(environment.get("DQ_SHUTDOWN_GRACE", DEFAULT_GRACE))
    program = parser[PROGRAMS["supervisor"]]

    assert program.get("stopsignal", "TERM").upper() in ("TERM", "SIGTERM")
    # supervisord's default stopwaitsecs (10 s) would SIGKILL the supervisor mid-grace.
    assert int(program["stopwaitsecs"]) > grace >= DEFAULT_GRACE
    for name, section in PROGRAMS.items():
        # A group signal reaches the workers too: with the supervisor's, a second SIGTERM (RQ: cold stop).
        for option in ("stopasgroup", "killasgroup"):
            assert not truthy(parser.get(section, option, fallback="false")), (name, option)
        assert truthy(parser.get(section, "autorestart", fallback="unexpected")), name


def test_supervisord_conf_runs_the_python_processes_without_a_shell() -> None:
    parser = supervisord_parser()
    # `dq redis` locks the state dir and execs into redis-server (--port 0, the state dir's socket).
    for name, command in (("redis", "redis"), ("supervisor", "supervise"), ("dashboard", "dashboard")):
        argv = shlex.split(parser.get(PROGRAMS[name], "command"))
        assert argv == [f"{CHECKOUT_PREFIX}/.venv/bin/dq", command], argv
        assert parser.get(PROGRAMS[name], "directory") == CHECKOUT_PREFIX


@pytest.mark.timeout(10)
def test_supervisord_conf_names_the_private_network_setting_and_no_design_file() -> None:
    environment = parse_environment(supervisord_parser().get("supervisord", "environment"))
    assert environment["DQ_ALLOW_PRIVATE_NETWORKS"] == "0"
    text = SUPERVISORD_CONF.read_text()
    assert "DESIGN.md" not in text, "the project ships no DESIGN.md"
    assert 'README\'s "Settings" section' in text
    assert "\n## Settings\n" in (ROOT / "README.md").read_text()


def test_supervisord_conf_keeps_logs_and_sockets_under_the_state_dir() -> None:
    parser = supervisord_parser()
    environment = parse_environment(parser.get("supervisord", "environment"))
    assert environment["DQ_STATE_DIR"] == STATE_PREFIX
    assert environment["DQ_DOWNLOAD_DIR"] == DOWNLOADS_PREFIX
    assert environment["REDIS_URL"] == f"unix://{STATE_PREFIX}/redis.sock"
    for option in ("logfile", "pidfile", "childlogdir"):
        assert parser.get("supervisord", option).startswith(f"{STATE_PREFIX}/"), option
    assert parser.get("unix_http_server", "file") == f"{STATE_PREFIX}/supervisor.sock"
    assert parser.get("supervisorctl", "serverurl") == f"unix://{STATE_PREFIX}/supervisor.sock"
    for name, section in PROGRAMS.items():
        assert parser.get(section, "stdout_logfile").startswith(f"{STATE_PREFIX}/log/"), name
        assert truthy(parser.get(section, "redirect_stderr")), name  # Python logs to stderr


def test_supervisord_conf_stops_redis_last_and_the_dashboard_first() -> None:
    parser = supervisord_parser()
    priority = {name: int(parser.get(section, "priority")) for name, section in PROGRAMS.items()}
    # supervisord's shutdown stops programs one at a time in descending priority: the
    # supervisor's finishing downloads still need Redis.
    assert priority["redis"] < priority["supervisor"] < priority["dashboard"]


def test_supervisord_conf_environment_is_every_entry_quoted() -> None:
    raw = supervisord_parser().get("supervisord", "environment")
    entries = parse_environment(raw)
    assert len(entries) == raw.count("="), raw  # nothing the strict parser above skipped
    assert "PYTHONPATH" not in entries  # supervisord itself must import the OS's `supervisor`


def test_supervisord_conf_has_a_comment_on_every_setting() -> None:
    uncovered = setting_lines_without_comment(SUPERVISORD_CONF, re.compile(r"([A-Za-z_.]+)\s*="), exempt=set())
    assert uncovered == []


# --- systemd units ---------------------------------------------------------------------------
def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd's format: repeated keys accumulate, so configparser cannot read it."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("["):
            current = sections.setdefault(stripped.strip("[]"), {})
            continue
        key, _, value = stripped.partition("=")
        assert not value.endswith("\\"), f"continuation lines are not used: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_environment(service: dict[str, list[str]]) -> dict[str, str]:
    entries: dict[str, str] = {}
    for assignment in service.get("Environment", []):
        for word in shlex.split(assignment):
            key, _, value = word.partition("=")
            entries[key] = value
    return entries


def seconds_of(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value.strip())
    assert match, f"write timeouts as plain seconds or minutes: {value!r}"
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_restarts_on_failure_and_runs_no_shell(name: str) -> None:
    service = unit_settings(UNITS[name])["Service"]
    assert service["Restart"] == ["on-failure"]
    [exec_start] = service["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0].startswith("/") and Path(argv[0]).name not in SHELLS, argv
    assert "bin/supervise" not in exec_start and "bin/dashboard" not in exec_start  # no self-installing wrapper
    command = {"dashboard": ["dashboard"], "supervisor": ["supervise"], "redis": ["redis", "--supervised", "systemd"]}
    assert argv == ["/opt/download-queue/.venv/bin/dq", *command[name]]
    assert service["EnvironmentFile"] == ["-/etc/download-queue/env"]
    assert unit_environment(service)["DQ_STATE_DIR"] == "%S/download-queue"
    assert service["RestartPreventExitStatus"] == ["2"]  # bad settings: a restart cannot help


def test_supervisor_unit_keeps_the_shutdown_grace() -> None:
    service = unit_settings(UNITS["supervisor"])["Service"]
    grace = float(unit_environment(service).get("DQ_SHUTDOWN_GRACE", DEFAULT_GRACE))
    # mixed: SIGTERM to the supervisor only; control-group (the default) would reach the workers too.
    assert service["KillMode"] == ["mixed"]
    assert service.get("KillSignal", ["SIGTERM"]) == ["SIGTERM"]
    assert seconds_of(service["TimeoutStopSec"][-1]) > grace >= DEFAULT_GRACE


def test_units_are_ordered_after_a_local_redis() -> None:
    for name in ("supervisor", "dashboard"):
        after = " ".join(unit_settings(UNITS[name])["Unit"]["After"]).split()
        assert "download-queue-redis.service" in after and "redis-server.service" in after
    redis_unit = unit_settings(UNITS["redis"])
    assert redis_unit["Service"]["Type"] == ["notify"]  # ready means accepting connections
    assert "--supervised" in redis_unit["Service"]["ExecStart"][0]
    wanted_by = " ".join(redis_unit["Install"]["WantedBy"]).split()
    assert set(wanted_by) == {"download-queue-supervisor.service", "download-queue-dashboard.service"}


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_has_a_comment_on_every_setting(name: str) -> None:
    uncovered = setting_lines_without_comment(UNITS[name], re.compile(r"([A-Za-z]+)="), exempt={"Description"})
    assert uncovered == []


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own checker, on copies pointed at this checkout (it checks ExecStart exists)."""
    assert shutil.which("systemd-analyze"), "needs systemd-analyze: apt-get install -y systemd (bin/test does)"
    redis_binary = "/usr/bin/redis-server"
    if not os.access(redis_binary, os.X_OK):
        from supervisor.redis_server import server_binary

        redis_binary = server_binary()
    copies = []
    for path in UNITS.values():
        text = path.read_text().replace("/opt/download-queue", str(ROOT))
        text = text.replace("/usr/bin/redis-server", redis_binary)
        copy = tmp_path / path.name
        copy.write_text(text)
        copies.append(str(copy))
    result = subprocess.run(
        ["systemd-analyze", "verify", *copies], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    # Unknown keys and bad values are only warnings (exit 0): any output is a finding.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


# --- Procfile --------------------------------------------------------------------------------
PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")  # what honcho and foreman match


def procfile_entries() -> dict[str, str]:
    entries = {}
    for line in PROCFILE.read_text().splitlines():
        match = PROCFILE_LINE.match(line)
        if match:
            assert match.group(1) not in entries, f"duplicate process {match.group(1)}"
            entries[match.group(1)] = match.group(2)
        else:
            assert not line.strip() or line.startswith("#"), f"neither a process nor a comment: {line!r}"
    return entries


def test_procfile_names_redis_supervisor_and_dashboard() -> None:
    entries = procfile_entries()
    assert list(entries) == ["redis", "supervisor", "dashboard"]
    assert entries["supervisor"].endswith("; exec .venv/bin/dq supervise")
    assert entries["dashboard"].endswith("; exec .venv/bin/dq dashboard")
    assert entries["redis"] == "exec .venv/bin/dq redis"


@pytest.fixture
def procfile_processes() -> Iterator[Callable[[str, dict[str, str]], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        # As honcho and foreman run a line: /bin/sh -c, from the checkout, in its own group.
        process = subprocess.Popen(
            ["/bin/sh", "-c", procfile_entries()[name]],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        started.append(process)
        return process

    yield start
    for process in reversed(started):  # Redis last
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


@pytest.mark.timeout(90)
def test_procfile_lines_run_under_sh_and_wait_for_their_redis(
    env: dict[str, str],
    tmp_path: Path,
    procfile_processes: Callable[[str, dict[str, str]], subprocess.Popen[bytes]],
) -> None:
    """The redis line serves the socket the others default to; the supervisor line, started
    first, waits for it instead of exiting (which would make honcho stop everything)."""
    if shutil.which("redis-server") is None:
        pytest.fail("the Procfile's redis line needs redis-server on PATH (Debian: apt-get install redis-server)")
    state_dir = tmp_path / "procfile-state"
    process_env = {key: value for key, value in env.items() if key != "REDIS_URL"}
    process_env["DQ_STATE_DIR"] = str(state_dir)
    supervisor = procfile_processes("supervisor", process_env)
    assert not wait_until(lambda: supervisor.poll() is not None, timeout=3), "it did not wait for Redis"

    procfile_processes("redis", process_env)
    connection = redis.Redis.from_url(f"unix://{state_dir}/redis.sock")
    try:
        from rq.worker import Worker

        def workers() -> int:
            try:
                return Worker.count(connection=connection)
            except redis.exceptions.ConnectionError:
                return 0

        assert wait_until(lambda: workers() == 4, timeout=45, interval=0.2), "4 workers did not come up"
        # `exec`: the process the runner started (and signals) is Python itself, no shell left.
        exe = Path(f"/proc/{supervisor.pid}/exe").resolve().name
        assert exe.startswith("python"), exe
        assert b"supervise" in Path(f"/proc/{supervisor.pid}/cmdline").read_bytes()

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
        worker_pids = [worker.pid for worker in Worker.all(connection=connection)]
        assert not any(pid and pid_alive(pid) for pid in worker_pids)
    finally:
        connection.close()
