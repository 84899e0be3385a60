"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

Real supervisor and four workers, real downloads from the fault server, `dq dashboard` as its
own process behind basic auth. The pages are rq-dashboard's, rendered by our static script
(jobs/dashboard_static) from our JSON.

Screenshots go to test-artifacts/ on every run. To refresh the README's committed one
(tests/screenshots/dashboard.png), run:

    bin/test tests/test_dashboard_browser.py --update-screenshot
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from rq.job import Job, JobStatus

from config import Settings
from jobs import messages
from tests.browser import chromium_page, save_screenshot, shows
from tests.faultserver import FaultServer
from tests.helpers import (
    ROOT,
    SLOW_PATH,
    Dashboard,
    Service,
    dashboard_env,
    dq_stats,
    enqueue_track,
    listed,
    long_env,
    wait_status,
    wait_until,
)

README_SCREENSHOT = ROOT / "tests" / "screenshots" / "dashboard.png"


@pytest.fixture
def page() -> Iterator[Any]:
    """A page in a fresh headless Chromium that sends our dashboard credentials."""
    with chromium_page(viewport={"width": 1280, "height": 800}) as new_page:
        yield new_page


def listed_jobs(page: Any) -> dict[str, str]:
    """job id → error text shown under it (empty when none), as the jobs page renders them."""
    rows = page.locator("table#jobs tr[data-role=job]")
    shown = {}
    for index in range(rows.count()):
        row = rows.nth(index)
        errors = row.locator("pre.exc_info")
        shown[row.get_attribute("data-job-id")] = errors.inner_text() if errors.count() else ""
    return shown


def open_job_list(page: Any, dashboard: Dashboard, registry: str) -> None:
    page.goto(dashboard.url(f"0/view/jobs/downloads/{registry}/20/asc/1"))
    page.wait_for_selector("table#jobs tbody tr:not([data-role=loading-placeholder])")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dashboard_in_a_real_browser(
    env: dict[str, str],
    settings: Settings,
    connection: redis.Redis,
    fault_server: FaultServer,
    start_service: Callable[..., Service],
    start_dashboard: Callable[..., Dashboard],
    page: Any,
    request: pytest.FixtureRequest,
) -> None:
    environment = long_env(env)
    start_service(environment)
    dashboard = start_dashboard(dashboard_env(environment, auth=True))

    finished = enqueue_track(connection, settings, fault_server.url("/bytes/200000/blue-in-green.flac"))
    not_found = enqueue_track(connection, settings, fault_server.url("/status/404/missing.flac"))
    hung = enqueue_track(connection, settings, fault_server.url("/hang/silent.flac"))
    wait_status(connection, finished, JobStatus.FINISHED)
    wait_status(connection, not_found, JobStatus.FAILED)
    wait_status(connection, hung, JobStatus.FAILED)
    # With the long job timeout: the short one of `settings` would end it before the Delete click.
    long_settings = Settings.from_env(environment)
    running = enqueue_track(connection, long_settings, fault_server.url(SLOW_PATH.format(name="so-what")))
    assert fault_server.wait_until(lambda s: s.active == 1, timeout=30), "the download never started"
    views = listed(environment)
    assert views[not_found]["error"] == "HTTP 404 Not Found"
    assert views[hung]["error"] == messages.download_timeout(settings.request_timeout)

    # Queues page: `downloads` with the same figures as `dq stats --json`.
    page.goto(dashboard.url(""))
    page.wait_for_selector("table#queues tr[data-role=queue]")
    figures = dq_stats(environment)["queue"]
    expected_row = [
        "downloads",
        str(figures["queued"]),
        "0",
        "0",
        str(figures["processing"]),
        str(figures["completed"]),
        str(figures["failed"]),
        "0",
    ]
    assert expected_row[1:] == ["0", "0", "0", "1", "1", "2", "0"]

    def queue_rows() -> list[list[str]]:
        rows = page.locator("table#queues tr[data-role=queue]")
        return [[cell.strip() for cell in rows.nth(i).locator("td").all_inner_texts()] for i in range(rows.count())]

    assert shows(queue_rows, [expected_row]) == [expected_row]
    save_screenshot(page, "dashboard-queues.png")

    # Workers page: four workers, one busy with our download, three idle.
    page.goto(dashboard.url("0/view/workers"))
    page.wait_for_selector("table#workers tr[data-role=worker]")

    def worker_cells() -> list[str]:
        rows = page.locator("table#workers tr[data-role=worker]")
        return sorted(rows.nth(i).locator("td").nth(1).inner_text().strip() for i in range(rows.count()))

    def busy_and_idle() -> tuple[int, int]:
        cells = worker_cells()
        return len(cells), cells.count("idle")

    shows(busy_and_idle, (4, 3))
    cells = worker_cells()
    assert len(cells) == 4, cells
    assert cells.count("idle") == 3, cells
    busy_cell = next(cell for cell in cells if cell != "idle")
    assert "jobs.track.download_track(" in busy_cell and "so-what" in busy_cell, busy_cell
    busy_link = page.locator("table#workers tr[data-role=worker] td a")
    assert busy_link.count() == 1
    assert busy_link.get_attribute("href").endswith(f"/0/view/job/{running}")
    save_screenshot(page, "dashboard-workers.png")

    # Started, finished and failed lists show our jobs; failed ones with their error lines.
    open_job_list(page, dashboard, "started")
    assert shows(lambda: set(listed_jobs(page)), {running}) == {running}
    open_job_list(page, dashboard, "finished")
    assert shows(lambda: set(listed_jobs(page)), {finished}) == {finished}
    open_job_list(page, dashboard, "failed")
    assert shows(lambda: set(listed_jobs(page)), {not_found, hung}) == {not_found, hung}
    shown = listed_jobs(page)
    for job_id in (not_found, hung):
        assert shown[job_id].splitlines()[0] == views[job_id]["error"], shown[job_id][:500]
    save_screenshot(page, "dashboard-failed.png")

    # A job page renders our job (their 0.9.0 template, our JSON).
    page.goto(dashboard.url(f"0/view/job/{hung}"))
    page.wait_for_selector("#job-data pre.exc_info")
    assert page.locator("#job-data pre.exc_info").inner_text().splitlines()[0] == messages.download_timeout(
        settings.request_timeout
    )
    assert "failed" in page.locator("#job-data").inner_text()

    # The picture for the README: the workers page while the download runs.
    page.goto(dashboard.url("0/view/workers"))
    page.wait_for_selector("table#workers tr[data-role=worker] td a")
    time.sleep(0.5)  # let the fade-out of the loading indicator finish
    screenshot = save_screenshot(page, "dashboard.png")
    assert screenshot.stat().st_size > 10_000
    if request.config.getoption("--update-screenshot"):
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, README_SCREENSHOT)

    # The Delete button (a same-origin POST through basic auth) stops the running download.
    open_job_list(page, dashboard, "started")
    row = page.locator(f"table#jobs tr[data-job-id='{running}']")
    row.locator("[data-role=delete-job-btn]").click()
    page.locator("#confirmation-modal-yes").click()
    assert fault_server.wait_until(lambda s: len(s.disconnects) == 1, timeout=30), "the download kept going"
    assert wait_until(lambda: not Job.exists(running, connection=connection), timeout=30)
    row.wait_for(state="detached")
