"""``GET /openapi.json`` and ``GET /docs``: the REST API described for machines.

The document is written by hand from the contract (``docs/reference/api.md``)
and kept true by ``tests/web/test_openapi.py``: every route of the app must
appear in it, and schemathesis checks the answers against it. The ``/docs``
page is a few lines of self-contained HTML and JavaScript that list the routes
from the JSON; nothing is fetched from the internet. Both are served without
the API key: they describe the API, they reveal no data.
"""

from __future__ import annotations

from typing import Any, Final

from quart import Quart, Response, jsonify

from felix._core.events import SERVER_TYPES, TYPE_NAME, WORKFLOW_EVENT_TYPES
from felix.settings import Settings

__all__ = ["OPEN_PATHS", "add_openapi_routes", "openapi_document"]

#: Paths served without the API key.
OPEN_PATHS: Final = frozenset({"/openapi.json", "/docs"})

_RESERVED: Final = frozenset(WORKFLOW_EVENT_TYPES) | frozenset(SERVER_TYPES)
_ERROR = {"$ref": "#/components/schemas/Error"}
_WORKFLOW = {"$ref": "#/components/schemas/Workflow"}
_ID_PARAM = {"$ref": "#/components/parameters/WorkflowId"}
_UNAUTHORIZED = {"$ref": "#/components/responses/Unauthorized"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _int_query(name: str, description: str, minimum: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": minimum},
    }


_STRING: Final = {"type": "string", "minLength": 1}
_UNIT: Final = {"type": "number", "minimum": 0, "maximum": 1}
#: Fields per producer event type, and which are required (the contract's table).
_EVENT_FIELDS: Final[dict[str, tuple[dict[str, Any], list[str]]]] = {
    "workflow_status": ({"status": {"$ref": "#/components/schemas/Status"}}, ["status"]),
    "agent_spawned": (
        {"agent_id": _STRING, "agent_type": _STRING, "spawn_time": {"type": "number"}},
        ["agent_id", "agent_type", "spawn_time"],
    ),
    "agent_output": (
        {"agent_id": _STRING, "content": {"type": "string"}, "confidence": _UNIT},
        ["agent_id", "content", "confidence"],
    ),
    "synthesis": (
        {
            "content": {"type": "string"},
            "confidence": _UNIT,
            "final": {"type": "boolean"},
            "agents_synthesized": {
                "oneOf": [
                    {"type": "integer", "minimum": 0},
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "null"},
                ]
            },
        },
        ["content"],
    ),
    "error": ({"message": {"type": "string"}, "fatal": {"type": "boolean"}}, ["message"]),
    "completed": ({"result": {}}, []),
}
#: The envelope is the server's: a producer may not send these fields.
_NO_ENVELOPE: Final = {"workflow_id": False, "seq": False, "timestamp": False}


def _event_in(event_type: str) -> dict[str, Any]:
    properties, required = _EVENT_FIELDS[event_type]
    return {
        "type": "object",
        "title": event_type,
        "required": ["type", *required],
        "properties": {"type": {"const": event_type}, **properties, **_NO_ENVELOPE},
        "additionalProperties": True,
    }


_EVENT_IN: Final[dict[str, Any]] = {
    "description": "A workflow event: its type and its own fields, flat (extra fields are kept).",
    "oneOf": [_event_in(event_type) for event_type in _EVENT_FIELDS],
}

_EVENT_OUT: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["type", "workflow_id", "seq", "timestamp"],
    "properties": {
        "type": {"type": "string"},
        "workflow_id": {"type": "string"},
        "seq": {"type": "integer", "minimum": 1},
        "timestamp": {"type": "string"},
    },
    "additionalProperties": True,
}


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 description of Felix's REST API with ``settings``' limits.

    A fresh dict each call.
    """
    nullable_string = {"type": ["string", "null"]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Felix",
            "version": "1",
            "description": (
                "Real-time event streams for multi-agent workflows. Producers use this REST "
                "API; subscribers use the WebSockets at /api/v1/ws/workflows/{workflow_id} "
                "and /api/v1/ws/system/events (not described here)."
            ),
        },
        "security": [{"bearer": []}, {"apiKey": []}, {}],
        "paths": {
            "/api/v1/workflows": {
                "post": {
                    "summary": "Create a workflow",
                    "operationId": "createWorkflow",
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/WorkflowCreate"}
                            }
                        },
                    },
                    "responses": {
                        "201": _json("The new workflow.", _WORKFLOW),
                        "401": _UNAUTHORIZED,
                        "409": _error("The workflow id is taken."),
                        "413": _error("task and metadata are too large."),
                        "422": _error("Invalid body."),
                        "503": _error("Too many workflows, or shutting down."),
                    },
                },
                "get": {
                    "summary": "List workflows",
                    "operationId": "listWorkflows",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "required": False,
                            "description": "Only workflows of this status (empty: all).",
                            "schema": {
                                "anyOf": [{"$ref": "#/components/schemas/Status"}, {"const": ""}]
                            },
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        _int_query("offset", "Workflows to skip."),
                    ],
                    "responses": {
                        "200": _json(
                            "One page of workflows and the total that matched.",
                            {
                                "type": "object",
                                "required": ["workflows", "total"],
                                "properties": {
                                    "workflows": {"type": "array", "items": _WORKFLOW},
                                    "total": {"type": "integer"},
                                    "limit": {"type": "integer"},
                                    "offset": {"type": "integer"},
                                },
                            },
                        ),
                        "401": _UNAUTHORIZED,
                        "422": _error("Invalid query."),
                    },
                },
            },
            "/api/v1/workflows/{workflow_id}": {
                "parameters": [_ID_PARAM],
                "get": {
                    "summary": "One workflow with the state its events built",
                    "operationId": "getWorkflow",
                    "responses": {
                        "200": _json("The workflow.", _WORKFLOW),
                        "401": _UNAUTHORIZED,
                        "404": _error("No such workflow."),
                    },
                },
                "delete": {
                    "summary": "Cancel a workflow (publishes workflow_status cancelled)",
                    "operationId": "cancelWorkflow",
                    "responses": {
                        "202": _json(
                            "Cancelled.",
                            {
                                "type": "object",
                                "required": ["workflow_id", "status", "seq"],
                                "properties": {
                                    "workflow_id": {"type": "string"},
                                    "status": {"const": "cancelled"},
                                    "seq": {"type": "integer"},
                                },
                            },
                        ),
                        "401": _UNAUTHORIZED,
                        "404": _error("No such workflow."),
                        "409": _error("The workflow already ended."),
                        "503": _error("The workflow's inbox stayed full."),
                    },
                },
            },
            "/api/v1/workflows/{workflow_id}/events": {
                "parameters": [_ID_PARAM],
                "get": {
                    "summary": "Retained events after a seq",
                    "operationId": "listEvents",
                    "parameters": [
                        _int_query("after", "Return events with seq > after (default 0)."),
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "description": "At most this many events (FELIX_HISTORY_SIZE).",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": settings.history_size,
                            },
                        },
                    ],
                    "responses": {
                        "200": _json(
                            "The retained events, oldest first.",
                            {
                                "type": "object",
                                "required": ["workflow_id", "events", "last_seq"],
                                "properties": {
                                    "workflow_id": {"type": "string"},
                                    "events": {"type": "array", "items": _EVENT_OUT},
                                    "last_seq": {"type": "integer"},
                                },
                            },
                        ),
                        "401": _UNAUTHORIZED,
                        "404": _error("No such workflow."),
                        "422": _error("Invalid query."),
                    },
                },
                "post": {
                    "summary": "Publish one event or a batch (all or nothing)",
                    "operationId": "publishEvents",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        _EVENT_IN,
                                        {"type": "array", "minItems": 1, "items": _EVENT_IN},
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(
                            "Applied.",
                            {
                                "type": "object",
                                "required": ["accepted", "first_seq", "last_seq"],
                                "properties": {
                                    "accepted": {"type": "integer"},
                                    "first_seq": {"type": "integer"},
                                    "last_seq": {"type": "integer"},
                                },
                            },
                        ),
                        "401": _UNAUTHORIZED,
                        "404": _error("No such workflow."),
                        "409": _error("The workflow ended; it takes no more events."),
                        "413": _error("An event, the batch or the body is too large."),
                        "422": _error("Invalid event; `index` names the first bad one."),
                        "429": _error("Rate limited (FELIX_RATE_PUBLISH)."),
                        "503": _error("The workflow's inbox stayed full."),
                    },
                },
            },
            "/api/v1/workflows/{workflow_id}/tokens": {
                "parameters": [_ID_PARAM],
                "post": {
                    "summary": "Mint a subscribe token for one workflow's WebSocket",
                    "operationId": "mintToken",
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": ["object", "null"],
                                    "properties": {
                                        "ttl_seconds": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": settings.token_max_ttl,
                                        }
                                    },
                                    "additionalProperties": False,
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _json(
                            "The token.",
                            {
                                "type": "object",
                                "required": ["token", "expires_at"],
                                "properties": {
                                    "token": {"type": "string"},
                                    "expires_at": {"type": "string"},
                                },
                            },
                        ),
                        "401": _UNAUTHORIZED,
                        "404": _error("No such workflow."),
                        "422": _error("Invalid body."),
                    },
                },
            },
            "/api/v1/broadcast": {
                "post": {
                    "summary": "Send a system event to every connected client",
                    "operationId": "broadcast",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["type"],
                                    "properties": {
                                        "type": {
                                            "type": "string",
                                            "pattern": f"^{TYPE_NAME.pattern}$",
                                            "not": {"enum": sorted(_RESERVED)},
                                        },
                                        **_NO_ENVELOPE,
                                    },
                                    "additionalProperties": True,
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(
                            "Queued.",
                            {
                                "type": "object",
                                "required": ["accepted", "delivered"],
                                "properties": {
                                    "accepted": {"type": "integer"},
                                    "delivered": {"type": "integer"},
                                },
                            },
                        ),
                        "401": _UNAUTHORIZED,
                        "413": _error("The event or body is too large."),
                        "422": _error("Invalid event (a workflow type, or malformed)."),
                        "429": _error("Rate limited (FELIX_RATE_PUBLISH)."),
                    },
                },
            },
            "/api/v1/connections": {
                "get": {
                    "summary": "Open WebSocket connections",
                    "operationId": "listConnections",
                    "responses": {
                        "200": _json(
                            "Every open connection.",
                            {
                                "type": "object",
                                "required": ["connections", "total"],
                                "properties": {
                                    "connections": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Connection"},
                                    },
                                    "total": {"type": "integer"},
                                },
                            },
                        ),
                        "401": _UNAUTHORIZED,
                    },
                },
            },
            "/api/v1/stats": {
                "get": {
                    "summary": "Operator figures",
                    "operationId": "stats",
                    "responses": {
                        "200": _json("Counts for operators.", {"type": "object"}),
                        "401": _UNAUTHORIZED,
                    },
                },
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and readiness (no key needed)",
                    "operationId": "healthz",
                    "security": [{}],
                    "responses": {
                        "200": _json("Serving.", {"$ref": "#/components/schemas/Health"}),
                        "503": _json(
                            "Shutting down, or the broker cannot be reached.",
                            {"$ref": "#/components/schemas/Health"},
                        ),
                    },
                },
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text format)",
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": _UNAUTHORIZED,
                    },
                },
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document (no key needed)",
                    "operationId": "openapi",
                    "security": [{}],
                    "responses": {"200": _json("OpenAPI 3.1.", {"type": "object"})},
                },
            },
            "/docs": {
                "get": {
                    "summary": "A page listing the routes of this document (no key needed)",
                    "operationId": "docs",
                    "security": [{}],
                    "responses": {
                        "200": {
                            "description": "HTML.",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                },
            },
            **_dashboard_paths(),
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "parameters": {
                "WorkflowId": {
                    "name": "workflow_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                }
            },
            "responses": {"Unauthorized": _error("Missing or wrong API key.")},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string", "description": "A stable error code."},
                        "message": {"type": "string"},
                        "index": {
                            "type": "integer",
                            "description": "In a batch, the index of the first bad event.",
                        },
                    },
                },
                "Status": {
                    "type": "string",
                    "enum": ["pending", "running", "completed", "failed", "cancelled"],
                },
                "WorkflowCreate": {
                    "type": ["object", "null"],
                    "properties": {
                        "workflow_id": {
                            "type": ["string", "null"],
                            "pattern": "^[A-Za-z0-9_-]{1,64}$",
                            "description": "Omitted or null: the server makes one (wf_ + hex).",
                        },
                        "task": nullable_string,
                        "metadata": {"type": ["object", "null"]},
                    },
                    "additionalProperties": False,
                },
                "Workflow": {
                    "type": "object",
                    "required": [
                        "workflow_id",
                        "status",
                        "task",
                        "metadata",
                        "created_at",
                        "updated_at",
                        "last_seq",
                        "subscribers",
                        "agents",
                        "synthesis",
                        "result",
                        "error",
                    ],
                    "properties": {
                        "workflow_id": {"type": "string"},
                        "status": {"$ref": "#/components/schemas/Status"},
                        "task": nullable_string,
                        "metadata": {"type": "object"},
                        "created_at": {"type": "string"},
                        "updated_at": {"type": "string"},
                        "last_seq": {"type": "integer"},
                        "subscribers": {"type": "integer"},
                        "agents": {"type": "array", "items": {"type": "object"}},
                        "synthesis": {"type": ["object", "null"]},
                        "result": {},
                        "error": {"type": ["object", "null"]},
                    },
                },
                "Connection": {
                    "type": "object",
                    "required": [
                        "connection_id",
                        "workflow_id",
                        "remote",
                        "connected_at",
                        "messages_sent",
                    ],
                    "properties": {
                        "connection_id": {"type": "string"},
                        "workflow_id": nullable_string,
                        "remote": nullable_string,
                        "connected_at": {"type": "string"},
                        "messages_sent": {"type": "integer"},
                        "buffered_bytes": {"type": "integer"},
                    },
                },
                "DashboardSession": {
                    "type": "object",
                    "required": ["key_required", "signed_in", "expires_at"],
                    "properties": {
                        "key_required": {"type": "boolean"},
                        "signed_in": {"type": "boolean"},
                        "expires_at": nullable_string,
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "accepting", "broker"],
                    "properties": {
                        "status": {"enum": ["ok", "shutting_down", "broker_unavailable"]},
                        "accepting": {"type": "boolean"},
                        "broker": {
                            "type": "object",
                            "required": ["kind"],
                            "properties": {
                                "kind": {"enum": ["memory", "redis"]},
                                "address": {"type": "string"},
                                "connected": {"type": "boolean"},
                                "since": {"type": "number"},
                            },
                        },
                    },
                },
            },
        },
    }


def _dashboard_paths() -> dict[str, Any]:
    """The live dashboard's page, files and session (``felix.web.dashboard``)."""
    session = _json(
        "Whether the page must ask for a key, and the session's expiry.",
        {"$ref": "#/components/schemas/DashboardSession"},
    )
    cached = {
        "description": "Unchanged since the ETag given in If-None-Match.",
        "headers": {"ETag": {"schema": {"type": "string"}}},
    }
    return {
        "/": {
            "get": {
                "summary": "The live dashboard (no key needed; it signs in by itself)",
                "operationId": "dashboard",
                "security": [{}],
                "responses": {
                    "200": {
                        "description": "HTML.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "304": cached,
                },
            },
        },
        "/dashboard/{name}": {
            "get": {
                "summary": "One of the dashboard's files: app.js, style.css, favicon.svg",
                "operationId": "dashboardFile",
                "security": [{}],
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                            "image/svg+xml": {"schema": {"type": "string"}},
                        },
                    },
                    "304": cached,
                    "404": _error("No such file."),
                },
            },
        },
        "/dashboard/session": {
            "get": {
                "summary": "The dashboard's session: is a key needed, is this browser signed in",
                "operationId": "dashboardSession",
                "security": [{}],
                "responses": {"200": session},
            },
            "post": {
                "summary": "Sign the dashboard in: the API key for a session cookie",
                "operationId": "dashboardSignIn",
                "responses": {
                    "200": {
                        **session,
                        "headers": {
                            "Set-Cookie": {
                                "description": "felix_session (HttpOnly, SameSite=Strict); "
                                "none in development mode.",
                                "schema": {"type": "string"},
                            }
                        },
                    },
                    "401": _UNAUTHORIZED,
                },
            },
            "delete": {
                "summary": "Sign the dashboard out: clears the session cookie",
                "operationId": "dashboardSignOut",
                "security": [{}],
                "responses": {"200": session},
            },
        },
    }


_DOCS_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Felix API</title>
<style>body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto}
code{background:#eee;padding:0 .3em}li{margin:.3em 0}</style></head>
<body><h1>Felix REST API</h1>
<p>The machine-readable description is <a href="openapi.json">/openapi.json</a>
(OpenAPI 3.1). The routes it lists:</p><ul id="routes"></ul>
<script>
fetch("openapi.json").then(r => r.json()).then(doc => {
  const list = document.getElementById("routes");
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (method === "parameters") continue;
      const li = document.createElement("li");
      const code = document.createElement("code");
      code.textContent = method.toUpperCase() + " " + path;
      li.append(code, " " + op.summary + " (" + Object.keys(op.responses).join(", ") + ")");
      list.append(li);
    }
  }
});
</script></body></html>
"""


def add_openapi_routes(app: Quart, settings: Settings) -> None:
    """Serve ``GET /openapi.json`` and ``GET /docs`` on ``app``."""
    document = openapi_document(settings)

    async def openapi_json() -> Response:
        return jsonify(document)

    async def docs() -> Response:
        return Response(_DOCS_PAGE, content_type="text/html; charset=utf-8")

    app.add_url_rule("/openapi.json", "openapi", openapi_json, methods=["GET"])
    app.add_url_rule("/docs", "docs", docs, methods=["GET"])
