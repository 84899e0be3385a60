"""Credentials in a URL (`user:password@`) are used to download and shown nowhere: not by
`bin/jobs` (table, --json, --history), not in the service's log (ours and RQ's lines), not in
an event, a stored description, the dashboard's JSON or a worker's command line."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from config import Settings
from jobs import keys
from jobs.dashboard import create_app
from tests.faultserver import FaultServer
from tests.helpers import SLOW_PATH, Service, enqueue, long_env, run_dq, wait_listed_ended, wait_until

pytestmark = pytest.mark.timeout(90)
SECRET = "s3cret-pw"


def everything_redis_holds_but_the_job_args(connection: redis.Redis, job_id: str) -> str:
    fields = {k.decode(): v for k, v in connection.hgetall(keys.job(job_id)).items()}
    fields.pop("data")  # the job's own arguments: it needs the password to download
    events = connection.xrange(keys.EVENTS)
    return repr(fields) + repr(events)


def test_a_password_in_a_url_is_used_and_never_shown(
    tmp_path: Path,
    env: dict[str, str],
    connection: redis.Redis,
    settings: Settings,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
) -> None:
    service = start_service(env)
    url = fault_server.url("/bytes/2000/song.mp3").replace("http://", f"http://listener:{SECRET}@")
    failing = fault_server.url("/status/404/gone.mp3").replace("http://", f"http://listener:{SECRET}@")
    [job_id] = enqueue(env, url)
    [failed_id] = enqueue(env, failing)
    ended = wait_listed_ended(env, [job_id, failed_id], timeout=40)
    assert ended[job_id]["state"] == "completed" and ended[failed_id]["state"] == "failed"
    sent = {record.path: record.headers.get("Authorization") for record in fault_server.request_log}
    assert sent["/bytes/2000/song.mp3"] == "Basic " + base64.b64encode(f"listener:{SECRET}".encode()).decode()

    shown = {
        "jobs": run_dq(["jobs"], env).stdout,
        "jobs --all": run_dq(["jobs", "--all"], env).stdout,
        "jobs --json": run_dq(["jobs", "--json"], env).stdout,
        "history": run_dq(["jobs", "--history", job_id], env).stdout,
        "history of all": run_dq(["jobs", "--history"], env).stdout,
        "service log": service.log(),
        "redis": everything_redis_holds_but_the_job_args(connection, job_id)
        + everything_redis_holds_but_the_job_args(connection, failed_id),
    }
    client = create_app(settings, connection).test_client()
    pages = [f"/0/data/job/{job_id}.json", f"/0/data/job/{failed_id}.json", "/0/data/workers.json"]
    pages += [f"/0/data/jobs/downloads/{registry}/50/asc/1.json" for registry in ("finished", "failed")]
    pages += [f"/0/view/job/{job_id}"]
    for path in pages:
        answer = client.get(path)
        assert answer.status_code == 200, path
        shown[path] = answer.get_data(as_text=True)
    assert json.loads(shown["jobs --json"])[0]["url"].startswith("http://***@127.0.0.1:")
    assert "listener" not in shown["jobs --json"]
    leaks = [where for where, text in shown.items() if SECRET in text]
    assert leaks == []


def test_a_redis_password_is_not_on_a_workers_command_line() -> None:
    from supervisor.pool import WorkerPool

    pool = WorkerPool(Settings(redis_url=f"redis://:{SECRET}@redis.internal:6379/0"), env={})
    assert SECRET not in " ".join(pool.command("dq.host.1.1"))


def test_a_busy_workers_call_string_keeps_no_password(
    env: dict[str, str],
    connection: redis.Redis,
    settings: Settings,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
) -> None:
    start_service(long_env(env), wait_workers=1)
    url = fault_server.url(SLOW_PATH.format(name="busy")).replace("http://", f"http://listener:{SECRET}@")
    [job_id] = enqueue(env, url)
    client = create_app(settings, connection).test_client()

    def busy_rows() -> str:
        text = client.get("/0/data/workers.json").get_data(as_text=True)
        return text if job_id in text else ""

    assert wait_until(busy_rows, 20)
    text = busy_rows()
    assert "call_string" in text and "***@127.0.0.1" in text and SECRET not in text
    assert SECRET not in client.get(f"/0/data/job/{job_id}.json").get_data(as_text=True)
    assert SECRET not in client.get("/0/data/jobs/downloads/started/50/asc/1.json").get_data(as_text=True)
