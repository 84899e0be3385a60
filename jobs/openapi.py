"""The OpenAPI 3 document of the HTTP API (`GET /api/openapi.json`), as `jobs.api` answers.

tests/test_api_fuzz.py holds the routes to it: schemathesis generates requests from this
document and checks every answer's status, content type and body against it.
"""

from __future__ import annotations

from typing import Any

STATES = ["queued", "processing", "completed", "failed", "partial"]

_ERROR = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {
        "success": {"const": False},
        "error": {"type": "string"},
        "field": {"type": "string", "description": "the request field refused (400 only)"},
    },
}
_PROGRESS = {
    "type": "object",
    "required": ["bytes_done", "bytes_total"],
    "properties": {
        "bytes_done": {"type": "integer", "minimum": 0},
        "bytes_total": {"type": ["integer", "null"]},
        "rate": {"type": ["number", "null"], "description": "bytes a second while it runs"},
    },
}
_NULLABLE_TEXT = {"type": ["string", "null"]}
_JOB = {
    "type": "object",
    "description": "A track, playlist or album, as `bin/jobs --json` prints it.",
    "required": ["id", "kind", "state", "url", "dest", "error", "progress", "enqueued_at"],
    "properties": {
        "id": {"type": "string"},
        "kind": {"enum": ["track", "playlist", "album"]},
        "state": {"enum": STATES},
        "status": {"type": "string", "description": "RQ's own status (tracks), the state (albums)"},
        "url": _NULLABLE_TEXT,
        "dest": {"type": "string"},
        "file": _NULLABLE_TEXT,
        "path": {"type": "string"},
        "error": _NULLABLE_TEXT,
        "progress": _PROGRESS,
        "album_id": _NULLABLE_TEXT,
        "enqueued_at": _NULLABLE_TEXT,
        "started_at": _NULLABLE_TEXT,
        "ended_at": _NULLABLE_TEXT,
        "attempts": {"type": "integer", "minimum": 0},
        "max_attempts": {"type": ["integer", "null"]},
        "next_attempt_at": _NULLABLE_TEXT,
        "last_error": _NULLABLE_TEXT,
        "name": {"type": "string", "description": "albums: the folder name"},
        "tracks": {"type": "object", "description": "albums: total, completed, failed"},
        "failed_tracks": {"type": "array", "items": {"type": "object"}},
        "track_ids": {"type": "array", "items": {"type": "string"}},
        "playlist_job": _NULLABLE_TEXT,
    },
}
_ENQUEUE_BODY = {
    "type": "object",
    "additionalProperties": False,
    "description": "One of url, urls or playlist. With album: one album of the URLs in dest/album/.",
    "properties": {
        "url": {"type": "string", "pattern": "^https?://", "maxLength": 8192},
        "urls": {
            "type": "array",
            "items": {"type": "string", "pattern": "^https?://", "maxLength": 8192},
            "minItems": 1,
        },
        "dest": {"type": "string", "description": "folder relative to the download dir"},
        "name": {"type": "string", "description": "file name to save as (one URL, not with album)"},
        "album": {"type": "string", "description": "album folder name"},
        "playlist": {"type": "string", "description": "an M3U/M3U8 playlist's URL: one album of its tracks"},
        "force": {"type": "boolean", "description": "enqueue even if the same download is queued"},
    },
}
_ENQUEUED = {
    "type": "object",
    "required": ["success", "jobId", "jobIds", "warning"],
    "properties": {
        "success": {"const": True},
        "jobId": {"type": "string", "description": "the first id: the album's, or the first job's"},
        "jobIds": {"type": "array", "items": {"type": "string"}},
        "warning": {"type": ["string", "null"], "description": "set above DQ_QUEUE_WARN queued jobs"},
    },
}
_STATS = {
    "type": "object",
    "required": ["success", "queue", "worker"],
    "properties": {
        "success": {"const": True},
        "queue": {
            "type": "object",
            "required": ["queued", "processing", "completed", "failed", "total"],
            "properties": {
                name: {"type": "integer", "minimum": 0}
                for name in ("queued", "processing", "completed", "failed", "total")
            },
        },
        "worker": {
            "type": "object",
            "required": ["running", "activeDownloads", "maxConcurrent", "workers"],
            "properties": {
                "running": {"type": "boolean"},
                "activeDownloads": {"type": "integer", "minimum": 0},
                "maxConcurrent": {"type": "integer", "minimum": 1},
                "workers": {"type": "integer", "minimum": 0},
            },
        },
    },
}
_RESULT = {
    "type": "object",
    "required": ["success", "result"],
    "properties": {"success": {"const": True}, "result": {"enum": ["deleted", "cancelled", "retried"]}},
}
_HEALTH = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {"status": {"enum": ["ok", "warn", "fail"]}, "checks": {"type": "object"}},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json({"$ref": "#/components/schemas/Error"}, description)


_COMMON = {
    "401": {"description": "credentials needed (basic auth, or Bearer $DQ_API_TOKEN)"},
    "429": {
        **_error("over DQ_API_RATE requests a minute from this address"),
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    },
}
_ID_PARAMETER = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "a job or album id, or a unique prefix of at least 6 characters",
    "schema": {"type": "string"},
}


def document() -> dict[str, Any]:
    job_ref = {"$ref": "#/components/schemas/Job"}
    too_large = _error("a body over DQ_API_MAX_BODY bytes (over 16 MiB the server's own plain-text answer)")
    too_large["content"]["text/plain"] = {"schema": {"type": "string"}}
    writes = {"403": _error("a foreign Origin"), "413": too_large}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "download-queue",
            "version": "1",
            "description": "Put downloads on the queue, follow them, delete and retry them.",
        },
        "components": {
            "schemas": {"Error": _ERROR, "Job": _JOB, "Stats": _STATS},
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer", "description": "DQ_API_TOKEN"},
            },
        },
        "security": [{}, {"basic": []}, {"bearer": []}],
        "paths": {
            "/api/download-queue": {
                "post": {
                    "operationId": "enqueue",
                    "summary": "Enqueue tracks, an album or a playlist (all or nothing)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ENQUEUE_BODY}}},
                    "responses": {
                        "201": {
                            **_json(_ENQUEUED, "enqueued (an id already queued for the same download stands)"),
                            "links": {
                                name: {"operationId": operation, "parameters": {"id": "$response.body#/jobId"}}
                                for name, operation in (("Job", "getJob"), ("Delete", "deleteJob"), ("Act", "actOnJob"))
                            },
                        },
                        "400": _error("a field refused (named in `field`); nothing enqueued"),
                        "503": _error("Queue full (N queued, limit M); nothing enqueued"),
                        **writes,
                        **_COMMON,
                    },
                },
                "get": {
                    "summary": "Every job and album kept",
                    "parameters": [{"name": "status", "in": "query", "schema": {"enum": STATES}}],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["success", "jobs", "count"],
                                "properties": {
                                    "success": {"const": True},
                                    "jobs": {"type": "array", "items": job_ref},
                                    "count": {"type": "integer", "minimum": 0},
                                },
                            },
                            "the jobs, oldest first",
                        ),
                        "400": _error("an unknown status"),
                        **_COMMON,
                    },
                },
            },
            "/api/download-queue/stats": {
                "get": {
                    "summary": "Queue and worker figures (as `bin/stats --json`)",
                    "responses": {"200": _json({"$ref": "#/components/schemas/Stats"}, "the figures"), **_COMMON},
                }
            },
            "/api/download-queue/{id}": {
                "parameters": [_ID_PARAMETER],
                "get": {
                    "operationId": "getJob",
                    "summary": "One job or album",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["success", "job"],
                                "properties": {"success": {"const": True}, "job": job_ref},
                            },
                            "the job",
                        ),
                        "400": _error("an ambiguous id prefix"),
                        "404": _error("not found"),
                        **_COMMON,
                    },
                },
                "delete": {
                    "operationId": "deleteJob",
                    "summary": "Delete a job or album in any state (a running download is stopped first)",
                    "responses": {
                        "200": _json(_RESULT, "deleted (it was not running) or cancelled (it was)"),
                        "400": _error("an ambiguous id prefix"),
                        "404": _error("not found"),
                        **writes,
                        **_COMMON,
                    },
                },
                "patch": {
                    "operationId": "actOnJob",
                    "summary": "cancel (as DELETE) or retry (a failed job, an album's failed tracks)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["action"],
                                    "additionalProperties": False,
                                    "properties": {"action": {"enum": ["cancel", "retry"]}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(_RESULT, "done"),
                        "400": _error("a bad action or an ambiguous id prefix"),
                        "404": _error("not found"),
                        "409": _error("not failed: nothing to retry"),
                        **writes,
                        **_COMMON,
                    },
                },
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3"), **_COMMON},
                }
            },
            "/health": {
                "get": {
                    "summary": "Redis, the supervisor heartbeat, the workers, the backlog",
                    "responses": {
                        "200": _json(_HEALTH, "ok or warn"),
                        "503": _json(_HEALTH, "fail"),
                        "401": _COMMON["401"],
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus text format",
                    "responses": {
                        "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                        "401": _COMMON["401"],
                    },
                }
            },
        },
    }
