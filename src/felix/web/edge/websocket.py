"""The WebSocket handlers: a handshake's own query checked, then one writer and one reader.

The edge (:mod:`felix.web.edge.app`) has matched the route, applied its rate
limits, authenticated it, checked the browser's origin and the workflow id
before these handlers run; what is left is the route's own query (``after=``,
``types=``) and the workflow. They are plain ASGI, not Quart routes: a refusal
is a real HTTP status and JSON body (the ASGI ``websocket.http.response``
extension, which Hypercorn implements, rendered by :mod:`felix.web.edge.errors`),
a failure after the accept closes with 1011 (Quart would close with 1000), and
frames are spared Quart's per-message layers.

Each connection has one task of its own, the writer: it writes what direct
writes left over and the subscription's queued frames, and finally the close
frame. Client messages (pings, commands) and the disconnect reach
:func:`_on_message` from Hypercorn's connection task
(the adapter's ``listen``), so no reader task waits in ``receive()``; a
disconnect ends the writer at once. Where that hand-over is not available, a
reader task in a nursery with the writer does the same, and whichever ends
first cancels the other. Leaving :meth:`Hub.subscribe`'s block unregisters the
subscriber: nothing outlives the connection.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

import trio

from felix._core.events import Frame, decode_json, format_timestamp, make_frame
from felix._errors import BadRequest, FelixError
from felix._logging import CONNECTION_ID, REQUEST_ID
from felix._runtime.hub import Hub
from felix._runtime.subscription import Subscription
from felix.web._asgi import Message, Receive, Scope, Send
from felix.web.edge.errors import quote
from felix.web.edge.params import parse_types, query_int, remote_of
from felix.web.hypercorn import Connection, current_connection

__all__ = ["serve_system", "serve_workflow"]

logger = logging.getLogger("felix.ws")

CLOSE_INTERNAL_ERROR: Final = 1011
#: The answer to the plain-text ``ping``, built once.
_PONG: Final = Frame.of("pong", "pong")
#: Largest ``after`` accepted; far beyond any real seq, small enough to stay an int64.
_MAX_AFTER: Final = 2**53


async def serve_workflow(
    hub: Hub,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    query: Mapping[str, str],
    params: Mapping[str, str],
) -> None:
    """Serve ``WS /api/v1/ws/workflows/{workflow_id}`` until the connection ends.

    Raises :class:`~felix._errors.FelixError` to refuse the handshake (400 for
    the query, 404 for the workflow); once accepted, it never raises: a
    failure closes the connection with 1011. Leaving :meth:`Hub.subscribe`'s
    block unregisters the subscriber.
    """
    types = parse_types(query)
    after = None
    if "after" in query:
        after = query_int(query, "after", 0, maximum=_MAX_AFTER, error=BadRequest)
    async with hub.subscribe(
        params["workflow_id"], after=after, types=types, remote=remote_of(scope)
    ) as sub:
        await _run(sub, receive, send)


async def serve_system(
    hub: Hub,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    query: Mapping[str, str],
    params: Mapping[str, str],
) -> None:
    """Serve ``WS /api/v1/ws/system/events``: every workflow's events and broadcasts.

    Raises :class:`~felix._errors.BadRequest` to refuse the handshake for its
    query; once accepted, as :func:`serve_workflow`.
    """
    types = parse_types(query)
    if "after" in query:
        raise BadRequest("after= is not supported on the system stream")
    async with hub.subscribe_system(types=types, remote=remote_of(scope)) as sub:
        await _run(sub, receive, send)


async def _run(sub: Subscription, receive: Receive, send: Send) -> None:
    connection = current_connection()
    request = REQUEST_ID.get()
    # The sink is installed before the accept, so that no message reaches the channel first.
    sink = partial(_on_message, sub, request)
    if connection is not None and not connection.listen(sink):
        sub.detach()  # the client left during the handshake
    await send({"type": "websocket.accept"})
    try:
        if connection is None:
            # Only receive() tells of client messages: a reader task waits there.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read, sub, receive, nursery.cancel_scope)
                await _write(sub, send)
                nursery.cancel_scope.cancel()
        elif connection.can_write_direct:  # known once accepted (compression, TLS)
            # Client messages come to _on_message from the connection's
            # own task: this task only writes.
            await _write_direct(sub, connection, send)
        else:
            await _write(sub, send)
    except Exception:
        # After the accept the client can only learn of a failure from the
        # close code; Quart would say 1000 here, which reads as success.
        _log_failure(sub, request)
        await send(
            {
                "type": "websocket.close",
                "code": CLOSE_INTERNAL_ERROR,
                "reason": "internal error",
            }
        )


async def _read(sub: Subscription, receive: Receive, done: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            done.cancel()
            return
        if message["type"] == "websocket.receive":
            _answer(sub, message)


def _log_failure(sub: Subscription, request: str | None) -> None:
    """Log the exception being handled as this connection's failure.

    The JSON log fields (request and connection ids) are set here, in a copy
    of the context, rather than for the connection's whole life: a context
    of its own would cost every idle WebSocket about half a KiB.
    """

    def log() -> None:
        REQUEST_ID.set(request)
        CONNECTION_ID.set(sub.connection_id)
        logger.exception("connection %s failed", sub.connection_id)

    contextvars.copy_context().run(log)


def _on_message(sub: Subscription, request: str | None, message: Message) -> None:
    """A client message, handed over by the connection's task (never raises).

    ``request`` is the connection's request id, for the log.
    """
    try:
        if message["type"] == "websocket.receive":
            _answer(sub, message)
        elif message["type"] == "websocket.disconnect":
            sub.detach()  # the writer stops at once; nothing can reach the client now
    except Exception:
        # Raised here, it would end Hypercorn's connection task instead.
        _log_failure(sub, request)
        sub.kick(CLOSE_INTERNAL_ERROR, "internal error")


async def _write(sub: Subscription, send: Send) -> None:
    """The ASGI path: one ``websocket.send`` per frame (compression, HTTP/2, TLS)."""
    while batch := await sub.receive_batch():
        for frame in batch:
            await send({"type": "websocket.send", "text": frame.text})
    await send({"type": "websocket.close", "code": sub.close_code, "reason": sub.close_reason})


async def _write_direct(sub: Subscription, direct: Connection, send: Send) -> None:
    """The hot path's writer: what direct writes left over, then queued frames, in one write."""
    direct.attach(sub)
    try:
        while (data := await sub.receive_wire()) is not None:
            await direct.send(data)
            sub.written()
            del data  # not kept while the connection idles
    finally:
        direct.detach(sub)
    await send({"type": "websocket.close", "code": sub.close_code, "reason": sub.close_reason})


def _answer(sub: Subscription, message: Message) -> None:
    text = message.get("text")
    if text is None:
        reply: dict[str, Any] = {
            "type": "command_error",
            "message": "binary frames are not understood; send JSON text",
        }
    elif text == "ping":
        sub.offer([_PONG], control=True)
        return
    else:
        reply = _command_reply(text)
    sub.offer([make_frame(reply)], control=True)


def _command_reply(text: str) -> dict[str, Any]:
    try:
        command = decode_json(text)
    except FelixError as error:
        return {"type": "command_error", "message": error.message}
    if not isinstance(command, dict) or not isinstance(command.get("type"), str):
        return {"type": "command_error", "message": 'a command is a JSON object with a "type"'}
    if command["type"] == "ping":
        return {"type": "pong", "timestamp": format_timestamp(datetime.now(UTC))}
    return {
        "type": "command_error",
        "message": f"unknown command {quote(command['type'])}; the server understands: ping",
    }
