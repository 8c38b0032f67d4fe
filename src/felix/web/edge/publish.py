"""The publish route without Quart: the producer side of the hot path.

A publish is the one REST call made once per event, and Quart's request and
response machinery (request objects, context locals, hooks, signals, a
nursery with two tasks per request) costs more CPU than the fan-out of the
event itself to dozens of subscribers. This plain ASGI handler does what the
route needs — read a bounded body, parse, publish, answer — and nothing else;
the edge has already matched, rate-limited and authenticated the request and
checked the workflow id, and renders any error it raises, as for every other
route (tests/web/test_rest.py covers it like the rest).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from felix._core.idempotency import check_key
from felix._errors import InvalidEvent
from felix._runtime.hub import Hub, PublishResult
from felix.web._asgi import Receive, Scope
from felix.web.edge.body import parse_json, read_body
from felix.web.edge.errors import Answer, json_answer

__all__ = ["IDEMPOTENCY_HEADER", "REPLAYED_HEADER", "answer_of", "publish_events"]

#: The request header carrying a publish's idempotency key.
IDEMPOTENCY_HEADER: Final = b"idempotency-key"
#: The response header marking the answer to a repeat of an applied key.
REPLAYED_HEADER: Final = b"idempotent-replayed"


def idempotency_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The request's ``Idempotency-Key``, checked (422 when malformed), or None."""
    for name, value in headers:
        if name.lower() == IDEMPOTENCY_HEADER:
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                text = ""
            return check_key(text)
    return None


def answer_of(result: PublishResult) -> dict[str, Any]:
    """The contract's answer to a publish: ``accepted``, ``first_seq``, ``last_seq``."""
    return {"accepted": result.accepted, "first_seq": result.first_seq, "last_seq": result.last_seq}


async def publish_events(
    hub: Hub, scope: Scope, receive: Receive, *, params: Mapping[str, str], limit: int
) -> Answer:
    """Serve ``POST /api/v1/workflows/{id}/events``: one event or a batch.

    Returns the 202 answer (with ``idempotent-replayed: true`` for the repeat
    of an applied ``Idempotency-Key``). Raises
    :class:`~felix._errors.FelixError`: 422 for a malformed key, 404 for an
    unknown workflow (before the body is read, so a large body to nowhere
    is never invited), 413 for a body over ``limit``, 422 for invalid events,
    409 for a finished workflow.
    """
    workflow_id = params["workflow_id"]
    headers = scope.get("headers", [])
    key = idempotency_key(headers)
    await hub.require(workflow_id)
    body = await read_body(receive, headers, limit)
    parsed = parse_json(body, max_depth=hub.settings.max_json_depth)
    if isinstance(parsed, list):
        if not parsed:
            raise InvalidEvent("the batch is empty; send at least one event")
        events = parsed
    else:
        events = [parsed]
    result = await hub.publish(workflow_id, events, idempotency_key=key)
    replayed = [(REPLAYED_HEADER, b"true")] if result.replayed is not None else []
    return json_answer(202, answer_of(result), replayed)
