"""The dashboard against hostile data and hostile pages: `dq dashboard` as a real process.

- Stored XSS: job and worker fields come from download servers, URLs and anyone who can write
  Redis; rq-dashboard 0.9.0 pasted several of them into its pages as HTML. In real Chromium
  they must show as text, run nothing and load nothing.
- Content-Security-Policy and friends on every response, and pages without inline script.
- DNS rebinding: a request naming another Host is refused before anything else.
- Compact on an empty or unknown queue: 200 or 404, not 500.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import zlib
from base64 import b64encode
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest
import redis
import requests
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.utils import utcformat
from rq.worker import BaseWorker

from config import Settings
from jobs import keys
from jobs.connection import SERIALIZER
from jobs.enqueue import TRACK_FUNC
from jobs.worker import DownloadWorker
from tests.browser import chromium_page, shows
from tests.faultserver import FaultServer
from tests.helpers import (
    PASSWORD,
    USER,
    Dashboard,
    Service,
    dashboard_env,
    enqueue_track,
    long_env,
    status_of,
    wait_status,
)

CREDENTIALS = (USER.encode(), PASSWORD.encode())  # UTF-8, as browsers send them
HTTP_TIMEOUT = 20

# Every payload that would load something names a /dq-xss-... path: no request may ask for one.
MARKER = "dq-xss"
HOSTILE_REASON = f"<img src=/{MARKER}-reason onerror=alert('reason')>"
# In a URL path (RQ cuts call-string arguments at 75 characters, so it comes early).
HOSTILE_URL_PATH = "/slow/1200000/<img/src/onerror=alert(2)>.flac?seconds=60"
HOSTILE = {
    "description": f"<img src=/{MARKER}-description onerror=alert('description')>",
    "origin": f"<svg/onload=alert('origin')><img src=/{MARKER}-origin>",
    "meta": f"<img src=/{MARKER}-meta onerror=alert('meta')>",
    "exc_info": f"Traceback (most recent call last):\n<img src=/{MARKER}-exc onerror=alert('exc')>\n",
    "worker": f"<img src=/{MARKER}-worker onerror=alert('worker')>",
    "version": f'"><img src=/{MARKER}-version onerror=alert(1)>',
    "queue": f"<img src=/{MARKER}-queue onerror=alert('queue')>",
}


def get(dashboard: Dashboard, path: str, auth: Any = CREDENTIALS, **kwargs: Any) -> requests.Response:
    return requests.get(dashboard.url(path), auth=auth, timeout=HTTP_TIMEOUT, allow_redirects=False, **kwargs)


def post(dashboard: Dashboard, path: str, auth: Any = CREDENTIALS, **kwargs: Any) -> requests.Response:
    return requests.post(dashboard.url(path), auth=auth, timeout=HTTP_TIMEOUT, allow_redirects=False, **kwargs)


def port_of(dashboard: Dashboard) -> str:
    return dashboard.base_url.rstrip("/").rsplit(":", 1)[1]


# --- hostile data -------------------------------------------------------------------------------
class HostileReasonHandler(http.server.BaseHTTPRequestHandler):
    """Answers everything `599 <img ...>`: the reason phrase is the server's to choose."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(599, HOSTILE_REASON)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test's output is not the place for its access log


@contextmanager
def hostile_reason_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostileReasonHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def write_hostile_job(connection: redis.Redis, settings: Settings, job_id: str, origin: str) -> str:
    """A failed job as someone with write access to Redis could leave it: RQ's own fields,
    hostile text in the ones the dashboard shows (its latest result carries the error)."""
    job = Job.create(
        TRACK_FUNC,
        kwargs={"url": "http://127.0.0.1:9/x.flac", "dest": ""},
        connection=connection,
        serializer=SERIALIZER,
        id=job_id,
    )
    fields = job.to_dict()
    fields.update(
        description=HOSTILE["description"],
        origin=origin,
        status=JobStatus.FAILED.value,
        ended_at=utcformat(datetime.now(UTC)),
        meta=SERIALIZER.dumps({"note": HOSTILE["meta"]}),
    )
    connection.hset(keys.job(job.id), mapping=fields)
    connection.zadd(keys.registry(FailedJobRegistry, settings.queue_name), {job.id: time.time() + 3600})
    error = b64encode(zlib.compress(HOSTILE["exc_info"].encode())).decode()
    connection.xadd(keys.results(job.id), {"type": Result.Type.FAILED.value, "exc_string": error})
    return job.id


def write_hostile_worker_and_queue(connection: redis.Redis) -> None:
    """A registered worker (of another host, so nothing here reaps it) on a registered queue."""
    now = utcformat(datetime.now(UTC))
    key = keys.worker(HOSTILE["worker"])
    connection.hset(
        key,
        mapping={
            "birth": now,
            "last_heartbeat": now,
            "queues": HOSTILE["queue"],
            "state": "idle",
            "version": HOSTILE["version"],
            "python_version": HOSTILE["version"],
            "hostname": "elsewhere.invalid",
            "pid": "1",
        },
    )
    connection.sadd(BaseWorker.redis_workers_keys, key)
    connection.sadd(Queue.redis_queues_keys, keys.queue(HOSTILE["queue"]))


# --- the browser --------------------------------------------------------------------------------
@pytest.fixture
def watched_page() -> Iterator[tuple[Any, dict[str, list[str]]]]:
    """A headless Chromium page with our credentials, and what it did: dialogs it opened, URLs
    it requested, Content-Security-Policy violations it reported."""
    seen: dict[str, list[str]] = {"dialogs": [], "requests": [], "csp": []}

    def on_dialog(dialog: Any) -> None:
        seen["dialogs"].append(dialog.message)
        dialog.dismiss()

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text:
            seen["csp"].append(message.text)

    with chromium_page() as page:
        page.on("dialog", on_dialog)
        page.on("request", lambda request: seen["requests"].append(request.url))
        page.on("console", on_console)
        yield page, seen


def cells(page: Any, table: str, role: str) -> list[list[str]]:
    rows = page.locator(f"table#{table} tr[data-role={role}]")
    return [[text.strip() for text in rows.nth(i).locator("td").all_inner_texts()] for i in range(rows.count())]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_hostile_job_and_worker_fields_show_as_text_in_a_real_browser(
    env: dict[str, str],
    settings: Settings,
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    start_dashboard: Callable[..., Dashboard],
    watched_page: tuple[Any, dict[str, list[str]]],
) -> None:
    page, seen = watched_page
    environment = long_env(env)
    start_service(environment)
    dashboard = start_dashboard(dashboard_env(environment, auth=True))
    with hostile_reason_server() as server:
        refused_url = f"{server}/song.mp3"
        refused = enqueue_track(connection, settings, refused_url)
        wait_status(connection, refused, JobStatus.FAILED)
    # Running while we look: the workers page shows its call string, the started list its URL.
    hostile_url = fault_server.url(HOSTILE_URL_PATH)
    running = enqueue_track(connection, Settings.from_env(environment), hostile_url)
    assert fault_server.wait_until(lambda s: s.active == 1, timeout=30), "the download never started"
    handwritten = write_hostile_job(connection, settings, "handwritten", settings.queue_name)
    # RQ lists a job under the queue its origin names, so this one shows only on its own page.
    foreign = write_hostile_job(connection, settings, "handwritten-origin", HOSTILE["origin"])
    write_hostile_worker_and_queue(connection)

    page.goto(dashboard.url(""))
    expected_queues = sorted(["downloads", HOSTILE["queue"]])
    assert shows(lambda: sorted(row[0] for row in cells(page, "queues", "queue")), expected_queues) == expected_queues

    page.goto(dashboard.url("0/view/workers"))
    planted = [HOSTILE["worker"], "idle", HOSTILE["queue"]]
    assert shows(lambda: [row for row in cells(page, "workers", "worker") if row[0] == planted[0]], [planted]) == [
        planted
    ]
    busy = [row[1] for row in cells(page, "workers", "worker") if row[1] != "idle"]
    assert len(busy) == 1 and "<img/src/onerror=alert(2)>" in busy[0], busy
    names = page.locator("table#workers tr[data-role=worker] td:first-child")
    titles = [names.nth(i).get_attribute("title") for i in range(names.count())]
    assert f"RQ {HOSTILE['version']} / Python {HOSTILE['version']}" in titles, titles

    def listed_rows() -> dict[str, tuple[str, str]]:
        """job id → (description, error) as the list shows them."""
        rows = page.locator("table#jobs tr[data-role=job]")
        shown = {}
        for i in range(rows.count()):
            row = rows.nth(i)
            errors = row.locator("pre.exc_info")
            error = errors.inner_text().strip() if errors.count() else ""
            shown[row.get_attribute("data-job-id")] = (row.locator("span.description").inner_text(), error)
        return shown

    page.goto(dashboard.url("0/view/jobs/downloads/started/20/asc/1"))
    assert shows(lambda: listed_rows().get(running, ("", ""))[0], hostile_url) == hostile_url
    page.goto(dashboard.url("0/view/jobs/downloads/failed/20/asc/1"))
    wanted = (HOSTILE["description"], HOSTILE["exc_info"].strip())
    assert shows(lambda: listed_rows().get(handwritten), wanted) == wanted
    assert listed_rows()[refused][0] == refused_url

    for job_id, origin in ((handwritten, settings.queue_name), (foreign, HOSTILE["origin"])):
        page.goto(dashboard.url(f"0/view/job/{job_id}"))
        page.wait_for_selector("#job-data pre.exc_info")
        info = page.locator("#job-data")
        assert info.locator(".description-scroll").inner_text() == HOSTILE["description"]
        assert info.locator("pre.exc_info").inner_text().strip() == HOSTILE["exc_info"].strip()
        text = info.inner_text()
        assert f"Origin queue:\n{origin}\n" in text and json.dumps({"note": HOSTILE["meta"]}) in text, text
    for job_id, url in ((running, hostile_url), (refused, refused_url)):
        page.goto(dashboard.url(f"0/view/job/{job_id}"))
        page.wait_for_selector("#job-data .description-scroll")
        assert page.locator("#job-data .description-scroll").inner_text() == url

    page.wait_for_timeout(1000)  # a last poll round; events reach us only while Playwright waits
    assert seen["dialogs"] == []
    assert [url for url in seen["requests"] if MARKER in url] == []
    assert seen["csp"] == [], "the pages must work under our Content-Security-Policy"


# --- headers and pages --------------------------------------------------------------------------
PAGES = ["", "0/view/workers", "0/view/jobs", "0/view/jobs/downloads/failed/8/asc/1", "0/view/job/{job_id}"]


class InlineCode(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block: <script> without src,
    on* handler attributes, style attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("<script> without src")
        self.found += [f"<{tag} {name}=...>" for name in names if name.startswith("on") or name == "style"]


def csp_directives(response: requests.Response) -> dict[str, list[str]]:
    policy = response.headers.get("Content-Security-Policy", "")
    return {words[0]: words[1:] for part in policy.split(";") if (words := part.split())}


@pytest.mark.timeout(90)
def test_every_response_carries_the_security_headers_and_pages_have_no_inline_code(
    env: dict[str, str], settings: Settings, connection: redis.Redis, start_dashboard: Callable[..., Dashboard]
) -> None:
    job_id = enqueue_track(connection, settings, "http://127.0.0.1:9/nothing.flac")  # no workers: stays queued
    dashboard = start_dashboard(dashboard_env(env, auth=True))
    responses = {
        "page": (get(dashboard, ""), 200),
        "job page": (get(dashboard, f"0/view/job/{job_id}"), 200),
        "JSON": (get(dashboard, "0/data/queues.json"), 200),
        "rq-dashboard's static file": (get(dashboard, "static/css/main.css"), 200),
        "our script": (get(dashboard, "dq/dashboard.js"), 200),
        "favicon": (get(dashboard, "favicon.ico"), 200),
        "no such job": (get(dashboard, "0/view/job/no-such-job"), 404),
        "no such route": (get(dashboard, "no/such/page"), 404),
        "wrong method": (get(dashboard, "job/x/delete"), 405),
        "no credentials": (get(dashboard, "0/view/workers", auth=None), 401),
        "foreign Host": (get(dashboard, "", headers={"Host": "evil.test"}), 400),
        "foreign Origin": (post(dashboard, "queue/downloads/compact", headers={"Origin": "http://evil.test"}), 403),
    }
    for name, (response, status) in responses.items():
        assert response.status_code == status, (name, response.status_code, response.text[:300])
        directives = csp_directives(response)
        assert directives.get("script-src") == ["'self'"], (name, directives)
        for directive in ("object-src", "base-uri", "frame-ancestors"):
            assert directives.get(directive) == ["'none'"], (name, directive, directives)
        policy = response.headers["Content-Security-Policy"]
        assert "unsafe-" not in policy and "http" not in policy and "*" not in policy, (name, policy)
        assert response.headers.get("X-Content-Type-Options") == "nosniff", name
        assert response.headers.get("Referrer-Policy") == "no-referrer", name
    assert responses["our script"][0].headers["Content-Type"].startswith("text/javascript")

    for template in PAGES:
        path = template.format(job_id=job_id)
        parser = InlineCode()
        parser.feed(get(dashboard, path).text)
        assert parser.found == [], (path, parser.found)


# --- Host and Origin ----------------------------------------------------------------------------
def redis_contents(connection: redis.Redis) -> dict[bytes, bytes | None]:
    return {key: connection.dump(key) for key in sorted(connection.scan_iter())}


@pytest.mark.timeout(120)
def test_a_foreign_host_is_refused_before_auth_and_changes_nothing(
    env: dict[str, str],
    settings: Settings,
    connection: redis.Redis,
    start_dashboard: Callable[..., Dashboard],
    burst_worker: Callable[[], DownloadWorker],
) -> None:
    failed = enqueue_track(connection, settings, "http://127.0.0.1:9/refused.flac")
    burst_worker()  # nothing listens on port 9: the job fails
    assert status_of(connection, failed) == JobStatus.FAILED
    queued = enqueue_track(connection, settings, "http://127.0.0.1:9/queued.flac")  # no worker now: stays queued
    dashboard = start_dashboard(dashboard_env(env, auth=True))
    port = port_of(dashboard)
    writes = [
        f"job/{queued}/delete",
        f"job/{failed}/delete",
        f"job/{failed}/requeue",
        "requeue/downloads",
        "queue/downloads/queued/empty",
        "queue/downloads/failed/empty",
        "queue/downloads/compact",
    ]
    before = redis_contents(connection)

    # A page of evil.test whose name now resolves to 127.0.0.1: same-origin in the browser's
    # eyes (Origin equals Host), with or without the user's cached credentials.
    for host in ("evil.test:9181", f"evil.test:{port}", "evil.test"):
        rebound = {"Host": host, "Origin": f"http://{host}"}
        for path in writes:
            for auth in (CREDENTIALS, None):
                response = post(dashboard, path, auth=auth, headers=rebound)
                assert response.status_code == 400, (host, path, auth, response.status_code)
                assert response.headers["Content-Type"].startswith("text/plain")
                assert "WWW-Authenticate" not in response.headers
                assert len(response.content) < 200
        assert get(dashboard, "0/data/queues.json", headers=rebound).status_code == 400
    # A real address of ours but a foreign page: the Origin check refuses it (also "null").
    for origin in ("http://evil.test:9181", f"http://evil.test:{port}", "null"):
        for path in writes:
            assert post(dashboard, path, headers={"Origin": origin}).status_code == 403, (origin, path)
    assert redis_contents(connection) == before

    # Our own names work, in any case, and a write from our own page too.
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        assert get(dashboard, "0/data/queues.json", headers={"Host": host}).status_code == 200, host
    ours = {"Host": f"localhost:{port}", "Origin": f"http://127.0.0.1:{port}"}
    assert post(dashboard, f"job/{queued}/delete", headers=ours).json()["status"] == "OK"
    assert not Job.exists(queued, connection=connection)


@pytest.mark.timeout(60)
def test_allowed_hosts_setting_names_the_hosts_answered(
    env: dict[str, str], start_dashboard: Callable[..., Dashboard]
) -> None:
    dashboard = start_dashboard(dashboard_env(env, DQ_DASHBOARD_ALLOWED_HOSTS="dq.example.test"))
    port = port_of(dashboard)
    for host, status in (
        ("dq.example.test", 200),  # behind a reverse proxy on 80/443
        (f"dq.example.test:{port}", 200),
        (f"127.0.0.1:{port}", 400),  # the list replaces the defaults
        ("example.test", 400),
    ):
        assert get(dashboard, "0/data/queues.json", headers={"Host": host}).status_code == status, host


# --- compact ------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_compact_answers_200_or_404_never_500(
    env: dict[str, str], settings: Settings, connection: redis.Redis, start_dashboard: Callable[..., Dashboard]
) -> None:
    dashboard = start_dashboard(dashboard_env(env))
    # Our queue before anything was enqueued: there is no list in Redis yet.
    empty = post(dashboard, "queue/downloads/compact", auth=None)
    assert empty.status_code == 200, empty.text[:300]
    assert empty.json() == {"status": "OK"}
    assert post(dashboard, "queue/no-such-queue/compact", auth=None).status_code == 404

    first = enqueue_track(connection, settings, "http://127.0.0.1:9/one.flac")
    second = enqueue_track(connection, settings, "http://127.0.0.1:9/two.flac")
    queue_key = keys.queue(settings.queue_name)
    connection.linsert(queue_key, "AFTER", first, "a-job-that-is-gone")
    assert post(dashboard, "queue/downloads/compact", auth=None).json() == {"status": "OK"}
    assert Queue(settings.queue_name, connection=connection).get_job_ids() == [first, second]

    # Emptied by hand (the queue stays registered): still a 200, not RQ's rename of no list.
    connection.delete(queue_key)
    assert post(dashboard, "queue/downloads/compact", auth=None).status_code == 200
