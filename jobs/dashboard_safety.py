"""What every dashboard response goes through before Flask sees the request: the Host check and
the browser security headers (a WSGI middleware, so 400s, 401s, errors and static files get
them too, not only the views).

- Host: a web page on another site can point its own DNS name at 127.0.0.1 ("DNS rebinding")
  and then read and write the dashboard as same-origin. Its requests carry its own name in
  `Host`, so only the names in `Settings.allowed_hosts` are answered; anything else gets a
  short 400 before auth, routing or Redis.
- Content-Security-Policy: no inline script, no eval, nothing from another origin. The pages
  are ours (jobs/dashboard_templates, jobs/dashboard_static/dashboard.js): rq-dashboard 0.9.0's
  own ones need inline script and `new Function` (underscore templates).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from flask import Response, request

from jobs.api import answer, is_api_request, refusal

log = logging.getLogger("dq.dashboard")

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",  # Bootstrap's CSS draws its select arrows and toggles as data: SVGs
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
_OURS = frozenset(name.lower() for name, _ in SECURITY_HEADERS)
REALM = "download-queue"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UNKNOWN_HOST_BODY = b"Bad Request: unknown Host header (see DQ_DASHBOARD_ALLOWED_HOSTS).\n"


def origin_allowed(origin: str, allowed_hosts: frozenset[str]) -> bool:
    """An `Origin` header names one of our own addresses (`null` and foreign sites do not)."""
    return urlsplit(origin).netloc.lower() in allowed_hosts


class SafetyMiddleware:
    """Wraps the dashboard's WSGI app: refuses unknown Hosts, adds SECURITY_HEADERS everywhere."""

    def __init__(self, app: WSGIApplication, allowed_hosts: frozenset[str]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def start_with_headers(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], object]:
            kept = [(name, value) for name, value in headers if name.lower() not in _OURS]
            return start_response(status, kept + list(SECURITY_HEADERS), exc_info)

        host = str(environ.get("HTTP_HOST", "")).lower()
        if host not in self.allowed_hosts:
            # repr and a cap: the value is the client's, and it goes into our log.
            log.warning("refused a request for Host %r: not in DQ_DASHBOARD_ALLOWED_HOSTS", host[:100])
            start_with_headers(
                "400 Bad Request",
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(UNKNOWN_HOST_BODY))),
                    ("Cache-Control", "no-store"),
                ],
            )
            return [UNKNOWN_HOST_BODY]
        return self.app(environ, start_with_headers)


def credentials_match(given_user: str, given_password: str, expected: tuple[str, str]) -> bool:
    """Both compared in constant time, and both always compared (no early exit on the name)."""
    user_ok = hmac.compare_digest(given_user.encode(), expected[0].encode())
    password_ok = hmac.compare_digest(given_password.encode(), expected[1].encode())
    return user_ok and password_ok


def auth_hook(basic: tuple[str, str] | None, token: str | None) -> Callable[[], Response | None]:
    """Every request shows the dashboard's basic-auth credentials or (scripts) the API token."""

    def require_credentials() -> Response | None:
        given = request.authorization
        if given is not None and given.type == "basic" and basic is not None:
            if credentials_match(given.username or "", given.password or "", basic):
                return None
        if given is not None and given.type == "bearer" and token is not None and given.token is not None:
            if hmac.compare_digest(given.token.encode(), token.encode()):
                return None
        challenge = f'Basic realm="{REALM}", charset="UTF-8"' if basic is not None else f'Bearer realm="{REALM}"'
        headers = {"WWW-Authenticate": challenge, "Cache-Control": "no-store"}
        if is_api_request():
            return refusal(
                401, "credentials needed (basic auth, or Authorization: Bearer <DQ_API_TOKEN>)", headers=headers
            )
        return Response("Please log in to the download-queue dashboard.\n", 401, headers)

    return require_credentials


def cross_site_write_guard(allowed_hosts: frozenset[str]) -> Callable[[], Response | None]:
    """A page on another site must not be able to POST deletes here through the user's browser
    (which would also send cached basic-auth credentials). Browsers send Origin on POST; it must
    name one of our own addresses (the Host was checked already, so it cannot be the site's)."""

    def refuse_cross_site_writes() -> Response | None:
        if request.method in SAFE_METHODS:
            return None
        origin = request.headers.get("Origin")
        if origin is not None and not origin_allowed(origin, allowed_hosts):
            if is_api_request():
                return refusal(403, "cross-site request refused")
            return answer({"status": "ERROR", "message": "cross-site request refused"}, 403)
        return None

    return refuse_cross_site_writes
