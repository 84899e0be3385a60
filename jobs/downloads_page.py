"""The Downloads page: every job and album as a user thinks of them, beside rq-dashboard's tabs.

Served at `/downloads` by the dashboard's app (jobs/dashboard.py calls `register_downloads_page`).
The page itself is static markup (jobs/dashboard_templates/downloads.html); everything on it is
drawn by jobs/dashboard_static/downloads.js from the HTTP API (`/api/download-queue`, jobs/api.py),
so the page and scripts share one code path for listing, adding, deleting and retrying. The
script fills every value in as text, never as markup (job fields come from whoever enqueued
them), and needs no inline script or style: the dashboard's Content-Security-Policy holds.
"""

from __future__ import annotations

from flask import Flask, Response, make_response, render_template, request, url_for

ENDPOINT = "downloads_page"
PATH = "/downloads"
API_PATH = "/api/download-queue"
POLL_MS = 2000  # 30 of the DQ_API_RATE default of 120 requests a minute: two open tabs stay under it


def register_downloads_page(app: Flask) -> None:
    """Add `GET /downloads` to the dashboard app (behind the app's own auth and safety hooks)."""

    def downloads() -> Response:
        response = make_response(
            render_template(
                "downloads.html",
                api_url=request.script_root + API_PATH,
                poll_ms=POLL_MS,
                # rq-dashboard's pages, for the tabs (its blueprint is registered at `/`).
                rq_root=url_for("rq_dashboard.queues_overview"),
            )
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    app.add_url_rule(PATH, ENDPOINT, downloads, methods=["GET"])
