"""The HTTP API: the original's routes (`/api/download-queue...`), on the dashboard's app.

Every route calls the same queue functions as the command line (`jobs.enqueue`,
`jobs.deletion`, `jobs.requeue`, `jobs.views`, `jobs.stats`), so the two cannot disagree.
Shapes and texts are the contract's (DESIGN.md, "Contract, wave 2"); `jobs.openapi` describes
them. What the app already does for every request stays in force: the Host check and security
headers (`jobs.dashboard_safety`), auth (basic, or `Authorization: Bearer $DQ_API_TOKEN`), and
the refusal of writes with a foreign `Origin`.

Refusals are JSON: 400 names the field and enqueues nothing, 404 `not found`, 413 over
DQ_API_MAX_BODY, 429 with `Retry-After` over DQ_API_RATE requests a minute from one client
address, 503 when the queue is full.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from flask import Blueprint, Flask, Response, request
from flask import jsonify as flask_jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from config import Settings
from jobs import health, metrics, openapi
from jobs.deletion import NOT_FOUND, delete_jobs
from jobs.enqueue import TrackRequest, backlog_warning, enqueue_album, enqueue_playlist, enqueue_tracks
from jobs.errors import InvalidRequest, QueueFull
from jobs.ids import resolve
from jobs.naming import album_name
from jobs.paths import check_dest, check_name
from jobs.requeue import RETRIED, retry_jobs
from jobs.stats import stats
from jobs.urls import check_url
from jobs.views import PARTIAL, STATES, list_jobs, views_of

log = logging.getLogger("dq.api")

API_PREFIX = "/api/"
API_EXTRAS = ("/health", "/metrics")  # answered like the API, not rate-limited (monitoring polls them)
RATE_WINDOW = 60.0  # seconds: DQ_API_RATE counts requests in the last minute
MAX_ID_LENGTH = 128
_ID = re.compile(r"^[A-Za-z0-9_.:-]+$")  # job ids (uuid hex), album ids (`album-…`), prefixes of them
POST_FIELDS = frozenset({"url", "urls", "dest", "name", "album", "playlist", "force"})
PATCH_ACTIONS = ("cancel", "retry")


class FieldError(Exception):
    """A request field we refuse: 400 naming it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


def answer(payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = flask_jsonify(payload)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def refusal(status: int, error: str, field_name: str | None = None, headers: dict[str, str] | None = None) -> Response:
    payload: dict[str, Any] = {"success": False, "error": error}
    if field_name is not None:
        payload["field"] = field_name
    return answer(payload, status, headers)


# --- rate limit ----------------------------------------------------------------------------
@dataclass
class RateLimiter:
    """At most `limit` requests per client in any `window` seconds (a sliding log per client).

    `admit(client, now)` returns None when the request may go on, else the seconds until it
    would be admitted (for `Retry-After`). Memory: at most `limit` stamps per client, and a
    client whose stamps all expired is forgotten.
    """

    limit: int
    window: float = RATE_WINDOW
    _seen: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_sweep: float = 0.0

    def admit(self, client: str, now: float) -> float | None:
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            stamps = self._seen.setdefault(client, deque())
            while stamps and stamps[0] <= now - self.window:
                stamps.popleft()
            if len(stamps) >= self.limit:
                return stamps[0] + self.window - now
            stamps.append(now)
            return None

    def _sweep(self, now: float) -> None:
        self._seen = {client: s for client, s in self._seen.items() if s and s[-1] > now - self.window}
        self._next_sweep = now + self.window


# --- reading a request ---------------------------------------------------------------------
def request_object() -> dict[str, Any]:
    """The JSON object in the body (raises FieldError naming `body`; 413 past the body limit)."""
    raw = request.get_data(cache=True)  # MAX_CONTENT_LENGTH raises RequestEntityTooLarge past it
    try:
        value = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        raise FieldError("body", "the body must be a JSON object") from None
    if not isinstance(value, dict):
        raise FieldError("body", "the body must be a JSON object")
    return value


def _text_field(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldError(name, f"{name} must be a string")
    return value


def _checked(field_name: str, check: Callable[[str], str], value: str) -> str:
    try:
        return check(value)
    except InvalidRequest as error:
        # The checks are the command line's, whose texts name its options (`--dest must ...`).
        message = str(error)
        option = "--" + field_name.split("[")[0]
        raise FieldError(field_name, message.replace(option, field_name, 1)) from None


@dataclass(frozen=True)
class EnqueueRequest:
    urls: list[str]
    dest: str
    name: str | None
    album: str | None
    playlist: str | None
    force: bool
    url_field: str  # how the body named its URLs: "url" or "urls"


def enqueue_request(body: dict[str, Any]) -> EnqueueRequest:
    """The POST body, every field checked as `bin/enqueue` checks its arguments."""
    for key in body:
        if key not in POST_FIELDS:
            raise FieldError(key, f"unknown field {key!r} (known: {', '.join(sorted(POST_FIELDS))})")
    url = _text_field(body, "url")
    raw_urls = body.get("urls")
    if raw_urls is not None and (not isinstance(raw_urls, list) or not all(isinstance(u, str) for u in raw_urls)):
        raise FieldError("urls", "urls must be a list of strings")
    playlist = _text_field(body, "playlist")
    name = _text_field(body, "name")
    album = _text_field(body, "album")
    dest = _checked("dest", check_dest, _text_field(body, "dest") or "")
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise FieldError("force", "force must be true or false")
    if url is not None and raw_urls is not None:
        raise FieldError("urls", "give url or urls, not both")
    url_field = "urls" if raw_urls is not None else "url"
    urls = [url] if url is not None else list(raw_urls or [])
    if playlist is not None:
        if urls or name is not None:
            raise FieldError("playlist", "playlist takes no url, urls or name")
        playlist = _checked("playlist", check_url, playlist)
    elif not urls:
        raise FieldError(url_field, "no URL given")
    checked_urls = []
    for index, each in enumerate(urls):
        where = "url" if url is not None else f"urls[{index}]"
        checked_urls.append(_checked(where, check_url, each))
    if name is not None:
        if album is not None:
            raise FieldError("name", "name cannot be used with album: album tracks are named by the album")
        if len(checked_urls) != 1:
            raise FieldError("name", "name needs exactly one URL")
        name = _checked("name", check_name, name)
    if album is not None:
        album = _checked("album", album_name, album)
    return EnqueueRequest(checked_urls, dest, name, album, playlist, force, url_field)


def job_id_arg(raw: str) -> str | None:
    """The id as typed, if it could name a job or album (a prefix is resolved by the caller)."""
    if len(raw) > MAX_ID_LENGTH or not _ID.match(raw):
        return None
    return raw


# --- the routes ------------------------------------------------------------------------------
def create_blueprint(settings: Settings, connection: redis.Redis) -> Blueprint:
    api = Blueprint("dq_api", __name__)

    def full_id(raw: str) -> str | None:
        item_id = job_id_arg(raw)
        if item_id is None:
            return None
        try:
            return resolve(connection, item_id)
        except InvalidRequest as error:
            raise FieldError("id", str(error)) from None

    @api.post("/api/download-queue")
    def enqueue() -> Response:
        wanted = enqueue_request(request_object())
        try:
            if wanted.playlist is not None:
                record, _job = enqueue_playlist(connection, settings, wanted.playlist, wanted.album, wanted.dest)
                ids = [record.id]
            elif wanted.album is not None:
                record, track_ids = enqueue_album(connection, settings, wanted.album, wanted.urls, wanted.dest)
                ids = [record.id] + track_ids
            else:
                requests_ = [TrackRequest(url, wanted.dest, wanted.name) for url in wanted.urls]
                ids = enqueue_tracks(connection, settings, requests_, force=wanted.force)
        except InvalidRequest as error:  # a private address, as the running workers judge it
            raise FieldError("playlist" if wanted.playlist is not None else wanted.url_field, str(error)) from None
        except QueueFull as error:
            log.warning("enqueue refused: %s", error)
            return refusal(503, str(error))
        warning = backlog_warning(connection, settings)
        if warning is not None:
            log.warning("%s", warning)
        log.info("enqueued over the API: %s", " ".join(ids))
        return answer({"success": True, "jobId": ids[0], "jobIds": ids, "warning": warning}, 201)

    @api.get("/api/download-queue")
    def list_all() -> Response:
        status = request.args.get("status")
        if status is not None and status not in (*STATES, PARTIAL):
            return refusal(400, f"status must be one of {', '.join((*STATES, PARTIAL))}", "status")
        views = list_jobs(connection, settings, status)
        return answer({"success": True, "jobs": views, "count": len(views)})

    @api.get("/api/download-queue/stats")
    def queue_stats() -> Response:
        return answer({**stats(connection, settings), "success": True})

    @api.get("/api/download-queue/<path:raw_id>")
    def one(raw_id: str) -> Response:
        item_id = full_id(raw_id)
        views = views_of(connection, [item_id]) if item_id is not None else []
        if not views:
            return refusal(404, "not found")
        return answer({"success": True, "job": views[0]})

    def delete_one(raw_id: str) -> Response:
        item_id = full_id(raw_id)
        if item_id is None:
            return refusal(404, "not found")
        [(_, outcome)] = delete_jobs(connection, settings, [item_id])
        if outcome == NOT_FOUND:
            return refusal(404, "not found")
        return answer({"success": True, "result": outcome})

    @api.delete("/api/download-queue/<path:raw_id>")
    def delete(raw_id: str) -> Response:
        return delete_one(raw_id)

    @api.patch("/api/download-queue/<path:raw_id>")
    def act(raw_id: str) -> Response:
        body = request_object()
        for name in body:
            if name != "action":
                raise FieldError(name, f"unknown field {name!r} (known: action)")
        action = body.get("action")
        if action not in PATCH_ACTIONS:
            raise FieldError("action", "action must be cancel or retry")
        if action == "cancel":
            return delete_one(raw_id)
        item_id = full_id(raw_id)
        if item_id is None:
            return refusal(404, "not found")
        [(_, outcome)] = retry_jobs(connection, [item_id])
        if outcome == RETRIED:
            return answer({"success": True, "result": outcome})
        if outcome == NOT_FOUND:
            return refusal(404, "not found")
        return refusal(409, outcome)  # "not failed": nothing to retry

    @api.get("/health")
    def health_check() -> Response:
        result = health.check(connection, settings)
        return answer(result, 503 if result["status"] == health.FAIL else 200)

    @api.get("/metrics")
    def metrics_page() -> Response:
        try:
            body, content_type = metrics.render(connection, settings)
        except health.REDIS_ERRORS:
            return refusal(503, "Redis is unreachable")
        return Response(body, 200, {"Content-Type": content_type, "Cache-Control": "no-store"})

    @api.get("/api/openapi.json")
    def openapi_document() -> Response:
        return answer(openapi.document())

    @api.errorhandler(FieldError)
    def field_error(error: FieldError) -> Response:
        return refusal(400, str(error), error.field)

    return api


def is_api_request() -> bool:
    """The request is for the API (JSON errors, rate limit), not a dashboard page."""
    return request.path.startswith(API_PREFIX) or request.path in API_EXTRAS


def register_api(app: Flask, settings: Settings, connection: redis.Redis) -> None:
    """Mount the API on the dashboard app: routes, body limit, rate limit, JSON errors."""
    app.config["MAX_CONTENT_LENGTH"] = settings.api_max_body
    limiter = RateLimiter(settings.api_rate)

    def limit_rate() -> Response | None:
        if not request.path.startswith(API_PREFIX):
            return None
        wait = limiter.admit(request.remote_addr or "?", time.monotonic())
        if wait is None:
            return None
        return refusal(
            429,
            f"too many requests: at most {settings.api_rate} a minute",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    app.before_request(limit_rate)
    app.register_blueprint(create_blueprint(settings, connection))

    def http_error(error: HTTPException) -> Response | HTTPException:
        if not is_api_request():
            return error
        if isinstance(error, RequestEntityTooLarge):
            return refusal(413, f"the body is over {settings.api_max_body} bytes")
        response = refusal(error.code or 500, "not found" if error.code == 404 else (error.description or "refused"))
        if error.code == 405:
            response.headers["Allow"] = ", ".join(error.valid_methods or [])  # type: ignore[attr-defined]
        return response

    app.register_error_handler(HTTPException, http_error)
