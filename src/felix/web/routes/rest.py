"""The REST routes Quart serves: translate HTTP requests into hub calls and back.

No workflow state lives here; every handler parses, calls the hub, and
shapes the answer. The paths, credentials, rate limits and body limits are
the route table's (:mod:`felix.web.edge.routes`): by the time a handler runs,
the edge has authenticated the request, checked the workflow id and read the
body within its limit. Errors are raised as :class:`FelixError` and answered
by the edge's one renderer. :data:`VIEWS` maps route names to handlers.
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

import trio
from quart import Response, current_app, request

from felix._core.events import encode
from felix._errors import InvalidEvent
from felix._runtime.hub import Hub
from felix.settings import Settings
from felix.web.edge.body import parse_json
from felix.web.edge.errors import quote
from felix.web.edge.params import query_int
from felix.web.edge.tokens import TokenSigner, expires_at
from felix.web.routes import View

__all__ = ["VIEWS", "json_response"]

_CREATE_FIELDS = frozenset({"workflow_id", "task", "metadata"})


def _hub() -> Hub:
    hub: Hub = current_app.config["FELIX_HUB"]
    return hub


def _settings() -> Settings:
    settings: Settings = current_app.config["FELIX_SETTINGS"]
    return settings


async def _json_body(*, optional: bool = False) -> Any:
    # The edge has read the body already, within the route's limit.
    data = await request.get_data(cache=False, as_text=False)
    return parse_json(data, max_depth=_settings().max_json_depth, optional=optional)


def _query_int(name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
    return query_int(
        request.args,
        name,
        default,
        minimum=minimum,
        maximum=maximum,
        error=InvalidEvent,
    )


def json_response(payload: Any, status: int = 200) -> Response:
    """``payload`` as a JSON response, encoded by Felix's one encoder."""
    return Response(encode(payload), status=status, content_type="application/json")


_json = json_response


async def healthz() -> Response:
    """Liveness and readiness: 200 ``ok``; 503 when draining or the broker is lost.

    A draining server, or one that lost its broker, answers 503 so that load
    balancers stop routing new work to it (its clients stay).
    """
    hub = _hub()
    health = hub.health()
    broker_up = health["broker"].get("connected", True)
    status = "ok" if broker_up else "broker_unavailable"
    if not hub.accepting:
        status = "shutting_down"
    return _json({"status": status, **health}, 200 if status == "ok" else 503)


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
            f"unknown field {quote(unknown[0])}; a workflow takes workflow_id, task and metadata"
        )
    workflow = await _hub().create_workflow(
        workflow_id=body.get("workflow_id"), task=body.get("task"), metadata=body.get("metadata")
    )
    return _json(workflow.to_json(), 201)


async def list_workflows() -> Response:
    """List workflows: ``?status=&limit=&offset=&order=`` -> ``{"workflows", "total"}``."""
    status = request.args.get("status") or None
    limit = _query_int("limit", 100, minimum=1, maximum=1000)
    offset = _query_int("offset", 0)
    order = request.args.get("order") or "oldest"
    if order not in ("oldest", "newest"):
        raise InvalidEvent(f"query parameter 'order' must be oldest or newest, got {quote(order)}")
    workflows, total = await _hub().list_workflows(
        status=status, limit=limit, offset=offset, newest=order == "newest"
    )
    return _json(
        {
            "workflows": [workflow.to_json() for workflow in workflows],
            "total": total,
            "limit": limit,
            "offset": offset,
            "order": order,
        },
        200,
    )


async def get_workflow(workflow_id: str) -> Response:
    """One workflow with the state its events built."""
    return _json((await _hub().get_workflow(workflow_id)).to_json(), 200)


async def list_events(workflow_id: str) -> Response:
    """Retained events with ``seq > after`` (default 0), at most ``limit``."""
    # after= past the last seq asks for nothing yet: an empty page. More digits
    # than any seq can have is a 422, like every integer parameter.
    after = _query_int("after", 0)
    limit = _query_int(
        "limit", _settings().history_size, minimum=1, maximum=_settings().history_size
    )
    hub = _hub()
    events = await hub.get_events(workflow_id, after=after, limit=limit)
    return _json(
        {
            "workflow_id": workflow_id,
            "events": [event.to_json() for event in events],
            "last_seq": (await hub.get_workflow(workflow_id)).last_seq,
        },
        200,
    )


async def mint_token(workflow_id: str) -> Response:
    """A subscribe token for one workflow: ``{"ttl_seconds"?}`` -> 201 ``{"token", "expires_at"}``.

    The token opens that workflow's WebSocket until it expires, and nothing
    else (:mod:`felix.web.edge.tokens`). The API key is checked first (401), then
    the workflow (404), then the body (422).
    """
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
        raise InvalidEvent(f"unknown field {quote(unknown[0])}; a token request takes ttl_seconds")
    ttl = body.get("ttl_seconds", settings.token_ttl)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
        raise InvalidEvent("field 'ttl_seconds' must be a positive integer (seconds)")
    if ttl > settings.token_max_ttl:
        raise InvalidEvent(
            f"field 'ttl_seconds' must be at most {settings.token_max_ttl} "
            f"(FELIX_TOKEN_MAX_TTL), got {str(ttl)[:32]}"
        )
    return ttl


async def cancel_workflow(workflow_id: str) -> Response:
    """Cancel: publishes ``workflow_status`` cancelled -> 202."""
    hub = _hub()
    event = await hub.cancel(workflow_id)
    return _json({"workflow_id": event.workflow_id, "status": "cancelled", "seq": event.seq}, 202)


async def broadcast() -> Response:
    """Send a system event to every connected client -> 202."""
    body = await _json_body()
    delivered = await _hub().broadcast_to_all(body)
    return _json({"accepted": 1, "delivered": delivered}, 202)


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


#: Route name (:data:`felix.web.edge.routes.ROUTES`) -> handler.
VIEWS: Final[dict[str, View]] = {
    "healthz": healthz,
    "create_workflow": create_workflow,
    "list_workflows": list_workflows,
    "get_workflow": get_workflow,
    "cancel_workflow": cancel_workflow,
    "list_events": list_events,
    "mint_token": mint_token,
    "broadcast": broadcast,
    "stats": stats,
    "list_connections": list_connections,
}
