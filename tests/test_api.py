"""The HTTP API against a real `dq up` (embedded Redis, four `rq worker` processes, waitress),
plus its pure parts (rate limiter, request checks) in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from config import Settings
from jobs import keys
from jobs.api import FieldError, RateLimiter, enqueue_request
from jobs.dashboard import create_app
from jobs.openapi import document
from tests.faultserver import FaultServer, pattern_bytes
from tests.helpers import DQ, FAST_SETTINGS, LONG_JOB_TIMEOUT, ROOT, dashboard_env, free_port, run_dq, wait_until

TOKEN = "t0ken-for-scripts"
USER, PASSWORD = "admin", "s3cret-pass"
API = "api/download-queue"


class Up:
    def __init__(self, process: subprocess.Popen[bytes], base: str, env: dict[str, str], log: Path) -> None:
        self.process, self.base, self.env, self.log_path = process, base, env, log
        self.state = Path(env["DQ_STATE_DIR"])
        self.downloads = Path(env["DQ_DOWNLOAD_DIR"])
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {TOKEN}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url(path), timeout=10, **kwargs)

    def post(self, body: Any, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url(API), json=body, timeout=10, **kwargs)

    def redis(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.state / "redis.sock"))

    def queued(self) -> int:
        return int(self.redis().llen(keys.queue("downloads")))


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultServer]:
    server = FaultServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """One `dq up` for the module, as a user runs it: embedded Redis, credentials, a token."""
    home = tmp_path_factory.mktemp("api-up")
    env = {key: value for key, value in os.environ.items() if not key.startswith("DQ_") and key != "REDIS_URL"}
    env.update(FAST_SETTINGS)
    port = free_port()
    env.update(
        {
            "DQ_JOB_TIMEOUT": LONG_JOB_TIMEOUT,
            "DQ_DOWNLOAD_DIR": str(home / "downloads"),
            "DQ_STATE_DIR": str(home / "state"),
            "DQ_DASHBOARD_PORT": str(port),
            "DQ_DASHBOARD_USERNAME": USER,
            "DQ_DASHBOARD_PASSWORD": PASSWORD,
            "DQ_API_TOKEN": TOKEN,
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = home / "up.log"
    process = subprocess.Popen(
        [DQ, "up"], env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    service = Up(process, f"http://127.0.0.1:{port}/", env, log)

    def ready() -> bool:
        try:
            answer = service.get(f"{API}/stats")
        except requests.ConnectionError:
            return False
        return answer.status_code == 200 and answer.json()["worker"]["workers"] == 4

    try:
        assert wait_until(ready, 60, interval=0.3), service.log()
        yield service
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def job_of(up: Up, job_id: str) -> dict[str, Any]:
    answer = up.get(f"{API}/{job_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()["job"]


def ended(up: Up, job_id: str, timeout: float = 30) -> dict[str, Any]:
    assert wait_until(lambda: job_of(up, job_id)["state"] in ("completed", "failed"), timeout, interval=0.2)
    return job_of(up, job_id)


@pytest.mark.timeout(120)
def test_enqueue_follow_and_list_a_download(up: Up, faults: FaultServer) -> None:
    answer = up.post({"url": faults.url("/bytes/200000/api-one.flac"), "dest": "API"})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert set(body) == {"success", "jobId", "jobIds", "warning"}
    assert body["success"] is True and body["warning"] is None and body["jobIds"] == [body["jobId"]]
    job = ended(up, body["jobId"])
    assert job["state"] == "completed" and job["file"] == "api-one.flac" and job["dest"] == "API"
    assert (up.downloads / "API" / "api-one.flac").read_bytes() == pattern_bytes(200_000)

    listing = up.get(API).json()
    assert listing["success"] is True and listing["count"] == len(listing["jobs"])
    assert body["jobId"] in [view["id"] for view in listing["jobs"]]
    completed = up.get(API, params={"status": "completed"}).json()["jobs"]
    assert completed and all(view["state"] == "completed" for view in completed)
    assert job_of(up, body["jobId"][:8])["id"] == body["jobId"], "a short id works as in bin/delete"

    stats = up.get(f"{API}/stats").json()
    assert stats["success"] is True and stats["queue"]["completed"] >= 1 and stats["worker"]["maxConcurrent"] == 4
    cli = json.loads(run_dq(["stats", "--json"], up.env).stdout)
    assert {k: v for k, v in stats.items() if k != "success"}.keys() == cli.keys()


@pytest.mark.timeout(120)
def test_album_and_urls_enqueue_as_the_cli_does(up: Up, faults: FaultServer) -> None:
    urls = [faults.url(f"/bytes/1000/track{n}.mp3") for n in (1, 2)]
    album = up.post({"urls": urls, "album": "Blue", "dest": "Miles"}).json()
    assert album["jobId"].startswith("album-") and len(album["jobIds"]) == 3
    view = ended(up, album["jobId"])
    assert view["kind"] == "album" and view["state"] == "completed" and view["tracks"]["completed"] == 2
    assert sorted(os.listdir(up.downloads / "Miles" / "Blue")) == ["track1.mp3", "track2.mp3"]

    again = up.post(
        {
            "urls": [
                faults.url("/slow/1200000/api-twice.flac?seconds=60"),
                faults.url("/slow/1200000/api-twice.flac?seconds=60"),
            ]
        }
    ).json()
    assert len(set(again["jobIds"])) == 1, "the same download twice in one request is one job"
    assert up.session.delete(up.url(f"{API}/{again['jobId']}"), timeout=30).json()["success"] is True


@pytest.mark.timeout(120)
def test_delete_cancel_and_retry(up: Up, faults: FaultServer) -> None:
    running = up.post({"url": faults.url("/slow/1200000/api-slow.flac?seconds=60")}).json()["jobId"]
    assert wait_until(lambda: job_of(up, running)["state"] == "processing", 20, interval=0.2)
    deleted = up.session.delete(up.url(f"{API}/{running}"), timeout=30)
    assert deleted.status_code == 200 and deleted.json() == {"success": True, "result": "cancelled"}
    gone = up.get(f"{API}/{running}")
    assert gone.status_code == 404 and gone.json() == {"success": False, "error": "not found"}
    assert not list(up.downloads.glob("api-slow.flac*")), "no partial file is left"

    failing = up.post({"url": faults.url("/status/404/api-missing.flac")}).json()["jobId"]
    assert ended(up, failing)["error"] == "HTTP 404 Not Found"
    retried = up.session.patch(up.url(f"{API}/{failing}"), json={"action": "retry"}, timeout=10)
    assert retried.status_code == 200 and retried.json() == {"success": True, "result": "retried"}
    ended(up, failing)
    bad = up.session.patch(up.url(f"{API}/{failing}"), json={"action": "explode"}, timeout=10)
    assert bad.status_code == 400 and bad.json()["field"] == "action"
    cancel = up.session.patch(up.url(f"{API}/{failing}"), json={"action": "cancel"}, timeout=30)
    assert cancel.json() == {"success": True, "result": "deleted"}
    for method in ("delete", "patch"):
        missing = up.session.request(method, up.url(f"{API}/{'0' * 32}"), json={"action": "retry"}, timeout=10)
        assert missing.status_code == 404 and missing.json() == {"success": False, "error": "not found"}


BAD_BODIES = [
    ({"url": "ftp://example.com/a.mp3"}, "url"),
    ({"urls": ["https://example.com/a.mp3", "not a url"]}, "urls[1]"),
    ({"urls": "https://example.com/a.mp3"}, "urls"),
    ({"urls": []}, "urls"),
    ({"url": "https://example.com/a.mp3", "dest": "../../etc"}, "dest"),
    ({"url": "https://example.com/a.mp3", "dest": "/etc"}, "dest"),
    ({"url": "https://example.com/a.mp3", "name": "../x.mp3"}, "name"),
    ({"url": "https://example.com/a.mp3", "colour": "red"}, "colour"),
    ({"url": "https://example.com/a.mp3", "force": "yes"}, "force"),
    ({"url": 7}, "url"),
    ({"urls": ["https://example.com/a.mp3"], "album": "A", "name": "x.mp3"}, "name"),
    ({"playlist": "https://example.com/p.m3u", "url": "https://example.com/a.mp3"}, "playlist"),
    ({}, "url"),
    ([1, 2], "body"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("body", "field_name"), BAD_BODIES)
def test_a_refused_field_is_named_and_nothing_is_enqueued(up: Up, body: Any, field_name: str) -> None:
    before = up.get(API).json()["count"]
    answer = up.post(body)
    assert answer.status_code == 400, answer.text
    refusal = answer.json()
    assert refusal["success"] is False and refusal["field"] == field_name and refusal["error"]
    assert "--" not in refusal["error"], "the API names fields, not the command line's options"
    assert up.get(API).json()["count"] == before


@pytest.mark.timeout(60)
def test_body_errors_auth_and_origin(up: Up) -> None:
    before = up.get(API).json()["count"]
    raw = up.session.post(up.url(API), data=b"{not json", headers={"Content-Type": "application/json"}, timeout=10)
    assert raw.status_code == 400 and raw.json()["field"] == "body"
    huge = {"urls": ["https://example.com/" + "a" * 1000 + f"{n}.mp3" for n in range(70)]}
    too_big = up.post(huge)
    assert too_big.status_code == 413 and too_big.json()["success"] is False
    foreign = up.post({"url": "https://example.com/a.mp3"}, headers={"Origin": "http://evil.test"})
    assert foreign.status_code == 403 and foreign.json()["success"] is False
    assert up.get(API).json()["count"] == before, "nothing was enqueued"

    anonymous = requests.get(up.url(API), timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["success"] is False
    wrong = requests.get(up.url(API), headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    assert requests.get(up.url(API), auth=(USER, PASSWORD), timeout=10).status_code == 200
    assert requests.get(up.url(""), auth=(USER, PASSWORD), timeout=10).status_code == 200, "the dashboard too"
    unknown = up.get("api/nothing-here")
    assert unknown.status_code == 404 and unknown.json() == {"success": False, "error": "not found"}
    wrong_method = up.session.put(up.url(API), json={}, timeout=10)
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["Allow"]
    assert up.get(API, params={"status": "nonsense"}).json()["field"] == "status"


@pytest.mark.timeout(60)
def test_served_by_waitress_not_the_development_server(up: Up) -> None:
    answer = up.get(f"{API}/stats")
    assert answer.headers["Server"] == "download-queue"
    assert "Werkzeug" not in up.log()


# --- a dashboard alone (no workers): rate limit and backpressure -------------------------------
@pytest.mark.timeout(60)
def test_rate_limit_answers_429_with_retry_after(env: dict[str, str], start_dashboard: Any) -> None:
    dashboard = start_dashboard(dashboard_env(env, DQ_API_RATE="5"))
    answers = [requests.get(dashboard.url(f"{API}/stats"), timeout=10) for _ in range(7)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
    assert answers[-1].json()["success"] is False
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
    assert requests.get(dashboard.url(""), timeout=10).status_code == 200, "dashboard pages are not counted"


@pytest.mark.timeout(60)
def test_backpressure_for_api_and_cli(env: dict[str, str], start_dashboard: Any, connection: redis.Redis) -> None:
    limits = {"DQ_QUEUE_WARN": "1", "DQ_QUEUE_MAX": "3"}
    dashboard = start_dashboard(dashboard_env(env, **limits))
    url = dashboard.url(API)
    first = requests.post(url, json={"urls": ["https://example.com/1.mp3", "https://example.com/2.mp3"]}, timeout=10)
    assert first.status_code == 201 and first.json()["warning"] == "Queue is long (2 queued, warning above 1)"
    full = requests.post(url, json={"urls": ["https://example.com/3.mp3", "https://example.com/4.mp3"]}, timeout=10)
    assert full.status_code == 503
    assert full.json() == {"success": False, "error": "Queue full (2 queued, limit 3)"}
    album = requests.post(url, json={"urls": ["https://example.com/5.mp3"] * 2, "album": "X"}, timeout=10)
    assert album.status_code == 503
    assert connection.llen(keys.queue("downloads")) == 2, "nothing of a refused enqueue was queued"

    cli_env = {**env, **limits}
    refused = run_dq(["enqueue", "https://example.com/6.mp3", "https://example.com/7.mp3"], cli_env)
    assert refused.returncode == 1 and "Queue full (2 queued, limit 3)" in refused.stderr and not refused.stdout
    one_more = run_dq(["enqueue", "https://example.com/8.mp3"], cli_env)
    assert one_more.returncode == 0 and "warning: Queue is long (3 queued, warning above 1)" in one_more.stderr
    assert connection.llen(keys.queue("downloads")) == 3


# --- pure parts -------------------------------------------------------------------------------
@pytest.mark.timeout(10)
def test_rate_limiter_slides_its_window_per_client() -> None:
    limiter = RateLimiter(limit=2, window=60)
    assert limiter.admit("a", 0) is None and limiter.admit("a", 10) is None
    assert limiter.admit("a", 20) == pytest.approx(40)
    assert limiter.admit("b", 20) is None, "another client has its own budget"
    assert limiter.admit("a", 60.5) is None, "the first request left the window"
    assert limiter.admit("a", 61) == pytest.approx(9)
    limiter.admit("c", 200)
    assert set(limiter._seen) == {"c"}, "clients with nothing in the window are forgotten"


@pytest.mark.timeout(10)
def test_enqueue_request_mirrors_the_cli_checks() -> None:
    wanted = enqueue_request({"urls": ["https://example.com/a.mp3"], "dest": "x/./y", "force": True})
    assert wanted.urls == ["https://example.com/a.mp3"] and wanted.url_field == "urls"
    assert wanted.dest == "x/y" and wanted.force is True and wanted.album is None
    with pytest.raises(FieldError) as refused:
        enqueue_request({"url": "https://example.com/a.mp3", "album": ""})
    assert refused.value.field == "album"


@pytest.mark.timeout(10)
def test_openapi_document_covers_every_route(settings: Settings, connection: redis.Redis) -> None:
    app = create_app(settings, connection)
    paths = document()["paths"]
    routes = {
        (str(rule).replace("<path:raw_id>", "{id}"), method.lower())
        for rule in app.url_map.iter_rules()
        if str(rule).startswith("/api/") or str(rule) in ("/health", "/metrics")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    documented = {(path, method) for path, item in paths.items() for method in item if method != "parameters"}
    assert routes == documented


@pytest.mark.timeout(60)
def test_health_and_metrics_on_the_running_service(up: Up, faults: FaultServer) -> None:
    health = up.get("health")
    assert health.status_code == 200, health.text
    report = health.json()
    assert report["status"] in ("ok", "warn") and {"redis", "heartbeat", "workers"} <= set(report["checks"])
    assert report["checks"]["workers"]["ok"] is True
    assert requests.get(up.url("health"), timeout=10).status_code == 401, "the same auth as the API"

    job = up.post({"url": faults.url("/bytes/4321/metrics.flac")}).json()["jobId"]
    ended(up, job)
    scrape = up.get("metrics")
    assert scrape.status_code == 200 and scrape.headers["Content-Type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scrape.text)
        for sample in family.samples
    }
    assert samples[("dq_workers", ())] == 4
    assert samples[("dq_bytes_downloaded_total", ())] >= 4321
    assert samples[("dq_jobs", (("state", "completed"),))] >= 1
