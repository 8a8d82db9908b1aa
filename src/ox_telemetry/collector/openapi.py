"""The OpenAPI 3.1 description served at ``/openapi.json``: every endpoint, its bodies and answers."""

from __future__ import annotations

from typing import Any

from ..fields import FIELDS, MAX_ID, Field
from ..wire import MAX_TEXT
from .body import BODY_FLOOR, BODY_GRACE_S, MAX_BODY
from .ingest import MAX_EVENT_BYTES, MAX_EVENTS, REQUIRED

_TEXT = {"type": "string"}
_COUNT = {"type": "integer", "minimum": 0}
_RFC3339 = {"type": "string", "format": "date-time"}

# JSON Schema of each wire kind (fields.py), whose limits ingest checks.
_KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "s": _TEXT, "i": {"type": "integer"}, "b": {"type": "boolean"}, "t": _RFC3339,
    "m": {"type": "object", "additionalProperties": _TEXT},
}


def _event_property(field: Field) -> dict[str, Any]:
    schema = {**_KIND_SCHEMAS[field.kind], "description": field.description}
    if field.required:
        schema["minLength"] = 1
    if field.max_length is not None:
        schema["maxLength"] = field.max_length
    if field.int_range is not None:
        schema["minimum"], schema["maximum"] = field.int_range
    return schema


EVENT: dict[str, Any] = {
    "type": "object",
    "description": f"A client event (CONTRACT.md section 2). At most {MAX_EVENT_BYTES} bytes as JSON; unknown keys "
    "are ignored.",
    "required": list(REQUIRED),
    "properties": {f.name: _event_property(f) for f in FIELDS},
}
BATCH = {
    "type": "object",
    "description": "What a CLI posts: events plus where they came from.",
    "properties": {
        "events": {"type": "array", "items": EVENT, "maxItems": MAX_EVENTS},
        **{name: {**_TEXT, "description": f"Stored cut to {MAX_TEXT} characters."}
           for name in ("cli_version", "os", "arch")},
        "batch_timestamp": {**_RFC3339, "description": "Send time on the client's clock; corrects its skew."},
        "client_id": {**_TEXT, "description": f"The anonymous installation id (a UUIDv4 made once per user). "
                      f"Counts installations; one that is not a non-empty text of at most {MAX_ID} characters is "
                      "ignored (the events count as from an unknown installation)."},
    },
}
DAEMON_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event"],
    "properties": {
        "uuid": {"type": "string", "maxLength": MAX_ID, "description": "Unique id; a repeat is stored once."},
        "ts": {"type": "integer", "description": "Unix milliseconds."},
        "tslocal": _RFC3339,
        "event": {"type": "string", "minLength": 1},
        "props": {"type": "object"},
    },
}
DAEMON_UPLOAD = {
    "type": "object",
    "required": ["clientid"],
    "properties": {
        "clientid": {"type": "string", "minLength": 1, "maxLength": MAX_ID},
        "events": {"type": "array", "items": DAEMON_EVENT, "maxItems": MAX_EVENTS},
    },
}
ERROR = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
}
INGEST_RESULT = {
    "type": "object",
    "required": ["accepted", "duplicates", "rejected"],
    "properties": {
        "accepted": {**_COUNT, "description": "Events stored, now or by an earlier request (duplicates)."},
        "duplicates": {**_COUNT, "description": "Accepted events that were already stored."},
        "rejected": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "reason", "code"],
                "properties": {"index": _COUNT, "reason": _TEXT, "code": _TEXT},
            },
        },
    },
}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


_RETRY = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}
_ERR = {"$ref": "#/components/schemas/Error"}
# Any request, before it reaches its endpoint (access.BrowserGuard).
_GUARD = {
    "403": _json(_ERR, "The request carries an Origin header that is neither the collector's own nor allowed "
                       "(--allow-origin)."),
    "421": _json(_ERR, "Bound to loopback, and the Host header names neither loopback nor a --server-name."),
}


def _ingest(summary: str, body: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    ok_headers = extra or {}
    return {
        "post": {
            "summary": summary,
            "security": [{}, {"writeKey": []}, {"writeKeyHeader": []}],
            "parameters": [{
                "name": "Content-Encoding", "in": "header", "required": False,
                "schema": {"type": "string", "enum": ["gzip", "identity"]},
            }],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
            },
            "responses": {
                "200": _json({"$ref": "#/components/schemas/IngestResult"},
                             "Committed. Events that failed validation are listed in `rejected`.", ok_headers),
                "400": _json(_ERR, "The body is not a readable message (the error names the problem), or it nests "
                                   "deeper than about 1,000 levels."),
                "401": _json(_ERR, "Write keys are configured and none was given, or it is unknown."),
                "408": _json(_ERR, f"The body arrived slower than {BODY_FLOOR} bytes a second (after a grace of "
                                   f"{BODY_GRACE_S:.0f} s)."),
                "413": _json(_ERR, f"Body over {MAX_BODY} bytes, over 20 MiB gunzipped, or over "
                                   f"{MAX_EVENTS} events."),
                "415": _json(_ERR, "A Content-Type other than application/json, or a Content-Encoding other "
                                   "than gzip or identity."),
                "429": _json(_ERR, "Rate limited, per write key or per address.", _RETRY),
                "503": _json(_ERR, "Overloaded, too many request bytes in flight, or the store is unavailable.",
                             _RETRY),
                **_GUARD,
            },
        }
    }


def _read(summary: str, content: dict[str, Any], parameters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{}, {"readToken": []}, {"readTokenCookie": []}],
        "responses": {
            "200": {"description": "OK", "content": content},
            "401": _json(_ERR, "A read token is configured and none was given, or it is wrong."),
            **_GUARD,
        },
    }
    if parameters:
        op["parameters"] = parameters
        op["responses"]["400"] = _json(_ERR, "A query parameter is invalid.")
    return {"get": op}


def _page() -> dict[str, Any]:
    page = _read("The dashboard page.", {"text/html": {"schema": {"type": "string"}}},
                 [{"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
                   "description": "The read token, exchanged once for the cookie: the answer is 303 to `/`, with "
                                  "the cookie set only when the token is right."}])
    page["get"]["responses"]["303"] = {"description": "The token left the URL; the cookie is set if it was right."}
    del page["get"]["responses"]["400"]
    return page


_TIME_PARAM = {"type": "string", "description": "RFC 3339 time or Unix milliseconds."}
_RANGE = [
    {"name": "from", "in": "query", "required": False, "schema": _TIME_PARAM},
    {"name": "to", "in": "query", "required": False, "schema": _TIME_PARAM},
]
_FILTERS = [
    {"name": "version", "in": "query", "required": False, "schema": _TEXT, "description": "Only this CLI version."},
    {"name": "os", "in": "query", "required": False, "schema": _TEXT,
     "description": "Only this OS (any architecture), or `os/arch` when it holds a slash."},
    {"name": "command", "in": "query", "required": False, "schema": _TEXT, "description": "Only runs of this command."},
]
_DAILY = {"type": "array", "items": {"type": "object", "required": ["day", "installs"], "properties": {
    "day": {"type": "string", "format": "date"}, "installs": _COUNT}}}
INSTALLS = {
    "type": "object",
    "required": ["total", "unknown_events", "groups", "daily", "series"],
    "properties": {
        "total": {**_COUNT, "description": "Distinct installations (estimated: within about 2%)."},
        "unknown_events": {**_COUNT, "description": "Events sent without an installation id (older clients): "
                                                    "not counted as installations."},
        "groups": {"type": "array", "items": {"type": "object", "required": ["key", "installs"],
                                              "properties": {"key": _TEXT, "installs": _COUNT}},
                   "description": "With `by`: installations per value, most first."},
        "daily": {**_DAILY, "description": "Installations on each UTC day of the range."},
        "series": {"type": "array", "items": {"type": "object", "required": ["key", "daily"],
                                              "properties": {"key": _TEXT, "daily": _DAILY}},
                   "description": "With `by`: the same keys as `groups`, installations per day each."},
    },
}
ERRORS = {
    "type": "object",
    "required": ["total", "errors"],
    "properties": {
        "total": {**_COUNT, "description": "Failed command runs in the range."},
        "errors": {"type": "array", "items": {"type": "object", "required": ["error_code", "command", "version",
                                                                             "count"], "properties": {
            "error_code": _TEXT, "command": _TEXT, "version": _TEXT, "count": _COUNT}}},
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "ox-telemetry collector",
        "version": "1",
        "description": "Receives CLI and daemon telemetry, stores it, and serves a dashboard. Write keys go in "
        "`Authorization: Bearer <key>` or `X-Ox-Write-Key`; the read token in `Authorization: Bearer <token>` or "
        "the `ox_read_token` cookie, which `GET /?token=` sets once. Ingest takes `Content-Type: "
        "application/json` only.",
    },
    "paths": {
        "/api/v1/telemetry": _ingest("Ingest a client Batch (plain or gzip JSON).", "Batch"),
        "/tevents": _ingest(
            "Ingest a daemon upload (plain or gzip JSON).", "DaemonUpload",
            {"X-SageOx-Interval": {"schema": {"type": "string"}, "description": "The daemon's send interval."}},
        ),
        "/healthz": {"get": {
            "summary": "Liveness and store health.",
            "responses": {
                "200": _json({"type": "object"}, "Serving."),
                "503": _json(_ERR, "The writer or the store is down."),
                **_GUARD,
            },
        }},
        "/metrics": _read("Prometheus metrics.", {"text/plain": {"schema": {"type": "string"}}}),
        "/favicon.ico": {"get": {
            "summary": "The dashboard's icon (no read token needed).",
            "responses": {"200": {"description": "The icon.", "content": {"image/x-icon": {}}}, **_GUARD},
        }},
        "/openapi.json": {"get": {
            "summary": "This document.",
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document."), **_GUARD},
        }},
        "/api/v1/stats": _read(
            "Dashboard data for a time range (default: the last 24 hours); filtered, of the matching CLI events.",
            {"application/json": {"schema": {"type": "object"}}}, [*_RANGE, *_FILTERS],
        ),
        "/api/v1/installs": _read(
            "Distinct installations in the UTC days the range touches, optionally grouped.",
            {"application/json": {"schema": {"$ref": "#/components/schemas/Installs"}}},
            [*_RANGE, *_FILTERS, {"name": "by", "in": "query", "required": False,
                                  "schema": {"type": "string", "enum": ["version", "os", "command"]}}],
        ),
        "/api/v1/errors": _read(
            "Failed command runs by error code (as stored, after the client's scrubbing), command and version.",
            {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}},
            [*_RANGE, *_FILTERS, {"name": "limit", "in": "query", "required": False,
                                  "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}}],
        ),
        "/api/v1/forget": {"post": {
            "summary": "Delete the stored events of one installation (aggregates are kept).",
            "security": [{}, {"writeKey": []}, {"writeKeyHeader": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["client_id"],
                "properties": {"client_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID}}}}}},
            "responses": {
                "200": _json({"type": "object", "required": ["forgotten"], "properties": {"forgotten": _COUNT}},
                             "Deleted: how many stored events went."),
                "400": _json(_ERR, "The body is not `{\"client_id\": \"...\"}`."),
                "401": _json(_ERR, "Write keys are configured and none was given, or it is unknown."),
                "413": _json(_ERR, "The body is over 4,096 bytes."),
                "415": _json(_ERR, "A Content-Type other than application/json."),
                "429": _json(_ERR, "Rate limited, per write key or per address.", _RETRY),
                "503": _json(_ERR, "The store is unavailable.", _RETRY),
                **_GUARD,
            },
        }},
        "/": _page(),
    },
    "components": {
        "schemas": {
            "Event": EVENT, "Batch": BATCH, "DaemonEvent": DAEMON_EVENT, "DaemonUpload": DAEMON_UPLOAD,
            "Error": ERROR, "IngestResult": INGEST_RESULT, "Installs": INSTALLS, "Errors": ERRORS,
        },
        "securitySchemes": {
            "writeKey": {"type": "http", "scheme": "bearer"},
            "writeKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Ox-Write-Key"},
            "readToken": {"type": "http", "scheme": "bearer"},
            "readTokenCookie": {"type": "apiKey", "in": "cookie", "name": "ox_read_token"},
        },
    },
}
