"""One log, optionally JSON, with the whole audit trail: the JSON formatter, the filter that
makes an expected failure one line, the event-stream follower, and `dq up`'s own output with
a completed download, a 404, a refused connection and a deletion made by another process."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from config import Settings
from jobs import history, keys
from jobs.errors import ConnectionFailed, HTTPStatusError
from jobs.logs import ExpectedFailures, JsonFormatter, RedactCredentials, configure_logging
from supervisor.audit import AuditFollower
from supervisor.loop import Supervisor
from tests.faultserver import FaultServer
from tests.helpers import DQ, ROOT, free_port, log_text, run_dq, wait_until

SECRET = "s3cr3t-pw"


# --- the formatter -------------------------------------------------------------------------------
def record(message: str, *args: object, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("dq.test", level, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


@pytest.mark.timeout(10)
def test_json_formatter_writes_the_contract_fields_on_one_line() -> None:
    line = JsonFormatter().format(
        record(
            "job %s failed",
            "abc",
            level=logging.WARNING,
            event="failed",
            job_id="abc",
            album_id="alb",
            url=f"http://user:{SECRET}@example.org/a.flac",
            attempt=2,
            bytes=1234,
            duration_s=1.5,
            error="HTTP 404 Not Found",
        )
    )
    assert "\n" not in line
    parsed = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", parsed.pop("ts"))
    assert parsed == {
        "level": "WARNING",
        "logger": "dq.test",
        "event": "failed",
        "message": "job abc failed",
        "job_id": "abc",
        "album_id": "alb",
        "url": "http://***@example.org/a.flac",
        "attempt": 2,
        "bytes": 1234,
        "duration_s": 1.5,
        "error": "HTTP 404 Not Found",
    }


@pytest.mark.timeout(10)
def test_json_formatter_without_an_event_uses_the_message_and_keeps_a_traceback_on_one_line() -> None:
    try:
        raise ValueError(f"boom at http://me:{SECRET}@host.example/x")
    except ValueError:
        made = record("fetching %s", f"http://me:{SECRET}@host.example/x", level=logging.ERROR)
        made.exc_info = sys.exc_info()
    line = JsonFormatter().format(made)
    assert "\n" not in line and SECRET not in line
    parsed = json.loads(line)
    assert parsed["event"] == "fetching http://***@host.example/x"
    assert "message" not in parsed and "job_id" not in parsed, "only the fields a record knows"
    assert parsed["traceback"].startswith("Traceback (most recent call last)")
    assert "ValueError: boom at http://***@host.example/x" in parsed["traceback"]


@pytest.mark.timeout(10)
def test_configure_logging_json_makes_root_lines_json(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, sys.excepthook
    root.handlers = []
    try:
        configure_logging("json")
        logging.getLogger("waitress").info("Serving on http://%s", "127.0.0.1:1")
        [handler] = root.handlers
        assert any(isinstance(f, RedactCredentials) for f in handler.filters)
    finally:
        root.handlers, sys.excepthook = saved[0], saved[2]
        root.setLevel(saved[1])
        logging.captureWarnings(False)
    [line] = capsys.readouterr().err.splitlines()
    assert json.loads(line)["logger"] == "waitress"
    assert json.loads(line)["event"] == "Serving on http://127.0.0.1:1"


# --- an expected failure is one line -------------------------------------------------------------
class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def rq_style_error(logger: logging.Logger, error: Exception) -> None:
    """What RQ's `Worker.handle_exception` does: the traceback text inside the message, logged
    while the job's exception is being handled."""
    try:
        raise error
    except type(error):
        logger.error(
            "Worker %s: job %s: exception raised while executing (%s)\n%s",
            "w1",
            "job-1",
            "jobs.track.download_track",
            traceback.format_exc(),
            extra={"job_id": "job-1", "queue": "default"},
        )


@pytest.fixture
def rq_worker_logger() -> tuple[logging.Logger, Collect]:
    logger = logging.getLogger("test.rq.worker")
    logger.handlers, logger.filters, logger.propagate = [], [], False
    collect = Collect()
    logger.addHandler(collect)
    logger.addFilter(ExpectedFailures())
    logger.setLevel(logging.INFO)
    return logger, collect


@pytest.mark.timeout(10)
@pytest.mark.parametrize("error", [HTTPStatusError(404), ConnectionFailed("Connection refused (127.0.0.1:9)")])
def test_an_expected_failure_leaves_no_traceback(
    rq_worker_logger: tuple[logging.Logger, Collect], error: Exception
) -> None:
    logger, collect = rq_worker_logger
    rq_style_error(logger, error)
    assert collect.records == [], "at INFO the supervisor's audit line is the one line"
    logger.setLevel(logging.DEBUG)
    rq_style_error(logger, error)
    [line] = collect.records
    text = line.getMessage()
    assert text == f"job job-1: attempt failed: {error}" and "Traceback" not in text
    assert line.levelno == logging.DEBUG and line.exc_info is None


@pytest.mark.timeout(10)
def test_an_unexpected_error_keeps_its_traceback(rq_worker_logger: tuple[logging.Logger, Collect]) -> None:
    logger, collect = rq_worker_logger
    rq_style_error(logger, KeyError("surprise"))
    [line] = collect.records
    assert line.levelno == logging.ERROR
    assert "Traceback (most recent call last)" in line.getMessage() and "KeyError: 'surprise'" in line.getMessage()


# --- the follower, on a real Redis ---------------------------------------------------------------
@pytest.fixture
def events(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="dq.events")
    return caplog


def event_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dq.events" and r.levelno >= logging.INFO]


@pytest.mark.timeout(20)
def test_follower_starts_at_the_end_and_logs_each_new_event_once(
    connection: redis.Redis, events: pytest.LogCaptureFixture
) -> None:
    history.record(connection, "old", history.ENQUEUED)
    follower = AuditFollower.at_end(connection)
    assert follower.poll() == 0
    assert event_lines(events) == [], "what was recorded before it started is not logged again"
    history.record(connection, "j1", history.ENQUEUED)
    history.record(connection, "j1", history.FAILED, "HTTP 404 Not Found", album_id="a1")
    history.record(connection, "j2", history.DELETED, "Deleted")
    assert follower.poll() == 3
    assert follower.poll() == 0
    assert event_lines(events) == ["job j1 enqueued", "job j1 failed: HTTP 404 Not Found", "job j2 deleted: Deleted"]
    failed = next(r for r in events.records if r.getMessage().startswith("job j1 failed"))
    assert failed.levelno == logging.WARNING
    assert (failed.event, failed.job_id, failed.album_id, failed.error) == (  # type: ignore[attr-defined]
        "failed",
        "j1",
        "a1",
        "HTTP 404 Not Found",
    )
    # history.record itself logs at DEBUG only: no second line at INFO from the recording process.
    assert all(r.levelno == logging.DEBUG for r in events.records if r.pathname.endswith("history.py"))


@pytest.mark.timeout(20)
def test_follower_reads_at_most_count_entries_a_poll(connection: redis.Redis, events: pytest.LogCaptureFixture) -> None:
    follower = AuditFollower.at_end(connection, count=4)
    for i in range(10):
        history.record(connection, f"j{i}", history.ENQUEUED)
    assert [follower.poll(), follower.poll(), follower.poll(), follower.poll()] == [4, 4, 2, 0]
    assert event_lines(events) == [f"job j{i} enqueued" for i in range(10)]
    for i in range(10, 19):
        history.record(connection, f"j{i}", history.ENQUEUED)
    assert follower.drain() == 9, "a stopping supervisor reads until caught up"


@pytest.mark.timeout(20)
def test_follower_survives_a_trimmed_and_a_replaced_stream(
    connection: redis.Redis, events: pytest.LogCaptureFixture
) -> None:
    follower = AuditFollower.at_end(connection)
    history.record(connection, "a", history.ENQUEUED)
    history.record(connection, "b", history.ENQUEUED)
    connection.xtrim(keys.EVENTS, maxlen=0)  # trimmed past what the follower has seen
    history.record(connection, "c", history.ENQUEUED)
    assert follower.poll() == 1
    assert event_lines(events) == ["job c enqueued"], "the trimmed ones are gone; the follower goes on"
    # The stream deleted and written again with older ids: followed from its start.
    connection.delete(keys.EVENTS)
    connection.xadd(keys.EVENTS, {"job": "d", "event": "deleted", "at": "0"}, id="1-1")
    assert follower.poll() == 0, "noticed, nothing lost"
    assert follower.poll() == 1
    assert event_lines(events)[-1] == "job d deleted"
    assert follower.poll() == 0


# --- the loop calls it ---------------------------------------------------------------------------
@dataclass
class FakeAudit:
    calls: list[str] = field(default_factory=list)

    def poll(self) -> int:
        self.calls.append("poll")
        return 0

    def drain(self) -> int:
        self.calls.append("drain")
        return 0


@dataclass
class IdlePool:
    live: list[object] = field(default_factory=list)

    def step(self, now: float) -> list[object]:
        return []

    def warm_stop(self) -> None:
        pass

    def kill_all(self) -> None:
        pass


@pytest.mark.timeout(10)
def test_the_loop_follows_the_events_every_step_and_drains_when_done(settings: Settings) -> None:
    audit = FakeAudit()
    supervisor = Supervisor(settings, IdlePool(), audit=audit, clock=lambda: 0.0)  # type: ignore[arg-type]
    supervisor.start(0.0)
    supervisor.step(0.2)
    supervisor.step(0.4)
    assert audit.calls == ["poll", "poll"]
    supervisor.request_stop()
    supervisor.step(0.6)  # no worker left: done at once
    assert supervisor.done and audit.calls[-1] == "drain"


# --- `dq up`, real processes ---------------------------------------------------------------------
def up_env(env: dict[str, str], log_format: str) -> dict[str, str]:
    embedded = {k: v for k, v in env.items() if k != "REDIS_URL"}
    embedded["DQ_DASHBOARD_PORT"] = str(free_port())
    embedded["DQ_LOG_FORMAT"] = log_format
    embedded["DQ_WORKERS"] = "2"
    return embedded


def with_credentials(url: str) -> str:
    return url.replace("http://", f"http://user:{SECRET}@", 1)


def workers_up(env: dict[str, str], count: int) -> bool:
    result = run_dq(["stats", "--json"], env)
    return result.returncode == 0 and json.loads(result.stdout)["worker"]["workers"] == count


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return log_text(self.log)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@pytest.fixture
def start_up(tmp_path: Path) -> object:
    started: list[Up] = []

    def start(env: dict[str, str]) -> Up:
        log = tmp_path / f"up-{len(started)}.log"
        process = subprocess.Popen(
            [DQ, "up"], env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
        up = Up(process, log)
        started.append(up)
        assert wait_until(lambda: workers_up(env, 2), 40), up.text()
        return up

    yield start
    for up in started:
        if up.process.poll() is None:
            up.process.send_signal(signal.SIGTERM)
            try:
                up.process.wait(30)
            except subprocess.TimeoutExpired:
                up.process.kill()


def enqueue_one(env: dict[str, str], url: str, *, wait: bool = True) -> str:
    result = run_dq(["enqueue", *(["--wait"] if wait else []), url], env, timeout=60)
    assert result.stdout.split(), result.stderr
    return result.stdout.split()[0]


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def delete_queued_and_see_it(env: dict[str, str], up: Up) -> str:
    """A job queued where no worker takes it, deleted by `dq delete` as a process of its own:
    exactly one line of bin/up's output within 5 s."""
    elsewhere = dict(env, DQ_QUEUE="nobody-works-here")
    job_id = enqueue_one(elsewhere, "https://example.org/queued.flac", wait=False)
    result = run_dq(["delete", job_id], elsewhere)
    assert result.stdout.split() == [job_id, "deleted"], result.stderr
    deleted_at = time.monotonic()
    assert wait_until(lambda: lines_with(up.text(), f"{job_id} deleted") or None, 5), up.text()
    assert time.monotonic() - deleted_at < 5
    time.sleep(1)  # a duplicate would come within a tick or two
    lines = [line for line in up.text().splitlines() if job_id in line]
    assert len(lines_with(up.text(), "deleted")) == 1 and len(lines) == 2, lines  # enqueued, deleted
    return job_id


@pytest.mark.timeout(120)
def test_json_up_writes_only_json_lines_with_the_whole_trail(
    env: dict[str, str], fault_server: FaultServer, start_up: object
) -> None:
    env = up_env(env, "json")
    up: Up = start_up(env)  # type: ignore[operator]
    done = enqueue_one(env, with_credentials(fault_server.url("/bytes/20000/done.flac")))
    missing = enqueue_one(env, with_credentials(fault_server.url("/status/404/missing.flac")))
    deleted = delete_queued_and_see_it(env, up)
    assert wait_until(lambda: lines_with(up.text(), f"{missing} failed"), 5), up.text()
    assert up.stop() == 0
    text = up.text()
    parsed = []
    for line in text.splitlines():
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n{text}")
        assert {"ts", "level", "logger", "event"} <= parsed[-1].keys(), line
    loggers = {line["logger"] for line in parsed}
    assert {"dq.supervisor", "dq.events", "dq.dashboard", "rq.worker"} <= loggers, loggers
    trail = [(line["job_id"], line["event"]) for line in parsed if line["logger"] == "dq.events"]
    assert (done, "completed") in trail and (missing, "failed") in trail and (deleted, "deleted") in trail
    [failure] = [line for line in parsed if line.get("job_id") == missing and line["event"] == "failed"]
    assert failure["error"] == "HTTP 404 Not Found" and failure["level"] == "WARNING"
    assert len(lines_with(text, "HTTP 404")) == 1, "one line for the failure"
    assert "Traceback" not in text and SECRET not in text


@pytest.mark.timeout(120)
def test_text_up_an_expected_failure_is_one_line_and_deletions_are_in_the_log(
    env: dict[str, str], fault_server: FaultServer, start_up: object
) -> None:
    env = up_env(env, "text")
    up: Up = start_up(env)  # type: ignore[operator]
    missing = enqueue_one(env, with_credentials(fault_server.url("/status/404/missing.flac")))
    refused = enqueue_one(env, with_credentials(f"http://127.0.0.1:{free_port()}/refused.flac"))
    delete_queued_and_see_it(env, up)
    assert wait_until(lambda: lines_with(up.text(), f"{refused} failed"), 5), up.text()
    text = up.text()
    assert lines_with(text, "HTTP 404") == lines_with(text, f"job {missing} failed: HTTP 404 Not Found"), text
    assert len(lines_with(text, "HTTP 404")) == 1, text
    assert len([line for line in lines_with(text, refused) if "failed" in line]) == 1, text
    assert "Traceback" not in text, text
    assert SECRET not in text
    assert up.stop() == 0
