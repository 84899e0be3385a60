"""The dashboard over plain HTTP: `dq dashboard` as a real process, real workers, real Redis.

Each test here fails against rq-dashboard 0.9.0's blueprint served as installed (workers.json
500 while busy, job pages 500, requeue-all on GET, Delete leaving the download running).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from rq.job import Job, JobStatus
from rq.queue import Queue

from config import Settings
from jobs.connection import SERIALIZER
from jobs.enqueue import TRACK_FUNC
from jobs.stats import stats
from tests.faultserver import FaultServer
from tests.helpers import (
    PASSWORD,
    SLOW_PATH,
    USER,
    Dashboard,
    Service,
    dashboard_env,
    enqueue_track,
    listed,
    long_env,
    run_dq,
    status_of,
    wait_status,
)

# requests would send str credentials as Latin-1; browsers send UTF-8 (as our realm asks).
CREDENTIALS = (USER.encode(), PASSWORD.encode())
Credentials = tuple[str | bytes, str | bytes]
# HTTP timeout for each request to the dashboard: the two CPU cores are shared.
HTTP_TIMEOUT = 20


def get(dashboard: Dashboard, path: str, auth: Credentials | None = None) -> requests.Response:
    return requests.get(dashboard.url(path), auth=auth, timeout=HTTP_TIMEOUT, allow_redirects=False)


def post(dashboard: Dashboard, path: str, auth: Credentials | None = None, **kwargs: Any) -> requests.Response:
    return requests.post(dashboard.url(path), auth=auth, timeout=HTTP_TIMEOUT, allow_redirects=False, **kwargs)


# --- start-up checks ----------------------------------------------------------------------------
def test_non_loopback_bind_without_credentials_exits_2(env: dict[str, str]) -> None:
    result = run_dq(["dashboard"], dashboard_env(env, DQ_DASHBOARD_HOST="0.0.0.0"), timeout=30)
    assert result.returncode == 2, result.stderr
    assert "DQ_DASHBOARD_HOST=0.0.0.0 is not a loopback address" in result.stderr
    assert "DQ_DASHBOARD_USERNAME and DQ_DASHBOARD_PASSWORD" in result.stderr


def test_a_blank_password_exits_2(env: dict[str, str]) -> None:
    result = run_dq(["dashboard"], dashboard_env(env, auth=True, DQ_DASHBOARD_PASSWORD=" "), timeout=30)
    assert result.returncode == 2, result.stderr
    assert "DQ_DASHBOARD_PASSWORD must not be blank" in result.stderr


def test_unreachable_redis_exits_3(env: dict[str, str], tmp_path: Path) -> None:
    result = run_dq(["dashboard"], dashboard_env(env, REDIS_URL=f"unix://{tmp_path}/nothing.sock"), timeout=30)
    assert result.returncode == 3, result.stderr
    assert "Redis is not reachable" in result.stderr


def test_non_loopback_bind_with_credentials_serves_behind_auth(
    env: dict[str, str], start_dashboard: Callable[..., Dashboard]
) -> None:
    dashboard = start_dashboard(dashboard_env(env, auth=True, DQ_DASHBOARD_HOST="0.0.0.0"))
    assert get(dashboard, "0/data/queues.json").status_code == 401
    assert get(dashboard, "0/data/queues.json", auth=CREDENTIALS).status_code == 200


# --- authentication -----------------------------------------------------------------------------
GET_ENDPOINTS = [
    "",
    "0/view/workers",
    "0/view/jobs",
    "0/view/jobs/downloads/queued/8/asc/1",
    "0/view/job/{job_id}",
    "0/data/queues.json",
    "0/data/workers.json",
    "0/data/jobs/downloads/queued/8/asc/1.json",
    "0/data/jobs/downloads/failed/8/asc/1.json",
    "0/data/job/{job_id}.json",
    "static/css/main.css",
    "favicon.ico",
]
POST_ENDPOINTS = [
    "job/{job_id}/delete",
    "job/{job_id}/requeue",
    "requeue/downloads",
    "queue/downloads/queued/empty",
    "queue/downloads/compact",
]


def test_every_endpoint_needs_credentials(
    env: dict[str, str], settings: Settings, connection: redis.Redis, start_dashboard: Callable[..., Dashboard]
) -> None:
    # No workers: the job stays queued, so every request sees the same state.
    job_id = enqueue_track(connection, settings, "http://127.0.0.1:9/nothing.flac")
    dashboard = start_dashboard(dashboard_env(env, auth=True))
    wrong: list[Credentials] = [
        (USER, "wrong"),
        ("someone", PASSWORD.encode()),
        (USER, (PASSWORD + "x").encode()),
        ("", ""),
    ]

    for template in GET_ENDPOINTS:
        path = template.format(job_id=job_id)
        refused = get(dashboard, path)
        assert refused.status_code == 401, path
        assert refused.headers["WWW-Authenticate"].startswith("Basic realm=")
        for credentials in wrong:
            assert get(dashboard, path, auth=credentials).status_code == 401, (path, credentials)
        allowed = get(dashboard, path, auth=CREDENTIALS)
        assert allowed.status_code == 200, (path, allowed.text[:500])
        if path.endswith(".json"):
            assert isinstance(allowed.json(), dict)

    for template in POST_ENDPOINTS:
        path = template.format(job_id=job_id)
        assert post(dashboard, path).status_code == 401, path
        assert post(dashboard, path, auth=(USER, "wrong")).status_code == 401, path
    # Nothing the refused requests asked for happened.
    assert status_of(connection, job_id) == JobStatus.QUEUED
    assert Queue(settings.queue_name, connection=connection).get_job_ids() == [job_id]

    # With credentials the harmless ones work; the JSON shapes are rq-dashboard's.
    compacted = post(dashboard, "queue/downloads/compact", auth=CREDENTIALS)
    assert compacted.status_code == 200 and compacted.json() == {"status": "OK"}
    queues = get(dashboard, "0/data/queues.json", auth=CREDENTIALS).json()["queues"]
    assert [(q["name"], q["count"]) for q in queues] == [("downloads", 1)]
    # The navbar's Jobs link opens our queue, not RQ's empty "default" one.
    jobs_page = get(dashboard, "0/view/jobs", auth=CREDENTIALS).text
    assert 'id="select-queue" title="Queue name" value="downloads"' in jobs_page
    job = get(dashboard, f"0/data/job/{job_id}.json", auth=CREDENTIALS).json()
    assert (job["id"], job["status"], job["description"]) == (job_id, "queued", "http://127.0.0.1:9/nothing.flac")

    # A page on another site cannot make the user's browser post here (basic auth is cached).
    cross_site = post(dashboard, "requeue/downloads", auth=CREDENTIALS, headers={"Origin": "http://evil.test"})
    assert cross_site.status_code == 403


def test_missing_job_unknown_registry_and_instance_are_404(
    env: dict[str, str], start_dashboard: Callable[..., Dashboard]
) -> None:
    dashboard = start_dashboard(dashboard_env(env))
    for path in (
        "0/view/job/no-such-job",
        "0/data/job/no-such-job.json",
        "0/data/jobs/downloads/nonsense/8/asc/1.json",
        "1/data/queues.json",
    ):
        assert get(dashboard, path).status_code == 404, path
    assert post(dashboard, "job/no-such-job/requeue").status_code == 404


# --- live workers -------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_workers_json_while_a_worker_is_busy(
    env: dict[str, str],
    settings: Settings,
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    start_dashboard: Callable[..., Dashboard],
) -> None:
    environment = long_env(env)
    start_service(environment)
    dashboard = start_dashboard(dashboard_env(environment))
    job_id = enqueue_track(connection, settings, fault_server.url(SLOW_PATH.format(name="busy")))
    assert fault_server.wait_until(lambda s: s.active == 1, timeout=30), "the download never started"

    response = get(dashboard, "0/data/workers.json")
    assert response.status_code == 200, response.text[:2000]
    workers = response.json()["workers"]
    assert len(workers) == 4
    busy = [w for w in workers if w["state"] == "busy"]
    assert len(busy) == 1, workers
    assert busy[0]["current_job"]["job_id"] == job_id
    assert TRACK_FUNC in busy[0]["current_job"]["call_string"]
    assert [w["current_job"] for w in workers if w["state"] != "busy"] == ["idle"] * 3
    assert all(w["queues"] == ["downloads"] for w in workers)
    # The workers page itself renders too.
    assert get(dashboard, "0/view/workers").status_code == 200


@pytest.mark.timeout(180)
def test_job_page_for_jobs_in_every_state(
    env: dict[str, str],
    settings: Settings,
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    start_dashboard: Callable[..., Dashboard],
) -> None:
    environment = long_env(env)
    start_service(environment)
    dashboard = start_dashboard(dashboard_env(environment))
    finished = enqueue_track(connection, settings, fault_server.url("/bytes/2000/done.flac"))
    failed = enqueue_track(connection, settings, fault_server.url("/status/404"))
    wait_status(connection, finished, JobStatus.FINISHED)
    wait_status(connection, failed, JobStatus.FAILED)
    # Four slow downloads fill the four workers; the fifth job waits in the queue.
    started = [enqueue_track(connection, settings, fault_server.url(SLOW_PATH.format(name=f"s{i}"))) for i in range(4)]
    assert fault_server.wait_until(lambda s: s.active == 4, timeout=30), "four downloads never ran"
    queued = enqueue_track(connection, settings, fault_server.url("/bytes/2000/later.flac"))
    # A job with a dependency (0.9.0 called .decode() on RQ 3.0's str dependency ids: 500).
    dependent = (
        Queue(settings.queue_name, connection=connection, serializer=SERIALIZER)
        .enqueue(
            TRACK_FUNC,
            kwargs={"url": fault_server.url("/bytes/10/dep.flac"), "dest": ""},
            depends_on=started[0],
        )
        .id
    )

    expected = {
        finished: "finished",
        failed: "failed",
        started[0]: "started",
        queued: "queued",
        dependent: "deferred",
    }
    for job_id, status in expected.items():
        page = get(dashboard, f"0/view/job/{job_id}")
        assert page.status_code == 200, (status, page.text[:2000])
        assert job_id in page.text
        data = get(dashboard, f"0/data/job/{job_id}.json")
        assert data.status_code == 200, (status, data.text[:2000])
        details = data.json()
        assert details["status"] == status, details
        assert details["origin"] == "downloads"
    failed_details = get(dashboard, f"0/data/job/{failed}.json").json()
    assert failed_details["exc_info"].splitlines()[0] == "HTTP 404 Not Found"
    finished_details = get(dashboard, f"0/data/job/{finished}.json").json()
    assert finished_details["result"]["path"] == "done.flac"
    dependent_details = get(dashboard, f"0/data/job/{dependent}.json").json()
    assert dependent_details["depends_on"] == [started[0]]
    assert dependent_details["depends_on_status"] == ["active"]

    # Album tracks and playlist jobs too: every job in Redis gets a working page.
    fault_server.add_file("mix.m3u", b"#EXTM3U\n/bytes/10/one.flac\n")
    for args in (
        ["--album", "Kind of Blue", fault_server.url("/bytes/10/two.flac")],
        ["--playlist", fault_server.url("/files/mix.m3u")],
    ):
        result = run_dq(["enqueue", *args], environment)
        assert result.returncode == 0, result.stderr
    every_job = {
        key.decode().removeprefix("rq:job:") for key in connection.scan_iter("rq:job:*") if key.count(b":") == 2
    }
    assert len(every_job) >= len(expected) + 2
    for job_id in sorted(every_job):
        assert get(dashboard, f"0/view/job/{job_id}").status_code == 200, job_id
        assert get(dashboard, f"0/data/job/{job_id}.json").status_code == 200, job_id


@pytest.mark.timeout(180)
def test_requeue_all_needs_post(
    env: dict[str, str],
    settings: Settings,
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    start_dashboard: Callable[..., Dashboard],
) -> None:
    start_service(env)
    dashboard = start_dashboard(dashboard_env(env))
    failed = enqueue_track(connection, settings, fault_server.url("/status/404"))
    wait_status(connection, failed, JobStatus.FAILED)
    requests_before = len(fault_server.requests)

    for _ in range(3):
        response = get(dashboard, "requeue/downloads")
        assert response.status_code == 405
        assert response.headers["Allow"] == "POST"
    time.sleep(2 * settings.cleanup_interval + 1)  # room for anything a requeue would start
    assert status_of(connection, failed) == JobStatus.FAILED
    assert stats(connection, settings)["queue"]["failed"] == 1
    assert len(fault_server.requests) == requests_before

    # The button's POST still works: the job runs again (and fails again on the same 404).
    response = post(dashboard, "requeue/downloads")
    assert response.status_code == 200 and response.json() == {"status": "OK", "count": 1}
    assert fault_server.wait_until(lambda s: len(s.requests) > requests_before, timeout=30)
    wait_status(connection, failed, JobStatus.FAILED)


@pytest.mark.timeout(180)
def test_delete_stops_a_running_download(
    env: dict[str, str],
    settings: Settings,
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    start_dashboard: Callable[..., Dashboard],
) -> None:
    environment = long_env(env)
    start_service(environment)
    dashboard = start_dashboard(dashboard_env(environment))
    job_id = enqueue_track(connection, settings, fault_server.url(SLOW_PATH.format(name="doomed")))
    assert fault_server.wait_until(lambda s: s.active == 1, timeout=30), "the download never started"
    assert status_of(connection, job_id) == JobStatus.STARTED

    asked = time.monotonic()
    response = post(dashboard, f"job/{job_id}/delete")
    assert response.status_code == 200, response.text[:2000]
    assert response.json() == {"status": "OK", "outcome": "cancelled"}

    # The worker hung up on the server: the download really stopped, not just the job record.
    assert fault_server.wait_until(lambda s: len(s.disconnects) == 1, timeout=20), fault_server.requests
    path, when = fault_server.disconnects[0]
    assert path.endswith("/doomed.flac") and when >= asked
    assert fault_server.wait_until(lambda s: s.active == 0, timeout=10)
    assert not Job.exists(job_id, connection=connection)
    # ... and it stays gone: nothing the dying download wrote brought it back.
    time.sleep(2 * settings.cleanup_interval + 1)
    assert not Job.exists(job_id, connection=connection)
    assert job_id not in listed(environment)
    assert not list(settings.download_dir.rglob("*doomed*"))
