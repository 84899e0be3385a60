"""The Downloads page (jobs/downloads_page.py, jobs/dashboard_static/downloads.js) in a real
headless Chromium, against `dq dashboard` and its HTTP API as real processes.

Screenshots go to test-artifacts/ on every run. To refresh the README's committed one
(tests/screenshots/downloads.png), run:

    bin/test tests/test_downloads_page.py --update-screenshot
"""

from __future__ import annotations

import shutil
import time
from base64 import b64encode
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import requests
from rq.job import Job, JobStatus

from config import Settings
from jobs import messages
from jobs.enqueue import TrackRequest, enqueue_album, enqueue_tracks
from tests.browser import SETTLE_SECONDS, chromium_page, save_screenshot
from tests.faultserver import FaultServer
from tests.helpers import (
    PASSWORD,
    ROOT,
    SLOW_PATH,
    USER,
    Dashboard,
    Service,
    dashboard_env,
    enqueue_track,
    long_env,
    wait_status,
    wait_until,
)

README_SCREENSHOT = ROOT / "tests" / "screenshots" / "downloads.png"
# Chromium reports every CSP violation to the page as this event; collected from the first paint.
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
    window.__csp.push(e.violatedDirective + " " + e.blockedURI);
});
"""
HOSTILE_FILE = "<img src=x onerror=window.__pwned=1>.flac"
HOSTILE_DEST = "<img src=x onerror=window.__pwned=2>"


@dataclass
class Watched:
    """A page and what went wrong on it: console errors, uncaught exceptions, CSP violations."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        return list(self.page.evaluate("window.__csp || []"))

    def assert_clean(self, *refusals: int) -> None:
        """No violation, exception or console error; but Chromium logs each refused fetch
        (`refusals`: the statuses the test provoked) as a console error of its own."""
        expected = tuple(f"the server responded with a status of {status}" for status in refusals)
        assert self.csp_violations() == []
        assert self.page_errors == []
        assert [text for text in self.console_errors if not any(e in text for e in expected)] == []


@pytest.fixture
def watched() -> Iterator[Watched]:
    with chromium_page(WATCH_CSP, viewport={"width": 1280, "height": 800}) as page:
        seen = Watched(page)
        page.on("console", lambda m: seen.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: seen.page_errors.append(str(error)))
        yield seen


def open_downloads(page: Any, dashboard: Dashboard) -> None:
    page.goto(dashboard.url("downloads"))
    page.wait_for_selector("#dl-loading", state="hidden")  # the first poll has been drawn


def row_of(page: Any, job_id: str, role: str = "download") -> Any:
    return page.locator(f"#downloads tr[data-role={role}][data-id='{job_id}']")


def api_post(dashboard: Dashboard, body: dict[str, Any]) -> requests.Response:
    # Our password is not Latin-1: the basic-auth header spelled out in UTF-8, as browsers send it.
    credentials = b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}"}
    return requests.post(dashboard.url("api/download-queue"), json=body, headers=headers, timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_add_watch_and_delete_a_download_in_a_real_browser(
    env: dict[str, str],
    settings: Settings,
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    start_dashboard: Callable[..., Dashboard],
    watched: Watched,
    request: pytest.FixtureRequest,
) -> None:
    # The long job timeout: the short test one would end the download before we delete it.
    environment = long_env(env)
    start_service(environment)
    dashboard = start_dashboard(dashboard_env(environment, auth=True))
    page = watched.page
    # Finished ones first: a completed track, a failed one, a completed album.
    finished = enqueue_track(connection, settings, fault_server.url("/bytes/200000/blue-in-green.flac"))
    wait_status(connection, finished, JobStatus.FINISHED)
    not_found = enqueue_track(connection, settings, fault_server.url("/status/404/missing.flac"))
    wait_status(connection, not_found, JobStatus.FAILED)
    record, tracks = enqueue_album(
        connection, settings, "Kind of Blue", [fault_server.url(f"/bytes/300000/0{n}.flac") for n in (1, 2)], ""
    )
    for track_id in tracks:
        wait_status(connection, track_id, JobStatus.FINISHED)

    # From rq-dashboard's own pages, the Downloads tab; and from it, back to theirs.
    page.goto(dashboard.url("0/view/workers"))
    page.locator("#navbar-dashboard a.nav-link", has_text="Downloads").click()
    page.wait_for_url("**/downloads")
    page.wait_for_selector("#dl-loading", state="hidden")
    assert page.locator("#navbar-dashboard a.nav-link", has_text="Queues").get_attribute("href") == "/0/view/queues"

    # The finished section, newest first: the album (one row), the 404 with its error, the track.
    finished_rows = page.locator("#downloads tbody[data-section=finished] tr[data-role=download]")
    assert finished_rows.evaluate_all("rows => rows.map(r => r.dataset.id)") == [record.id, not_found, finished]
    assert finished_rows.locator(".dl-title").all_inner_texts() == [
        "Kind of Blue",
        "missing.flac",
        "blue-in-green.flac",
    ]
    failed_row = row_of(page, not_found)
    assert failed_row.get_attribute("data-state") == "failed"
    assert failed_row.locator(".dl-note").inner_text() == "HTTP 404 Not Found"
    assert [r.locator("[data-role=retry]").is_visible() for r in finished_rows.all()] == [False, True, False]
    assert "2/2 tracks" in row_of(page, record.id).locator(".dl-progress-text").inner_text()

    # Add one slow download through the form (20 kB/s for 60 s).
    url = fault_server.url(SLOW_PATH.format(name="so-what"))
    page.fill("#dl-urls", url)
    page.fill("#dl-dest", "jazz")
    page.click("#dl-add")
    page.wait_for_selector("#dl-message.dl-good")
    assert page.inner_text("#dl-message") == "Added 1 download"
    assert page.input_value("#dl-urls") == ""

    # It shows up among the running downloads, its bar moving and its rate and ETA shown.
    running = page.locator("#downloads tbody[data-section=running] tr[data-role=download]")
    running.first.wait_for()
    job_id = running.first.get_attribute("data-id")
    assert job_id and Job.exists(job_id, connection=connection)
    row = row_of(page, job_id)

    def percent() -> int:
        shown = row.get_attribute("data-percent") or ""
        return int(shown) if shown else -1

    assert wait_until(lambda: percent() >= 1, timeout=SETTLE_SECONDS, interval=0.3), row.inner_text()
    first = percent()
    assert wait_until(lambda: percent() > first, timeout=SETTLE_SECONDS, interval=0.3), "the bar stopped"
    assert row.get_attribute("data-state") == "processing"
    assert float(row.get_attribute("data-rate") or 0) > 0
    progress_text = row.locator(".dl-progress-text").inner_text()
    assert "/s" in progress_text and "ETA" in progress_text and "/ 1.1 MiB" in progress_text, progress_text
    assert int(row.locator("progress.dl-bar").get_attribute("value") or 0) >= 1
    # The file's name, not the URL; the folder beside it.
    assert row.locator(".dl-title").inner_text() == "so-what.flac"
    assert "in jazz" in row.locator(".dl-detail").inner_text()

    time.sleep(2.5)  # let a poll land after the last reading, for a settled picture
    screenshot = save_screenshot(page, "downloads.png")
    assert screenshot.stat().st_size > 10_000
    if request.config.getoption("--update-screenshot"):
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, README_SCREENSHOT)

    # Delete asks once, then stops the download; the row goes and so does the job.
    delete = row.locator("[data-role=delete]")
    delete.click()
    assert delete.inner_text() == "Really delete?"
    assert Job.exists(job_id, connection=connection)
    delete.click()
    assert fault_server.wait_until(lambda s: len(s.disconnects) == 1, timeout=30), "the download kept going"
    row.wait_for(state="detached", timeout=30_000)
    assert wait_until(lambda: not Job.exists(job_id, connection=connection), timeout=30)
    assert page.inner_text("#dl-message") in (f"{job_id}: deleted", f"{job_id}: cancelled")
    assert page.locator("#downloads tbody[data-section=running] tr[data-role=download]").count() == 0

    # Retry starts the failed job again (a fresh attempt: one more request for its URL).
    asked = fault_server.requests.count("/status/404/missing.flac")
    failed_row.locator("[data-role=retry]").click()
    assert wait_until(lambda: page.inner_text("#dl-message") == f"{not_found}: retried", timeout=30)
    assert fault_server.wait_until(lambda s: s.requests.count("/status/404/missing.flac") == asked + 1, timeout=30)
    watched.assert_clean()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_hostile_fields_albums_and_api_errors_in_a_real_browser(
    env: dict[str, str],
    settings: Settings,
    connection: redis.Redis,
    fault_server: FaultServer,
    start_dashboard: Callable[..., Dashboard],
    watched: Watched,
) -> None:
    # No workers: everything stays queued while we look. Three queued jobs fill DQ_QUEUE_MAX.
    dashboard = start_dashboard(dashboard_env(env, auth=True, DQ_QUEUE_MAX="3"))
    # Spaces are refused in URLs; percent-encoded they decode to the same markup on the page.
    hostile_url = fault_server.url("/bytes/100/" + HOSTILE_FILE.replace(" ", "%20"))
    [hostile] = enqueue_tracks(connection, settings, [TrackRequest(hostile_url, dest=HOSTILE_DEST)])
    record, tracks = enqueue_album(
        connection, settings, "Kind of Blue", [fault_server.url(f"/bytes/100/{n}.flac") for n in ("a", "b")], ""
    )
    page = watched.page
    open_downloads(page, dashboard)

    # The job's HTML-looking file name and folder are shown as text, and nothing of them ran.
    row = row_of(page, hostile)
    row.wait_for()
    assert row.locator(".dl-title").inner_text() == HOSTILE_FILE
    assert f"in {HOSTILE_DEST}" in row.locator(".dl-detail").inner_text()
    assert page.locator("#downloads img").count() == 0
    time.sleep(2.5)  # a poll more: an image that got in would have failed to load by now
    assert page.evaluate("window.__pwned === undefined")

    # The album: one row in the queued section, its tracks shown only when opened.
    album_row = row_of(page, record.id)
    assert album_row.locator(".dl-title").inner_text() == "Kind of Blue"
    assert album_row.get_attribute("data-state") == "queued"
    top_ids = page.locator("#downloads tr[data-role=download]").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert sorted(top_ids) == sorted([hostile, record.id])
    assert page.locator("#downloads tr[data-role=track]").count() == 0
    album_row.locator("[data-role=toggle]").click()
    shown_tracks = page.locator("#downloads tr[data-role=track]")
    shown_tracks.first.wait_for()
    assert shown_tracks.evaluate_all("rows => rows.map(r => r.dataset.id)") == tracks
    assert shown_tracks.locator(".dl-title").all_inner_texts() == ["a.flac", "b.flac"]
    time.sleep(1.5)  # still open after the next refreshes
    assert shown_tracks.count() == 2

    # A 400 shows the API's own error text and marks the field; nothing is enqueued.
    page.click("#dl-add")
    page.wait_for_selector("#dl-message.dl-bad")
    expected = api_post(dashboard, {"urls": []})
    assert expected.status_code == 400, (expected.status_code, expected.text, dashboard.log())
    assert page.inner_text("#dl-message") == expected.json()["error"]
    assert page.locator("#dl-urls.is-invalid").count() == 1

    # A full queue (503) says so on the page.
    page.fill("#dl-urls", fault_server.url("/bytes/100/one-more.flac"))
    page.click("#dl-add")
    full = messages.queue_full(3, 3)
    assert wait_until(lambda: page.inner_text("#dl-message") == full, timeout=30), page.inner_text("#dl-message")
    assert page.locator("#downloads tr[data-role=download]").count() == 2
    watched.assert_clean(400, 503)
