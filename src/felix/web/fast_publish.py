"""The publish route without Quart: the producer side of the hot path.

A publish is the one REST call made once per event, and Quart's request and
response machinery (request objects, context locals, hooks, signals, a
nursery with two tasks per request) costs more CPU than the fan-out of the
event itself to dozens of subscribers. This plain ASGI handler does what the
route needs — authenticate, read a bounded body, parse, publish, answer — and
nothing else. Its answers and errors are the contract's, the same as every
other route's (tests/web/test_rest.py covers it like the rest).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

from felix._core.events import decode_json
from felix._errors import EventTooLarge, FelixError, InvalidEvent, WorkflowNotFound
from felix._runtime.hub import WORKFLOW_ID, Hub
from felix.settings import Settings
from felix.web._asgi import Receive, Scope, Send, send_error, send_json
from felix.web.auth import check_api_key, key_from_headers

__all__ = ["PUBLISH_PATH", "handle_publish"]

logger = logging.getLogger("felix.web")

PUBLISH_PATH: Final = re.compile(r"/api/v1/workflows/(?P<workflow_id>[^/]+)/events")


async def handle_publish(
    scope: Scope, receive: Receive, send: Send, *, hub: Hub, settings: Settings, workflow_id: str
) -> None:
    """Serve ``POST /api/v1/workflows/{id}/events``: one event or a batch -> 202."""
    try:
        answer = await _publish(hub, settings, workflow_id, scope, receive)
    except FelixError as error:
        await send_error(send, error)
        return
    except Exception:
        logger.exception("unhandled error in POST %s", scope.get("path"))
        await send_json(send, 500, {"error": "internal_error", "message": "internal server error"})
        return
    await send_json(send, 202, answer)


async def _publish(
    hub: Hub, settings: Settings, workflow_id: str, scope: Scope, receive: Receive
) -> dict[str, Any]:
    headers = scope.get("headers", [])
    check_api_key(settings.api_keys, key_from_headers(headers))
    if not WORKFLOW_ID.fullmatch(workflow_id):
        raise WorkflowNotFound(f"workflow {workflow_id[:80]} not found")
    await hub.require(workflow_id)  # 404 before reading a body that could be large
    body = await _read_body(receive, settings.max_body_bytes, headers)
    if not body.strip():
        raise InvalidEvent("the request body is empty; send JSON")
    parsed = decode_json(body, max_depth=settings.max_json_depth)
    if isinstance(parsed, list):
        if not parsed:
            raise InvalidEvent("the batch is empty; send at least one event")
        events = parsed
    else:
        events = [parsed]
    result = await hub.publish(workflow_id, events)
    return {"accepted": result.accepted, "first_seq": result.first_seq, "last_seq": result.last_seq}


async def _read_body(receive: Receive, limit: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name.lower() == b"content-length" and value.isdigit() and int(value) > limit:
            raise EventTooLarge(f"request body is {int(value)} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidEvent("the client went away before sending its body")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise EventTooLarge(f"request body is over {limit} bytes, the limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
