"""The REST edge: translate HTTP requests into hub calls and back.

No workflow state lives here; every handler parses, calls the hub, and
shapes the answer. Errors are raised as :class:`FelixError` and turned into
the contract's ``{"error", "message"}`` bodies by the app's error handler.
"""

from __future__ import annotations

import os
import time
from typing import Any

import trio
from quart import Blueprint, Response, current_app, jsonify, request

from felix._core.events import decode_json
from felix._errors import EventTooLarge, InvalidEvent, WorkflowNotFound
from felix._runtime.hub import WORKFLOW_ID, Hub
from felix.settings import Settings
from felix.web.tokens import TokenSigner, expires_at

__all__ = ["api"]

api = Blueprint("felix_api", __name__, url_prefix="/api/v1")

_CREATE_FIELDS = frozenset({"workflow_id", "task", "metadata"})


def _hub() -> Hub:
    hub: Hub = current_app.config["FELIX_HUB"]
    return hub


def _settings() -> Settings:
    settings: Settings = current_app.config["FELIX_SETTINGS"]
    return settings


async def _json_body(*, optional: bool = False) -> Any:
    limit = _settings().max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise EventTooLarge(f"request body is {request.content_length} bytes; the limit is {limit}")
    data = await request.get_data(cache=False, as_text=False)
    if len(data) > limit:
        raise EventTooLarge(f"request body is over {limit} bytes, the limit")
    if not data.strip():
        if optional:
            return None
        raise InvalidEvent("the request body is empty; send JSON")
    return decode_json(data, max_depth=_settings().max_json_depth)


def _query_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit():
        raise InvalidEvent(
            f"query parameter {name!r} must be a non-negative integer, got {raw[:32]!r}"
        )
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise InvalidEvent(f"query parameter {name!r} must be {bound}, got {value}")
    return value


def _workflow_id(workflow_id: str) -> str:
    # An id that cannot exist is simply not found: the contract has no 422 here.
    if not WORKFLOW_ID.fullmatch(workflow_id):
        raise WorkflowNotFound(f"workflow {workflow_id[:80]} not found")
    return workflow_id


def _json(payload: Any, status: int) -> Response:
    response = jsonify(payload)
    response.status_code = status
    return response


@api.post("/workflows")
async def create_workflow() -> Response:
    """Create a workflow: ``{"workflow_id"?, "task"?, "metadata"?}`` -> 201."""
    body = await _json_body(optional=True)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidEvent("the body must be a JSON object with workflow_id, task or metadata")
    unknown = sorted(set(body) - _CREATE_FIELDS)
    if unknown:
        raise InvalidEvent(
            f"unknown field {unknown[0]!r}; a workflow takes workflow_id, task and metadata"
        )
    workflow = await _hub().create_workflow(
        workflow_id=body.get("workflow_id"), task=body.get("task"), metadata=body.get("metadata")
    )
    return _json(workflow.to_json(), 201)


@api.get("/workflows")
async def list_workflows() -> Response:
    """List workflows: ``?status=&limit=&offset=`` -> ``{"workflows", "total"}``."""
    status = request.args.get("status") or None
    limit = _query_int("limit", 100, minimum=1, maximum=1000)
    offset = _query_int("offset", 0)
    workflows, total = await _hub().list_workflows(status=status, limit=limit, offset=offset)
    return _json(
        {
            "workflows": [workflow.to_json() for workflow in workflows],
            "total": total,
            "limit": limit,
            "offset": offset,
        },
        200,
    )


@api.get("/workflows/<workflow_id>")
async def get_workflow(workflow_id: str) -> Response:
    """One workflow with the state its events built."""
    return _json((await _hub().get_workflow(_workflow_id(workflow_id))).to_json(), 200)


@api.get("/workflows/<workflow_id>/events")
async def list_events(workflow_id: str) -> Response:
    """Retained events with ``seq > after`` (default 0), at most ``limit``."""
    after = _query_int("after", 0)
    limit = _query_int(
        "limit", _settings().history_size, minimum=1, maximum=_settings().history_size
    )
    hub = _hub()
    workflow_id = _workflow_id(workflow_id)
    events = await hub.get_events(workflow_id, after=after, limit=limit)
    return _json(
        {
            "workflow_id": workflow_id,
            "events": [event.to_json() for event in events],
            "last_seq": (await hub.get_workflow(workflow_id)).last_seq,
        },
        200,
    )


@api.post("/workflows/<workflow_id>/tokens")
async def mint_token(workflow_id: str) -> Response:
    """A subscribe token for one workflow: ``{"ttl_seconds"?}`` -> 201 ``{"token", "expires_at"}``.

    The token opens that workflow's WebSocket until it expires, and nothing
    else (:mod:`felix.web.tokens`). The API key is checked first (401), then
    the workflow (404), then the body (422).
    """
    workflow_id = _workflow_id(workflow_id)
    await _hub().get_workflow(workflow_id)  # on any node, not just the one that holds it
    ttl = _token_ttl(await _json_body(optional=True))
    signer: TokenSigner = current_app.config["FELIX_TOKENS"]
    token, expires = signer.mint(workflow_id, now=time.time(), ttl=ttl)
    return _json({"token": token, "expires_at": expires_at(expires)}, 201)


def _token_ttl(body: Any) -> int:
    settings = _settings()
    if body is None:
        return settings.token_ttl
    if not isinstance(body, dict):
        raise InvalidEvent('the body must be a JSON object, e.g. {"ttl_seconds": 300}, or empty')
    unknown = sorted(set(body) - {"ttl_seconds"})
    if unknown:
        raise InvalidEvent(f"unknown field {unknown[0][:64]!r}; a token request takes ttl_seconds")
    ttl = body.get("ttl_seconds", settings.token_ttl)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
        raise InvalidEvent("field 'ttl_seconds' must be a positive integer (seconds)")
    if ttl > settings.token_max_ttl:
        raise InvalidEvent(
            f"field 'ttl_seconds' must be at most {settings.token_max_ttl} "
            f"(FELIX_TOKEN_MAX_TTL), got {str(ttl)[:32]}"
        )
    return ttl


@api.delete("/workflows/<workflow_id>")
async def cancel_workflow(workflow_id: str) -> Response:
    """Cancel: publishes ``workflow_status`` cancelled -> 202."""
    hub = _hub()
    event = await hub.cancel(_workflow_id(workflow_id))
    return _json({"workflow_id": event.workflow_id, "status": "cancelled", "seq": event.seq}, 202)


@api.post("/broadcast")
async def broadcast() -> Response:
    """Send a system event to every connected client -> 202."""
    body = await _json_body()
    delivered = await _hub().broadcast_to_all(body)
    return _json({"accepted": 1, "delivered": delivered}, 202)


@api.get("/stats")
async def stats() -> Response:
    """Operator figures: the hub's counts plus this process's tasks and memory."""
    figures = _hub().statistics()
    figures["tasks"] = _task_count()
    figures["rss_bytes"] = _rss_bytes()
    return _json(figures, 200)


def _task_count() -> int:
    root = trio.lowlevel.current_root_task()
    pending = [root] if root is not None else []
    count = 0
    while pending:
        task = pending.pop()
        count += 1
        pending.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return count


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None  # not Linux


@api.get("/connections")
async def list_connections() -> Response:
    """Every open WebSocket connection with its metadata."""
    connections = _hub().connections()
    return _json(
        {
            "connections": [
                {
                    "connection_id": info.connection_id,
                    "workflow_id": info.workflow_id,
                    "remote": info.remote,
                    "connected_at": info.connected_at,
                    "messages_sent": info.messages_sent,
                    "buffered_bytes": info.buffered_bytes,
                }
                for info in connections
            ],
            "total": len(connections),
        },
        200,
    )
