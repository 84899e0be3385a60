"""The web dashboard: rq-dashboard 0.9.0's blueprint served at `/` by a small Flask app of ours.

Everything comes from `Settings`: our Redis, the JSON serializer, the bind address, and HTTP
basic auth when DQ_DASHBOARD_USERNAME/PASSWORD are set. The blueprint stays as installed; what
0.9.0 gets wrong with RQ 3.0 and our jobs is replaced here, endpoint by endpoint, by swapping
`app.view_functions` after the blueprint is registered (the URLs and JSON shapes stay theirs):

- `workers.json` read workers without the serializer, so a worker busy with a JSON job made it
  500 (its current job's call string was unpickled);
- the job page and `job/<id>.json` 500ed for a job that is gone and for jobs with
  dependencies (`str.decode` on RQ 3.0's dependency ids); job lists 500ed for an unknown
  registry name (all of these are 404 or 200 now);
- a plain GET on `/requeue/<queue>` requeued every failed job (a link prefetch could do it);
- Delete called `job.delete()`, which leaves a running download going (and able to recreate
  the job): ours goes through `jobs.deletion.delete_jobs`, like `bin/delete`;
- requeue fetched the job without the serializer;
- compact 500ed for an empty or unknown queue (RQ's `Queue.compact` renames the list away).

The blueprint also opened a new Redis client on every request; we use one shared client.
Writes (POST) carrying a foreign `Origin` are refused, so another web page cannot make the
user's browser delete or requeue jobs here (it would send cached basic-auth credentials too).

The pages are ours too (jobs/dashboard_templates, found before the blueprint's, drawn by
jobs/dashboard_static/dashboard.js): 0.9.0's pasted job and worker fields (description, error,
origin, metadata, call string, worker and queue names) into the page as HTML, so whoever wrote
one could run script here, and they need inline script and eval, which our
Content-Security-Policy forbids. Every request passes jobs.dashboard_safety first: Host check
(DNS rebinding), security headers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import redis
import rq_dashboard
import rq_dashboard.web as dashboard_web
from flask import Blueprint, Flask, Response, current_app, request
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, requeue_job
from rq.queue import Queue
from rq.registry import (
    BaseRegistry,
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.worker import BaseWorker, Worker
from waitress.server import BaseWSGIServer, create_server

from config import Settings
from jobs import history
from jobs.api import answer, register_api
from jobs.connection import SERIALIZER
from jobs.dashboard_safety import SafetyMiddleware, auth_hook, cross_site_write_guard
from jobs.downloads_page import register_downloads_page
from jobs.parts import statuses
from jobs.urls import redacted

log = logging.getLogger("dq.dashboard")

BLUEPRINT = "rq_dashboard"
OUR_STATIC = "dq_dashboard"  # the blueprint serving jobs/dashboard_static at /dq/
REGISTRIES: dict[str, type[BaseRegistry]] = {
    "failed": FailedJobRegistry,
    "deferred": DeferredJobRegistry,
    "started": StartedJobRegistry,
    "finished": FinishedJobRegistry,
    "scheduled": ScheduledJobRegistry,
    "canceled": CanceledJobRegistry,
}
REGISTRY_NAMES = ("queued", *REGISTRIES)
WSGI_THREADS = 8  # requests served at once; each is a few Redis round trips
WAITRESS_BODY_CAP = 16 * 1024 * 1024
WSGI_CONNECTION_LIMIT = 1000  # open client connections before waitress stops accepting
ViewFunction = Callable[..., Any]


def create_app(settings: Settings, connection: redis.Redis) -> Flask:
    """The dashboard app for these settings; `connection` is shared by every request."""
    # rq-dashboard's templates ask for the app's own `static` endpoint (favicon) as well as
    # the blueprint's, so point the app's static folder at the same files.
    static = os.path.join(os.path.dirname(rq_dashboard.__file__), "static")
    # The app's templates are looked up before the blueprint's: ours replace 0.9.0's pages.
    app = Flask(__name__, static_folder=static, template_folder="dashboard_templates")
    app.wsgi_app = SafetyMiddleware(app.wsgi_app, settings.allowed_hosts)  # type: ignore[method-assign]
    app.config["RQ_DASHBOARD_REDIS_URL"] = (settings.effective_redis_url,)
    app.config["RQ_DASHBOARD_DISABLE_DELETE"] = False
    # The blueprint reads the serializer from this module-level object (it has no app config
    # for it); every process serves one dashboard, so setting it globally is what we want.
    dashboard_web.config.serializer = SERIALIZER

    # Registered on the app before the blueprint, so it runs first for every request: pages,
    # JSON, static files and our replacement views alike (add_basic_auth-style). The API's rate
    # limit comes first of all, so guessing credentials is limited too.
    register_api(app, settings, connection)
    if settings.dashboard_auth is not None or settings.api_token is not None:
        app.before_request(auth_hook(settings.dashboard_auth, settings.api_token))
    app.before_request(cross_site_write_guard(settings.allowed_hosts))
    app.register_blueprint(dashboard_web.blueprint)
    app.register_blueprint(Blueprint(OUR_STATIC, __name__, static_folder="dashboard_static", static_url_path="/dq"))
    register_downloads_page(app)

    # The blueprint's own hook opens a new Redis client per request (and 500s for an unknown
    # instance number); ours hands every request the one shared client.
    if BLUEPRINT not in app.before_request_funcs:
        raise RuntimeError("rq-dashboard's connection hook moved; is it still 0.9.x?")
    app.before_request_funcs[BLUEPRINT] = [_shared_connection_hook(connection)]
    app.register_error_handler(NoSuchJobError, _no_such_job)
    _replace_views(app, settings, connection)
    return app


def _shared_connection_hook(connection: redis.Redis) -> Callable[[], Response | None]:
    def use_shared_connection() -> Response | None:
        view_args = request.view_args or {}
        if view_args.get("instance_number", 0) != 0:
            return answer({"status": "ERROR", "message": "only instance 0 exists"}, 404)
        current_app.redis_conn = connection  # type: ignore[attr-defined]
        return None

    return use_shared_connection


def _no_such_job(error: NoSuchJobError) -> Response:
    return answer({"status": "ERROR", "message": str(error) or "no such job"}, 404)


def _replace_views(app: Flask, settings: Settings, connection: redis.Redis) -> None:
    views = app.view_functions

    def replace(endpoint: str, view: ViewFunction) -> None:
        full = f"{BLUEPRINT}.{endpoint}"
        if full not in views:
            raise RuntimeError(f"rq-dashboard has no endpoint {full}; is it still 0.9.x?")
        views[full] = view

    original_job_page = views[f"{BLUEPRINT}.job_view"]
    original_list_jobs = views[f"{BLUEPRINT}.list_jobs"]
    original_jobs_page = views[f"{BLUEPRINT}.jobs_overview"]

    def job_page(instance_number: int, job_id: str) -> Any:
        # Theirs fetches without our serializer and 500s for a job that is gone.
        Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
        return original_job_page(instance_number=instance_number, job_id=job_id)

    def jobs_page(instance_number: int, queue_name: str | None, registry_name: str, **rest: Any) -> Any:
        if registry_name not in REGISTRY_NAMES:
            return answer({"status": "ERROR", "message": f"no registry {registry_name!r}"}, 404)
        # The navbar's "Jobs" link names no queue; theirs then shows RQ's empty "default" queue.
        return original_jobs_page(
            instance_number=instance_number,
            queue_name=queue_name or settings.queue_name,
            registry_name=registry_name,
            **rest,
        )

    def list_jobs(instance_number: int, queue_name: str, registry_name: str, **rest: Any) -> Any:
        # Theirs raises UnboundLocalError (500) for a registry name it does not know.
        if registry_name not in REGISTRY_NAMES:
            return answer({"status": "ERROR", "message": f"no registry {registry_name!r}"}, 404)
        theirs: Any = original_list_jobs(
            instance_number=instance_number, queue_name=queue_name, registry_name=registry_name, **rest
        )
        listed = current_app.make_response(theirs)
        # Their rows carry each job's description and error; a URL in them keeps no password.
        listed.set_data(redacted(listed.get_data(as_text=True)))
        return listed

    def job_info(instance_number: int, job_id: str) -> Response:
        return answer(job_details(connection, job_id))

    def list_workers(instance_number: int) -> Response:
        return answer({"workers": worker_rows(connection)})

    def delete_job(job_id: str) -> Response:
        [(_, outcome)] = delete_ids(connection, settings, [job_id])
        status = "ERROR" if outcome == "not found" else "OK"
        return answer({"status": status, "outcome": outcome})

    def requeue_one(job_id: str) -> Response:
        try:
            requeue_job(job_id, connection=connection, serializer=SERIALIZER)
        except InvalidJobOperation as error:
            return answer({"status": "ERROR", "message": str(error)}, 409)
        history.record(connection, job_id, history.ENQUEUED, "requeued from the dashboard")
        return answer({"status": "OK"})

    def requeue_all(queue_name: str) -> Response:
        # The blueprint also answers GET here; a prefetched or crawled link must change nothing.
        if request.method != "POST":
            response = answer({"status": "ERROR", "message": "use POST to requeue"}, 405)
            response.headers["Allow"] = "POST"
            return response
        registry = FailedJobRegistry(queue_name, connection=connection, serializer=SERIALIZER)
        requeued = 0
        for job_id in registry.get_job_ids(cleanup=False):
            try:
                requeue_job(job_id, connection=connection, serializer=SERIALIZER)
            except (NoSuchJobError, InvalidJobOperation):
                continue  # expired or changed state since we listed it
            history.record(connection, job_id, history.ENQUEUED, "requeued from the dashboard")
            requeued += 1
        return answer({"status": "OK", "count": requeued})

    def empty_queue(queue_name: str, registry_name: str) -> Response:
        # Theirs calls job.delete() on each job, running ones included; ours stops downloads.
        if registry_name == "queued":
            queue = dashboard_queue(connection, queue_name)
            ids = queue.get_job_ids()
        elif registry_name in REGISTRIES:
            registry = REGISTRIES[registry_name](queue_name, connection=connection, serializer=SERIALIZER)
            ids = registry.get_job_ids(cleanup=False)
        else:
            return answer({"status": "ERROR", "message": f"no registry {registry_name!r}"}, 404)
        outcomes = delete_ids(connection, settings, ids) if ids else []
        return answer({"status": "OK", "count": sum(1 for _, o in outcomes if o != "not found")})

    def compact_queue(queue_name: str) -> Response:
        # Theirs (RQ's Queue.compact) renames the list away and pushes the live ids back: a 500
        # for an empty queue (no list to rename), and a job enqueued meanwhile loses its place.
        # Ours removes, in place, only the ids whose job is gone.
        queue = dashboard_queue(connection, queue_name)
        known = queue_name == settings.queue_name or connection.sismember(Queue.redis_queues_keys, queue.key)
        if not known:
            return answer({"status": "ERROR", "message": f"no queue {queue_name!r}"}, 404)
        ids = queue.get_job_ids()
        for job_id, status in zip(ids, statuses(connection, ids), strict=True):
            if status is None:  # the job's hash is gone
                connection.lrem(queue.key, 0, job_id)
        return answer({"status": "OK"})

    replace("job_view", job_page)
    replace("jobs_overview", jobs_page)
    replace("list_jobs", list_jobs)
    replace("job_info", job_info)
    replace("list_workers", list_workers)
    replace("delete_job_view", delete_job)
    replace("requeue_job_view", requeue_one)
    replace("requeue_all", requeue_all)
    replace("empty_queue", empty_queue)
    replace("compact_queue", compact_queue)


def dashboard_queue(connection: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=SERIALIZER)


def delete_ids(connection: redis.Redis, settings: Settings, ids: Sequence[str]) -> list[tuple[str, str]]:
    # Imported here so the dashboard starts even while the deletion module is being changed,
    # and so this module stays cheap to import.
    from jobs.deletion import delete_jobs

    return list(delete_jobs(connection, settings, ids))


def job_details(connection: redis.Redis, job_id: str) -> dict[str, Any]:
    """What `data/job/<id>.json` shows, in rq-dashboard's shape, for any of our jobs."""
    job = Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
    latest = job.latest_result()
    status = job.get_status(refresh=False)
    details: dict[str, Any] = {
        "id": job.id,
        "created_at": dashboard_web.serialize_date(job.created_at),
        "enqueued_at": dashboard_web.serialize_date(job.enqueued_at),
        "started_at": dashboard_web.serialize_date(job.started_at),
        "ended_at": dashboard_web.serialize_date(job.ended_at),
        "origin": job.origin,
        "status": getattr(status, "value", status),
        "result": _json_safe(job.return_value(refresh=False)),
        "exc_info": redacted(latest.exc_string) if latest and latest.exc_string else None,
        "description": redacted(job.description or ""),
        "metadata": redacted(json.dumps(job.meta or {}, default=str)),
    }
    # RQ 3.0 gives dependency ids as str (theirs called .decode() on them and 500ed).
    dependency_ids = [str(dep) for dep in job.dependency_ids]
    if dependency_ids:
        details["depends_on"] = dependency_ids
        details["depends_on_status"] = [
            "active" if Job.exists(dep, connection=connection) else "expired" for dep in dependency_ids
        ]
    return details


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def worker_rows(connection: redis.Redis) -> list[dict[str, Any]]:
    """What `data/workers.json` shows; workers read with our serializer so busy ones work."""
    rows = []
    for worker in Worker.all(connection=connection, serializer=SERIALIZER):
        rows.append(
            {
                "name": worker.name,
                "pid": worker.pid,
                "queues": [queue.name for queue in worker.queues],
                "state": str(worker.get_state()),
                "current_job": _current_job(worker),
                "last_heartbeat": worker.last_heartbeat,
                "birth_date": worker.birth_date,
                "successful_job_count": worker.successful_job_count,
                "failed_job_count": worker.failed_job_count,
                "total_working_time": worker.total_working_time,
                "version": getattr(worker, "version", ""),
                "python_version": getattr(worker, "python_version", ""),
            }
        )
    rows.sort(key=lambda row: (row["state"], row["queues"], row["name"]))
    return rows


def _current_job(worker: BaseWorker) -> dict[str, Any] | str:
    try:
        job = worker.get_current_job()
    except NoSuchJobError:
        # The job ended or was deleted between reading the worker and reading the job.
        return "idle"
    if job is None:
        return "idle"
    return {
        "job_id": job.id,
        "description": redacted(job.description or ""),
        "created_at": dashboard_web.serialize_date(job.created_at),
        "call_string": redacted(job.get_call_string() or ""),  # it spells out the job's URL
    }


def make_dashboard_server(settings: Settings, connection: redis.Redis) -> BaseWSGIServer:
    """The production WSGI server (waitress) bound to DQ_DASHBOARD_HOST:DQ_DASHBOARD_PORT.

    Raises OSError when the address cannot be bound. `run()` serves until `close()`.
    """
    app = create_app(settings, connection)
    return create_server(
        app,
        host=settings.dashboard_host,
        port=settings.dashboard_port,
        threads=WSGI_THREADS,
        connection_limit=WSGI_CONNECTION_LIMIT,
        # Waitress refuses a body past its own cap itself (plain text); Flask's JSON 413 for
        # DQ_API_MAX_BODY must come first, and waitress buffers big bodies on disk, not in memory.
        max_request_body_size=max(WAITRESS_BODY_CAP, 4 * settings.api_max_body),
        ident="download-queue",
        expose_tracebacks=False,
    )
