"""Server-Sent Events: the two WebSocket streams over a plain HTTP response.

``GET /api/v1/sse/workflows/{workflow_id}`` and ``GET /api/v1/sse/system/events``
are the WebSocket routes' twins for ``EventSource``, for proxies that drop
``Upgrade`` and for HTTP/2. The edge (:mod:`felix.web.edge.app`) has matched
the route, applied its rate limits, authenticated it (the same credentials as
the WebSocket: header or ``?api_key=``, ``?token=``, the session cookie) and
checked the origin and the workflow id before these handlers run; a refusal
here (400 for the query, 404, 503) is raised before any byte of the stream and
answered by the one error renderer.

The stream is a subscription of the same pipeline the WebSocket uses
(:meth:`Hub.subscribe`): the same buffer and slow-consumer budget (4008), the
same shutdown (1001), the same history and replay. Only the bytes differ: each
event's SSE message is :attr:`Frame.sse <felix._core.events.Frame.sse>`, built
once per event for every subscriber, and a batch of them is one ``send``. On
plain HTTP/1.1 the event's chunk (:attr:`Frame.sse_chunk`) goes straight to
the socket from the publisher's task, as a WebSocket frame does
(:mod:`felix.web.hypercorn.direct_stream`); what the socket does not take at
once, and every write of the stream's own task, goes through Hypercorn's path
with Felix's write deadline (``FELIX_SEND_TIMEOUT``).

Each stream has one task of its own, the writer, and one that waits in
``receive()`` for the client's ``http.disconnect``: whichever ends first
cancels the other, and leaving :meth:`Hub.subscribe`'s block unregisters the
subscriber. Nothing outlives the response.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Mapping, Sequence
from typing import Final

import trio

from felix._core.events import TERMINAL_STATUSES, encode, sse_message
from felix._errors import BadRequest, FelixError
from felix._logging import CONNECTION_ID
from felix._runtime.hub import Hub
from felix._runtime.subscription import CLOSE_NORMAL, Subscription
from felix.web._asgi import Receive, Scope, Send
from felix.web.edge.errors import quote
from felix.web.edge.params import MAX_INT_DIGITS, parse_types, query_int, remote_of
from felix.web.hypercorn.direct_stream import DirectStreamWriter

__all__ = ["serve_sse_system", "serve_sse_workflow"]

logger = logging.getLogger("felix.sse")

CLOSE_INTERNAL_ERROR: Final = 1011
#: Largest ``after`` / ``Last-Event-ID`` accepted, as on the WebSocket.
_MAX_AFTER: Final = 2**53
#: The response head of every stream. ``x-accel-buffering: no`` asks nginx
#: not to buffer it (which would hold events back until a buffer fills).
_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
#: The comment that keeps proxies from timing an idle stream out.
PING: Final = b": ping\n\n"
#: The same as one HTTP/1.1 chunk, for the direct writer.
PING_CHUNK: Final = b"%x\r\n%b\r\n" % (len(PING), PING)
#: An event's bytes on a direct-written stream: its SSE message as a chunk.
_CHUNK: Final = operator.attrgetter("sse_chunk")


def last_event_id(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The ``Last-Event-ID`` header as a seq, if present and not empty.

    Raises :class:`BadRequest` (400) naming the header for anything but a
    non-negative integer (Felix's ids are seqs).
    """
    for name, value in headers:
        if name.lower() == b"last-event-id":
            raw = value.decode("latin-1").strip()
            if not raw:
                return None
            if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_INT_DIGITS:
                raise BadRequest(f"header 'Last-Event-ID' must be an event's seq, got {quote(raw)}")
            return min(int(raw), _MAX_AFTER)
    return None


async def serve_sse_workflow(
    hub: Hub,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    query: Mapping[str, str],
    params: Mapping[str, str],
) -> None:
    """Serve ``GET /api/v1/sse/workflows/{workflow_id}`` until the stream ends.

    ``Last-Event-ID`` acts as ``after=`` and wins over it. Answers ``204`` when
    it is already at the last seq of a finished workflow (nothing will ever
    follow, and a 204 stops ``EventSource`` from reconnecting). Raises
    :class:`~felix._errors.FelixError` before the first byte to refuse the
    request (400 query, 404 workflow, 503 capacity or shutdown); once the
    stream has begun it never raises.
    """
    types = parse_types(query)
    after = None
    if "after" in query:
        after = query_int(query, "after", 0, maximum=_MAX_AFTER, error=BadRequest)
    resume = last_event_id(scope.get("headers", []))
    workflow_id = params["workflow_id"]
    if resume is not None:
        after = resume
        workflow = await hub.get_workflow(workflow_id)
        if workflow.status in TERMINAL_STATUSES and resume >= workflow.last_seq:
            await _no_content(send, scope)
            return
    async with hub.subscribe(workflow_id, after=after, types=types, remote=remote_of(scope)) as sub:
        await _run(hub, sub, receive, send, scope)


async def serve_sse_system(
    hub: Hub,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    query: Mapping[str, str],
    params: Mapping[str, str],
) -> None:
    """Serve ``GET /api/v1/sse/system/events``: every workflow's events and broadcasts.

    ``after=`` is refused (400) as on the WebSocket; a ``Last-Event-ID`` is
    ignored, since seqs are per workflow and this stream mixes them. Raises
    as :func:`serve_sse_workflow`.
    """
    types = parse_types(query)
    if "after" in query:
        raise BadRequest("after= is not supported on the system stream")
    async with hub.subscribe_system(types=types, remote=remote_of(scope)) as sub:
        await _run(hub, sub, receive, send, scope)


def _cors(scope: Scope) -> list[tuple[bytes, bytes]]:
    """Let the page that opened the stream read it: ``EventSource`` obeys CORS.

    The edge has already checked the request's ``Origin`` against
    ``FELIX_ALLOWED_ORIGINS`` (the route checks origins), so an origin that
    reaches here is allowed: echo it. Without it a page on another origin
    sees every answer, the 204 included, as a network error and reconnects.
    """
    for name, value in scope.get("headers", []):
        if name.lower() == b"origin":
            return [(b"access-control-allow-origin", value), (b"vary", b"origin")]
    return []


async def _no_content(send: Send, scope: Scope) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": _cors(scope)})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _run(hub: Hub, sub: Subscription, receive: Receive, send: Send, scope: Scope) -> None:
    """Stream ``sub`` as the response; returns when it ends or the client leaves."""
    CONNECTION_ID.set(sub.connection_id)  # for JSON log lines; this task is the connection's
    headers = _HEADERS + _cors(scope)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if scope["method"] == "HEAD":
        await _end(hub, send, b"")
        return
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_wait_for_disconnect, receive, nursery.cancel_scope)
        try:
            # The first bytes go through ASGI: they carry the response's head.
            retry = b"retry: %d\n" % hub.settings.sse_retry_ms
            await send({"type": "http.response.body", "body": retry, "more_body": True})
            direct = DirectStreamWriter.for_current_connection()
            if direct is None:
                await _write(hub, sub, send)
            else:
                settings = hub.settings
                direct.drop_silent_peer(after=settings.ping_interval + settings.ping_timeout)
                await _write_direct(hub, sub, direct)
        except Exception:
            logger.exception("stream %s failed", sub.connection_id)
            sub.close_code, sub.close_reason = CLOSE_INTERNAL_ERROR, "internal error"
        last = None
        if sub.close_code == CLOSE_NORMAL and sub.workflow_id is not None:
            last = await _last_seq(hub, sub.workflow_id)
        # Shielded: the reader cancels the nursery when Hypercorn answers the
        # end of the response with http.disconnect, in the middle of the send.
        with trio.CancelScope(shield=True):
            await _end(hub, send, close_message(sub, last))
        nursery.cancel_scope.cancel()


async def _last_seq(hub: Hub, workflow_id: str) -> int | None:
    """The finished workflow's last seq (a ``types=`` filter may have held it back)."""
    try:
        return (await hub.get_workflow(workflow_id)).last_seq
    except FelixError:
        return None  # forgotten already, or the broker is away: the close has no id


async def _wait_for_disconnect(receive: Receive, done: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass  # the request's (empty) body
    done.cancel()


async def _write(hub: Hub, sub: Subscription, send: Send) -> None:
    """The ASGI path (HTTP/2, TLS, HTTP/1.0): one ``send`` per batch, a ``: ping`` when idle.

    Returns once the subscription has ended.
    """
    interval = hub.settings.ping_interval
    while True:
        with trio.move_on_after(interval) as idle:
            batch = await sub.receive_batch()
        if idle.cancelled_caught:
            data = PING
        elif not batch:
            return
        else:
            data = b"".join([frame.sse for frame in batch]) if len(batch) > 1 else batch[0].sse
        await send({"type": "http.response.body", "body": data, "more_body": True})


async def _write_direct(hub: Hub, sub: Subscription, direct: DirectStreamWriter) -> None:
    """The hot path: each event's chunk written from the publisher's task where it can be.

    This task writes what direct writes left over and what queued behind
    them, in one write, and a ``: ping`` chunk when idle. Returns once the
    subscription has ended.
    """
    interval = hub.settings.ping_interval
    sub.wire_of = _CHUNK
    direct.attach(sub)
    try:
        while True:
            with trio.move_on_after(interval) as idle:
                data = await sub.receive_wire()
            if idle.cancelled_caught:
                data = PING_CHUNK
            elif data is None:
                return
            await direct.send(data)
            sub.written()
            del data  # not kept while the stream idles
    finally:
        direct.detach(sub)


def close_message(sub: Subscription, last: int | None) -> bytes:
    """``event: close`` with the WebSocket's close code and reason.

    After a finished workflow (1000) on a workflow stream it carries
    ``id: <last seq>``, so that an ``EventSource`` that reconnects anyway
    sends that id and gets the 204 that stops it.
    """
    code = sub.close_code if sub.close_code is not None else CLOSE_INTERNAL_ERROR
    text = encode({"code": code, "reason": sub.close_reason})
    seq = last if code == CLOSE_NORMAL and sub.workflow_id is not None else None
    return sse_message("close", text, seq)


async def _end(hub: Hub, send: Send, data: bytes) -> None:
    with trio.move_on_after(hub.settings.send_timeout):
        await send({"type": "http.response.body", "body": data, "more_body": False})
