"""``GET /openapi.json`` and ``GET /docs``: the REST API described for machines.

The paths, methods and who may call each (``security``) come from the edge's
route table (:data:`felix.web.edge.routes.ROUTES`): a route cannot be served
without being described, nor described without being served. What each
operation takes and answers is written here, per route name, from the
contract (``docs/reference/api.md``); ``tests/web/test_openapi.py`` keeps both
true, and schemathesis checks the answers against them. The ``/docs`` page is
a few lines of self-contained HTML and JavaScript that list the routes from
the JSON; nothing is fetched from the internet. Both are served without the
API key: they describe the API, they reveal no data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from quart import Response

from felix._core.events import (
    EVENT_TYPES,
    SERVER_TYPES,
    STATUSES,
    TYPE_NAME,
    WORKFLOW_EVENT_TYPES,
    Kind,
    encode,
)
from felix.settings import Settings
from felix.web.edge.params import MAX_INT_DIGITS
from felix.web.edge.routes import ROUTES, Credential, Route

__all__ = ["openapi_document", "views"]

_RESERVED: Final = frozenset(WORKFLOW_EVENT_TYPES) | frozenset(SERVER_TYPES)
_ERROR = {"$ref": "#/components/schemas/Error"}
_WORKFLOW = {"$ref": "#/components/schemas/Workflow"}
_ID_PARAM = {"$ref": "#/components/parameters/WorkflowId"}
_UNAUTHORIZED = {"$ref": "#/components/responses/Unauthorized"}
_NULLABLE_STRING: Final = {"type": ["string", "null"]}
#: The largest integer a query parameter may carry (felix.web.edge.params).
_MAX_INT: Final = 10**MAX_INT_DIGITS - 1


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _int_query(
    name: str, description: str, minimum: int = 0, maximum: int | None = _MAX_INT
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _body(schema: dict[str, Any], *, required: bool) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


_STRING: Final = {"type": "string", "minLength": 1}
_UNIT: Final = {"type": "number", "minimum": 0, "maximum": 1}
_INTEGER: Final = {"type": "integer"}
#: The JSON schema of each kind of field in felix._core.events' event table.
_KIND_SCHEMAS: Final[dict[Kind, dict[str, Any]]] = {
    Kind.NAME: _STRING,
    Kind.TEXT: {"type": "string"},
    Kind.NUMBER: {"type": "number"},
    Kind.UNIT: _UNIT,
    Kind.BOOLEAN: {"type": "boolean"},
    Kind.STATUS: {"$ref": "#/components/schemas/Status"},
    Kind.AGENTS: {
        "oneOf": [
            {"type": "integer", "minimum": 0},
            {"type": "array", "items": {"type": "string"}},
            {"type": "null"},
        ]
    },
    Kind.ANY: {},
}
#: The envelope is the server's: a producer may not send these fields.
_NO_ENVELOPE: Final = {"workflow_id": False, "seq": False, "timestamp": False}


def _event_in(event_type: str) -> dict[str, Any]:
    # Made from the core's one event table: the schema cannot drift from validation.
    specs = EVENT_TYPES[event_type]
    properties = {spec.name: _KIND_SCHEMAS[spec.kind] for spec in specs}
    required = [spec.name for spec in specs if spec.required]
    return {
        "type": "object",
        "title": event_type,
        "required": ["type", *required],
        "properties": {"type": {"const": event_type}, **properties, **_NO_ENVELOPE},
        "additionalProperties": True,
    }


_EVENT_IN: Final[dict[str, Any]] = {
    "description": "A workflow event: its type and its own fields, flat (extra fields are kept).",
    "oneOf": [_event_in(event_type) for event_type in EVENT_TYPES],
}

_EVENT_OUT: Final[dict[str, Any]] = {
    **_object(
        ["type", "workflow_id", "seq", "timestamp"],
        {
            "type": {"type": "string"},
            "workflow_id": {"type": "string"},
            "seq": {"type": "integer", "minimum": 1},
            "timestamp": {"type": "string"},
        },
    ),
    "additionalProperties": True,
}


_STATUS_QUERY: Final = {
    "name": "status",
    "in": "query",
    "required": False,
    "description": "Only workflows of this status (empty: all).",
    "schema": {"anyOf": [{"$ref": "#/components/schemas/Status"}, {"const": ""}]},
}
_ORDER_QUERY: Final = {
    "name": "order",
    "in": "query",
    "required": False,
    "description": "oldest (the default) or newest first, by creation.",
    "schema": {"enum": ["oldest", "newest"]},
}
#: A system broadcast: any type name but the workflow and server types.
_SYSTEM_EVENT: Final[dict[str, Any]] = {
    **_object(
        ["type"],
        {
            "type": {
                "type": "string",
                "pattern": f"^{TYPE_NAME.pattern}$",
                "not": {"enum": sorted(_RESERVED)},
            },
            **_NO_ENVELOPE,
        },
    ),
    "additionalProperties": True,
}


# --- operations, by route name -------------------------------------------------------------

Operation = dict[str, Any]


def _workflow_operations() -> dict[str, Operation]:
    cancelled = _object(
        ["workflow_id", "status", "seq"],
        {"workflow_id": {"type": "string"}, "status": {"const": "cancelled"}, "seq": _INTEGER},
    )
    page = _object(
        ["workflows", "total"],
        {
            "workflows": {"type": "array", "items": _WORKFLOW},
            "total": _INTEGER,
            "limit": _INTEGER,
            "offset": _INTEGER,
            "order": {"enum": ["oldest", "newest"]},
        },
    )
    return {
        "create_workflow": {
            "summary": "Create a workflow",
            "requestBody": _body({"$ref": "#/components/schemas/WorkflowCreate"}, required=False),
            "responses": {
                "201": _json("The new workflow.", _WORKFLOW),
                "409": _error("The workflow id is taken."),
                "413": _error("task and metadata are too large."),
                "422": _error("Invalid body."),
                "503": _error("Too many workflows, or shutting down."),
            },
        },
        "list_workflows": {
            "summary": "List workflows",
            "parameters": [
                _STATUS_QUERY,
                _int_query("limit", "At most this many workflows.", minimum=1, maximum=1000),
                _int_query("offset", "Workflows to skip."),
                _ORDER_QUERY,
            ],
            "responses": {
                "200": _json("One page of workflows and the total that matched.", page),
                "422": _error("Invalid query."),
            },
        },
        "get_workflow": {
            "summary": "One workflow with the state its events built",
            "responses": {
                "200": _json("The workflow.", _WORKFLOW),
                "404": _error("No such workflow, or not a valid workflow id."),
            },
        },
        "cancel_workflow": {
            "summary": "Cancel a workflow (publishes workflow_status cancelled)",
            "responses": {
                "202": _json("Cancelled.", cancelled),
                "404": _error("No such workflow, or not a valid workflow id."),
                "409": _error("The workflow already ended."),
                "503": _error("The workflow's inbox stayed full."),
            },
        },
    }


_IDEMPOTENCY_KEY: Final = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes the publish idempotent: a repeat of a key the workflow already applied applies "
        "nothing and gets the first answer (FELIX_IDEMPOTENCY_KEYS most recent kept)."
    ),
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"},
}
_REPLAYED: Final = {
    "idempotent-replayed": {
        "description": "`true` when this is the first answer again, for a repeated key.",
        "schema": {"const": "true"},
    }
}

#: What the WebSocket routes of the table are, for ``x-websockets`` (OpenAPI has no
#: WebSocket operations); each names the page of docs/reference/api.md describing it.
_WEBSOCKETS: Final = {
    "subscribe_workflow": "One workflow's events: `connected`, replay (`after=`), live events.",
    "subscribe_system": "Every workflow's events and system broadcasts (API key or session).",
    "publish_stream": (
        "The producer stream: each text frame one publish {ref, workflow_id, events | event, "
        "idempotency_key?}, answered in order with {type: ack, ref, accepted, first_seq, "
        "last_seq, idempotent_replayed?} or {type: nack, ref, error, message, index?, "
        "retry_after?}. API key only."
    ),
}


def _websockets() -> dict[str, Any]:
    """The table's WebSocket routes, under the ``x-websockets`` extension."""
    return {
        route.path: {
            "operationId": _operation_id(route.name),
            "description": _WEBSOCKETS[route.name],
        }
        for route in ROUTES
        if route.websocket
    }


def _event_operations(settings: Settings) -> dict[str, Operation]:
    events = _object(
        ["workflow_id", "events", "last_seq"],
        {
            "workflow_id": {"type": "string"},
            "events": {"type": "array", "items": _EVENT_OUT},
            "last_seq": _INTEGER,
        },
    )
    accepted = _object(
        ["accepted", "first_seq", "last_seq"],
        {"accepted": _INTEGER, "first_seq": _INTEGER, "last_seq": _INTEGER},
    )
    batch = {"oneOf": [_EVENT_IN, {"type": "array", "minItems": 1, "items": _EVENT_IN}]}
    return {
        "list_events": {
            "summary": "Retained events after a seq",
            "parameters": [
                # Any number of digits: past every seq is an empty page.
                _int_query("after", "Return events with seq > after (default 0).", maximum=None),
                _int_query(
                    "limit",
                    "At most this many events (FELIX_HISTORY_SIZE).",
                    minimum=1,
                    maximum=settings.history_size,
                ),
            ],
            "responses": {
                "200": _json("The retained events, oldest first.", events),
                "404": _error("No such workflow, or not a valid workflow id."),
                "422": _error("Invalid query."),
            },
        },
        "publish_events": {
            "summary": "Publish one event or a batch (all or nothing)",
            "parameters": [_IDEMPOTENCY_KEY],
            "requestBody": _body(batch, required=True),
            "responses": {
                "202": {**_json("Applied.", accepted), "headers": _REPLAYED},
                "404": _error("No such workflow, or not a valid workflow id."),
                "409": _error(
                    "The workflow ended; it takes no more events. Or (idempotency_in_progress) "
                    "a publish with this Idempotency-Key is still being applied."
                ),
                "413": _error("An event, the batch or the body is too large."),
                "422": _error(
                    "Invalid event (`index` names the first bad one), invalid Idempotency-Key, "
                    "or (idempotency_key_reused) the key was applied with another body."
                ),
                "429": _error("Rate limited (FELIX_RATE_PUBLISH)."),
                "503": _error("The workflow's inbox stayed full."),
            },
        },
    }


def _other_api_operations(settings: Settings) -> dict[str, Operation]:
    token_request = {
        "type": ["object", "null"],
        "properties": {
            "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": settings.token_max_ttl}
        },
        "additionalProperties": False,
    }
    token = _object(
        ["token", "expires_at"], {"token": {"type": "string"}, "expires_at": {"type": "string"}}
    )
    connections = _object(
        ["connections", "total"],
        {
            "connections": {"type": "array", "items": {"$ref": "#/components/schemas/Connection"}},
            "total": _INTEGER,
        },
    )
    return {
        "mint_token": {
            "summary": "Mint a subscribe token for one workflow's WebSocket",
            "requestBody": _body(token_request, required=False),
            "responses": {
                "201": _json("The token.", token),
                "404": _error("No such workflow, or not a valid workflow id."),
                "422": _error("Invalid body."),
            },
        },
        "broadcast": {
            "summary": "Send a system event to every connected client",
            "requestBody": _body(_SYSTEM_EVENT, required=True),
            "responses": {
                "202": _json(
                    "Queued.",
                    _object(
                        ["accepted", "delivered"], {"accepted": _INTEGER, "delivered": _INTEGER}
                    ),
                ),
                "413": _error("The event or body is too large."),
                "422": _error("Invalid event (a workflow type, or malformed)."),
                "429": _error("Rate limited (FELIX_RATE_PUBLISH)."),
            },
        },
        "list_connections": {
            "summary": "Open WebSocket connections",
            "responses": {"200": _json("Every open connection.", connections)},
        },
        "stats": {
            "summary": "Operator figures",
            "responses": {"200": _json("Counts for operators.", {"type": "object"})},
        },
    }


def _stream_answers() -> tuple[dict[str, Any], dict[str, Any]]:
    """An event stream's 200, and the refusals it shares with the WebSocket handshake."""
    stream = {
        "description": (
            "The stream: `retry:`, then `event: connected`, then each event as `id: <seq>`, "
            "`event: <type>`, `data: <the WebSocket frame's JSON>`; `: ping` comments at "
            "FELIX_PING_INTERVAL; it ends with `event: close` and `data: {code, reason}` "
            "(1000 finished, 1001 shutdown, 4008 slow consumer)."
        ),
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
    refusals = {
        "400": _error("Invalid query or Last-Event-ID."),
        "403": _error("The browser's Origin is not allowed (FELIX_ALLOWED_ORIGINS)."),
        "429": _error("Rate limited (FELIX_RATE_HANDSHAKE)."),
        "503": _error("Over the connection limit, or shutting down."),
    }
    return stream, refusals


def _stream_parameters() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """An event stream's ``types=``, its query credentials, and ``Last-Event-ID``."""
    types = {
        "name": "types",
        "in": "query",
        "required": False,
        "description": "Comma-separated event types to receive (connected and close always come).",
        "schema": {"type": "string"},
    }
    query_credentials = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": {"type": "string"},
        }
        for name, description in (
            ("api_key", "The API key, for clients that cannot set a header (EventSource)."),
            ("token", "A subscribe token for this workflow (POST .../tokens)."),
        )
    ]
    last_event_id = {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "description": "Resume after this seq (what EventSource sends); wins over after=.",
        "schema": {"type": "integer", "minimum": 0},
    }
    return types, query_credentials, last_event_id


def _stream_operations() -> dict[str, Operation]:
    """The Server-Sent Events twins of the two WebSocket streams."""
    stream, refusals = _stream_answers()
    types, query_credentials, last_event_id = _stream_parameters()
    return {
        "sse_workflow": {
            "summary": "One workflow's events as Server-Sent Events (EventSource)",
            "parameters": [
                _int_query("after", "Replay retained events with seq > after first."),
                types,
                *query_credentials,
                last_event_id,
            ],
            "responses": {
                "200": stream,
                "204": {"description": "Last-Event-ID is the end of a finished workflow."},
                **refusals,
                "404": _error("No such workflow, or not a valid workflow id."),
            },
        },
        "sse_system": {
            "summary": "Every workflow's events and broadcasts as Server-Sent Events",
            "parameters": [types, query_credentials[0]],
            "responses": {"200": stream, **refusals},
        },
    }


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _service_operations() -> dict[str, Operation]:
    health = {"$ref": "#/components/schemas/Health"}
    return {
        "healthz": {
            "summary": "Liveness and readiness (no key needed)",
            "responses": {
                "200": _json("Serving.", health),
                "503": _json("Shutting down, or the broker cannot be reached.", health),
            },
        },
        "metrics": {
            "summary": "Prometheus metrics (text format)",
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
            },
        },
        "openapi": {
            "summary": "This document (no key needed)",
            "responses": {"200": _json("OpenAPI 3.1.", {"type": "object"})},
        },
        "docs": {
            "summary": "A page listing the routes of this document (no key needed)",
            "responses": {"200": _html("HTML.")},
        },
    }


def _dashboard_operations() -> dict[str, Operation]:
    """The live dashboard's page, files and session (``felix.web.routes.dashboard``)."""
    session = _json(
        "Whether the page must ask for a key, and the session's expiry.",
        {"$ref": "#/components/schemas/DashboardSession"},
    )
    cached = {
        "description": "Unchanged since the ETag given in If-None-Match.",
        "headers": {"ETag": {"schema": {"type": "string"}}},
    }
    files = {
        kind: {"schema": {"type": "string"}}
        for kind in ("text/javascript", "text/css", "image/svg+xml")
    }
    cookie = {
        "description": "felix_session (HttpOnly, SameSite=Strict); none in development mode.",
        "schema": {"type": "string"},
    }
    return {
        "dashboard": {
            "summary": "The live dashboard (no key needed; it signs in by itself)",
            "responses": {"200": _html("HTML."), "304": cached},
        },
        "dashboard_file": {
            "summary": "One of the dashboard's files: app.js, style.css, favicon.svg",
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "The file.", "content": files},
                "304": cached,
                "404": _error("No such file."),
            },
        },
        "dashboard_session": {
            "summary": "The dashboard's session: is a key needed, is this browser signed in",
            "responses": {"200": session},
        },
        "dashboard_sign_in": {
            "summary": "Sign the dashboard in: the API key for a session cookie",
            "responses": {"200": {**session, "headers": {"Set-Cookie": cookie}}},
        },
        "dashboard_sign_out": {
            "summary": "Sign the dashboard out: clears the session cookie",
            "responses": {"200": session},
        },
    }


def _operations(settings: Settings) -> dict[str, Operation]:
    return {
        **_workflow_operations(),
        **_event_operations(settings),
        **_other_api_operations(settings),
        **_stream_operations(),
        **_service_operations(),
        **_dashboard_operations(),
    }


def _operation_id(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def _operation(route: Route, described: Operation) -> Operation:
    operation: Operation = {"operationId": _operation_id(route.name), **described}
    if route.opens == Credential.OPEN:
        operation["security"] = [{}]
    else:
        operation["responses"] = {**described["responses"], "401": _UNAUTHORIZED}
    return operation


def _paths(settings: Settings) -> dict[str, Any]:
    """Every HTTP route of the table, described (WebSocket routes are not OpenAPI's)."""
    operations = _operations(settings)
    paths: dict[str, Any] = {}
    for route in ROUTES:
        if route.websocket:
            continue
        item = paths.setdefault(route.openapi_path, {})
        if "workflow_id" in route.parameters:
            item.setdefault("parameters", [_ID_PARAM])
        item[route.method.lower()] = _operation(route, operations[route.name])
    return paths


def _workflow_schemas() -> dict[str, Any]:
    workflow_fields = {
        "workflow_id": {"type": "string"},
        "status": {"$ref": "#/components/schemas/Status"},
        "task": _NULLABLE_STRING,
        "metadata": {"type": "object"},
        "created_at": {"type": "string"},
        "updated_at": {"type": "string"},
        "last_seq": _INTEGER,
        "subscribers": _INTEGER,
        "agents": {"type": "array", "items": {"type": "object"}},
        "synthesis": {"type": ["object", "null"]},
        "result": {},
        "error": {"type": ["object", "null"]},
    }
    return {
        "Status": {"type": "string", "enum": list(STATUSES)},
        "WorkflowCreate": {
            "type": ["object", "null"],
            "properties": {
                "workflow_id": {
                    "type": ["string", "null"],
                    "pattern": "^[A-Za-z0-9_-]{1,64}$",
                    "description": "Omitted or null: the server makes one (wf_ + hex).",
                },
                "task": _NULLABLE_STRING,
                "metadata": {"type": ["object", "null"]},
            },
            "additionalProperties": False,
        },
        "Workflow": _object(list(workflow_fields), workflow_fields),
    }


def _other_schemas() -> dict[str, Any]:
    connection_fields = {
        "connection_id": {"type": "string"},
        "workflow_id": _NULLABLE_STRING,
        "remote": _NULLABLE_STRING,
        "connected_at": {"type": "string"},
        "messages_sent": _INTEGER,
        "buffered_bytes": _INTEGER,
    }
    broker = _object(
        ["kind"],
        {
            "kind": {"enum": ["memory", "redis"]},
            "address": {"type": "string"},
            "connected": {"type": "boolean"},
            "since": {"type": "number"},
        },
    )
    error_index = {
        "type": "integer",
        "description": "In a batch, the index of the first bad event.",
    }
    return {
        "Error": _object(
            ["error", "message"],
            {
                "error": {"type": "string", "description": "A stable error code."},
                "message": {"type": "string"},
                "index": error_index,
            },
        ),
        "Connection": _object(list(connection_fields)[:5], connection_fields),
        "DashboardSession": _object(
            ["key_required", "signed_in", "expires_at"],
            {
                "key_required": {"type": "boolean"},
                "signed_in": {"type": "boolean"},
                "expires_at": _NULLABLE_STRING,
            },
        ),
        "Health": _object(
            ["status", "accepting", "broker"],
            {
                "status": {"enum": ["ok", "shutting_down", "broker_unavailable"]},
                "accepting": {"type": "boolean"},
                "broker": broker,
            },
        ),
    }


def _components() -> dict[str, Any]:
    return {
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
        "schemas": {**_other_schemas(), **_workflow_schemas()},
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 description of Felix's REST API with ``settings``' limits.

    A fresh dict each call; its paths are the route table's HTTP routes.
    """
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Felix",
            "version": "1",
            "description": (
                "Real-time event streams for multi-agent workflows. Producers use this REST "
                "API; subscribers use the WebSockets at /api/v1/ws/workflows/{workflow_id} "
                "and /api/v1/ws/system/events (see x-websockets), or their Server-Sent "
                "Events twins under /api/v1/sse/ (described here); producers may also use "
                "the producer stream /api/v1/ws/publish (see x-websockets)."
            ),
        },
        "security": [{"bearer": []}, {"apiKey": []}, {}],
        "paths": _paths(settings),
        "x-websockets": _websockets(),
        "components": _components(),
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


def views(settings: Settings) -> dict[str, Callable[[], Awaitable[Response]]]:
    """The handlers of ``GET /openapi.json`` and ``GET /docs``, by route name."""
    document = encode(openapi_document(settings))

    async def openapi() -> Response:
        return Response(document, content_type="application/json")

    async def docs() -> Response:
        return Response(_DOCS_PAGE, content_type="text/html; charset=utf-8")

    return {"openapi": openapi, "docs": docs}
