"""A headless Chromium for the dashboard tests: Debian's /usr/bin/chromium driven by Playwright
(no browser download), with our dashboard credentials, and what the tests share around it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright import sync_api

from tests.helpers import PASSWORD, ROOT, USER, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
# Two shared CPU cores: a page load plus its first poll can take several seconds.
BROWSER_TIMEOUT_MS = 60_000
# The pages poll every 2-2.5 s; allow many rounds before calling a mismatch final.
SETTLE_SECONDS = 45


@contextmanager
def chromium_page(init_script: str | None = None, **context_options: Any) -> Iterator[Any]:
    """A page in a fresh headless Chromium that sends our dashboard credentials.

    bin/test installs Chromium (bin/_packages); without it the test fails, it never skips.
    """
    assert CHROMIUM.exists(), "needs Debian's chromium package: apt-get install -y chromium fonts-liberation"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=BROWSER_TIMEOUT_MS
        )
        try:
            context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD}, **context_options)
            if init_script is not None:
                context.add_init_script(init_script)
            page = context.new_page()
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            page.set_default_navigation_timeout(BROWSER_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def shows(read: Callable[[], Any], expected: Any, timeout: float = SETTLE_SECONDS) -> Any:
    """Re-read a polled page until it shows `expected`; the last reading (for the assert)."""
    last: list[Any] = [None]

    def matches() -> bool:
        last[0] = read()
        return bool(last[0] == expected)

    wait_until(matches, timeout=timeout, interval=0.5)
    return last[0]


def save_screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
