"""Everything Felix changes in ``hypercorn.protocol.h11.H11Protocol``.

Written against Hypercorn 0.18.0 and h11 0.16.0. :class:`FelixH11Protocol` is
built only for a :class:`~felix.web.hypercorn.FelixConfig` (``install()``
rebinds ``hypercorn.protocol.H11Protocol``, the name ``ProtocolWrapper`` looks
up, to a factory that builds Hypercorn's own class for any other config).
Upstream's main branch (commit 0e2311f, the 0.18.0 release, checked December
2026) fixes none of the defects below.

1. **``100 Continue`` for a body that will be refused** (defect). Hypercorn
   sends ``100 Continue`` as soon as it has parsed the head of a request with
   ``Expect: 100-continue``, before the app has looked at it; the client then
   sends a body the app refuses (413 by ``Content-Length``, 401, 404, 429).
   Here the ``100`` goes out when the app first calls ``receive()`` (the
   app's :class:`~felix.web.hypercorn.task_group.AppInbox` calls back), which
   is what RFC 9110 §10.1.1 has in mind; an app that answers first sends none.
   Delete when ``test_no_100_continue_before_a_refusal`` passes without it.
2. **A refusal the client never reads** (defect). When the response is out
   and the request body is still arriving, Hypercorn closes the socket with
   the body unread, and the kernel's reset makes most clients lose the
   response (asyncio httpx in every try at 8 MiB). Such a response carries
   ``Connection: close``; then, instead of closing, the protocol sends
   :class:`~felix.web.hypercorn.tcp_server.Linger` (the server half-closes and
   bounds the time) and discards up to ``felix_linger_bytes`` of the body,
   closing as soon as it is complete. Delete with (1).
3. **Framing RFC 9112 says to refuse** (defect, h11 lets it through). A request
   with both ``Content-Length`` and ``Transfer-Encoding`` (§6.1; the shape of
   request smuggling), or with ``Transfer-Encoding`` in HTTP/1.0 (§6.1), is
   answered 400 and the connection closed. h11 answers its own protocol errors
   through Hypercorn with an empty body; here they get the JSON error body.
   Delete when h11 refuses these requests itself.
4. **Idle HTTP/2 connections by prior knowledge never time out** (defect). On
   ``PRI * HTTP/2.0`` the HTTP/1.1 parser stops the keep-alive timer (a request
   began) and hands over to HTTP/2, which restarts it only when a stream ends:
   a client that opens no stream holds its socket forever. Here the timer is
   restarted at the hand-over, so an HTTP/2 connection with no open stream is
   closed after ``keep_alive_timeout``, like an idle HTTP/1.1 one. Delete when
   ``test_idle_http2_prior_knowledge_is_closed`` passes without it.
6. **A request body that never ends** (defect). With the server
   (:mod:`~felix.web.hypercorn.tcp_server`, 7): the body of a request must
   arrive within ``felix_body_timeout`` of its head, or the request is
   answered 408 (JSON, if nothing was answered yet) and the connection closed.
5. **Three writes per response** (cost, ``felix_lean_http``). The head, the
   body and an empty end of message each cost a lock, a scope and a
   checkpoint; here the head is held until the body and empty writes skipped.
7. **h11, a stream, a task and two timer moves per request** (cost). A request
   the config's ``felix_inline`` admits (the publish route: it answers
   promptly and never streams), arriving whole in one read on an idle
   connection in the plainest HTTP/1.1 form
   (:func:`~felix.web.hypercorn.plain_request.parse_plain_request`), is served
   in the connection's own task: the ASGI scope built as ``HTTPStream`` builds
   it, the app called inline with the body in one message, its answer written
   in one write. h11 never sees the request and stays idle; the keep-alive
   timer is not restarted but its deadline moved (tcp_server, 8). Any other
   request, or any doubt, takes Hypercorn's path. Not a defect: delete it (and
   ``plain_request``) if per-request CPU stops mattering; the REST tests run
   both paths.
"""

from __future__ import annotations

import time
from itertools import chain
from typing import Any
from urllib.parse import unquote

import h11
import trio
from hypercorn.events import Closed, RawData, Updated
from hypercorn.protocol.events import Body, Data, EndBody
from hypercorn.protocol.h11 import STREAM_ID, H2ProtocolAssumedError, H11Protocol
from hypercorn.typing import (
    H11SendableEvent,
    HTTPDisconnectEvent,
    HTTPRequestEvent,
    HTTPScope,
    ResponseSummary,
)

from felix._core.events import encode
from felix.web.hypercorn.config import FelixConfig
from felix.web.hypercorn.plain_request import (
    PlainRequest,
    parse_plain_request,
    request_line,
    response_bytes,
)
from felix.web.hypercorn.tcp_server import BodyStarted, BodyTimedOut, Inline, Linger

__all__ = ["FelixH11Protocol"]

#: The upstream methods this module overrides (the guard test checks them).
OVERRIDES = (
    "handle",
    "_handle_events",
    "_create_stream",
    "_send_h11_event",
    "_send_error_response",
    "_maybe_recycle",
)

#: Messages for the statuses h11 hints at, in the contract's error body.
_PROTOCOL_ERRORS = {
    400: ("bad_request", "the request is not valid HTTP/1.1"),
    431: ("headers_too_large", "the request head is too large"),
    501: ("not_implemented", "only Transfer-Encoding: chunked is supported"),
}


def h11_connection_tokens(event: h11.Response) -> set[bytes]:
    """The lower-case tokens of a response's ``Connection`` header."""
    return {
        token.strip().lower()
        for name, value in event.headers
        if name == b"connection"
        for token in value.split(b",")
    }


def _framing_error(request: h11.Request) -> str | None:
    """Why RFC 9112 §6.1 says to refuse this request's framing, or None."""
    names = {name for name, _ in request.headers}
    if b"transfer-encoding" not in names:
        return None
    if b"content-length" in names:
        return "a request may not carry both Content-Length and Transfer-Encoding"
    if request.http_version == b"1.0":
        return "Transfer-Encoding is not allowed in an HTTP/1.0 request"
    return None


class FelixH11Protocol(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol with Felix's fixes to refusals and framing."""

    config: FelixConfig  # built only for one (see install())

    _felix_held: bytes = b""
    #: Whether the body's timer of (6) runs.
    _felix_body_timer: bool = False
    #: Set once the 408 of (6) is out: the app's own answer is dropped.
    _felix_timed_out: bool = False
    #: Bytes of request body still to discard while lingering; None if not (2).
    _felix_linger_left: int | None = None

    async def handle(self, event: Any) -> None:
        if isinstance(event, RawData):
            if self._felix_linger_left is not None:
                await self._felix_discard(event.data)
                return
            if (request := self._felix_inline_request(event.data)) is not None:
                await self._felix_serve_inline(request)
                return
        if isinstance(event, BodyTimedOut):
            await self._felix_body_timed_out()
            return
        await super().handle(event)

    async def _felix_body_timed_out(self) -> None:
        """(6) The body took too long: 408 if nothing was answered yet, and close."""
        if not self._felix_body_unfinished():
            return
        if self.connection.our_state is h11.SEND_RESPONSE:
            await self._felix_send_json(
                408,
                "request_timeout",
                f"the request body did not arrive within {self.config.felix_body_timeout:g} s",
            )
        self._felix_timed_out = True
        await self._close_stream()  # the app gets its disconnect; its answer is dropped
        await self.can_read.set()
        await self.send(Closed())

    # --- 1, 3, 4: the loop over h11's events (Hypercorn's, changed where marked) ------

    async def _handle_events(self) -> None:
        while True:
            # (1) No 100 Continue here: the app's first receive() sends it.
            try:
                event = self.connection.next_event()
            except h11.RemoteProtocolError as error:
                if self.connection.our_state in {h11.IDLE, h11.SEND_RESPONSE}:
                    await self._send_error_response(error.error_status_hint)
                await self.send(Closed())
                break
            if isinstance(event, h11.Request):
                await self.send(Updated(idle=False))
                if (reason := _framing_error(event)) is not None:  # (3)
                    await self._felix_refuse(400, "bad_request", reason)
                    break
                try:
                    await self._check_protocol(event)
                except H2ProtocolAssumedError:
                    # (4) HTTP/2 starts with no stream: the connection is idle.
                    await self.send(Updated(idle=True))
                    raise
                await self._create_stream(event)
            elif event is h11.PAUSED:
                await self.can_read.clear()
                await self.can_read.wait()
            elif event is h11.NEED_DATA:
                # (6) Tested here rather than in a call: this runs after every read.
                if not self._felix_body_timer and self._felix_body_unfinished():
                    await self._felix_arm_body_timer()
                break
            elif isinstance(event, h11.ConnectionClosed) or self.stream is None:
                break
            elif isinstance(event, h11.Data):
                await self.stream.handle(Body(stream_id=STREAM_ID, data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                if self._felix_body_timer:  # (6) the body is in: stop its timer
                    self._felix_body_timer = False
                    await self.send(Updated(idle=False))
                await self.stream.handle(EndBody(stream_id=STREAM_ID))
            elif isinstance(event, Data):  # WebSocket pass-through
                await self.stream.handle(event)

    async def _felix_arm_body_timer(self) -> None:
        """(6) Waiting for more of a request body: it must come within the body timeout.

        Armed only when a body is actually waited for, so a request whose body
        came with its head (most publishes) costs no timer.
        """
        if not self._felix_body_timer and self.stream is not None and self._felix_body_unfinished():
            self._felix_body_timer = True
            await self.send(BodyStarted())

    async def _create_stream(self, request: h11.Request) -> None:
        await super()._create_stream(request)
        if not self.connection.they_are_waiting_for_100_continue:
            return
        # (1) The app's inbox calls back on its first receive(); any other
        # inbox (felix_lean_inbox off) gets the 100 at once, as stock.
        inbox: Any = getattr(getattr(self.stream, "app_put", None), "__self__", None)
        if hasattr(inbox, "on_first_receive"):
            inbox.on_first_receive = self._felix_continue
        else:
            await self._felix_continue()

    async def _felix_continue(self) -> None:
        """Send ``100 Continue`` if the client still waits for it (1)."""
        if self.connection.they_are_waiting_for_100_continue:
            await self._send_h11_event(
                h11.InformationalResponse(
                    status_code=100, headers=self.config.response_headers("h11")
                )
            )

    # --- 2, 3: refusals ------------------------------------------------------------

    async def _send_error_response(self, status_code: int) -> None:
        error, message = _PROTOCOL_ERRORS.get(status_code, ("bad_request", "bad request"))
        await self._felix_send_json(status_code, error, message)

    async def _felix_refuse(self, status_code: int, error: str, message: str) -> None:
        """Answer with the contract's JSON error and close (lingering if the body comes)."""
        await self._felix_send_json(status_code, error, message)
        await self._felix_close()

    async def _felix_send_json(self, status_code: int, error: str, message: str) -> None:
        body = encode({"error": error, "message": message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await self._send_h11_event(
            h11.Response(
                status_code=status_code,
                headers=list(chain(headers, self.config.response_headers("h11"))),
            )
        )
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())

    def _felix_body_unfinished(self) -> bool:
        connection = self.connection
        return isinstance(connection, h11.Connection) and connection.their_state is h11.SEND_BODY

    async def _maybe_recycle(self) -> None:
        if not self._felix_body_unfinished():
            await super()._maybe_recycle()
            return
        await self._close_stream()
        await self._felix_close()

    async def _felix_close(self) -> None:
        """Close, lingering first while the request body is still arriving (2)."""
        await self.can_read.set()
        if not self._felix_body_unfinished():
            await self.send(Closed())
            return
        self._felix_linger_left = self.config.felix_linger_bytes
        await self.send(Linger())

    async def _felix_discard(self, data: bytes) -> None:
        """Read what is left of a refused body into nothing; close when it ends (2)."""
        assert self._felix_linger_left is not None
        self._felix_linger_left -= len(data)
        done = not data or self._felix_linger_left < 0
        if not done:
            assert isinstance(self.connection, h11.Connection)
            self.connection.receive_data(data)
            done = self._felix_drain_h11()
        if done:
            self._felix_linger_left = None
            await self.send(Closed())

    def _felix_drain_h11(self) -> bool:
        """Consume h11's body events; True once the body is complete (or broken)."""
        assert isinstance(self.connection, h11.Connection)
        while True:
            try:
                event = self.connection.next_event()
            except h11.RemoteProtocolError:
                return True
            if event is h11.NEED_DATA:
                return False
            if not isinstance(event, h11.Data):
                return True  # EndOfMessage, ConnectionClosed or PAUSED: the body is over

    # --- 2, 5: writes ------------------------------------------------------------------

    async def _send_h11_event(self, event: H11SendableEvent) -> None:
        if self._felix_timed_out:
            return  # (6) the 408 was the answer
        if (
            isinstance(event, h11.Response)
            and self._felix_body_unfinished()
            and b"close" not in h11_connection_tokens(event)
        ):
            # (2) The body will be discarded, so the connection cannot be reused.
            event = h11.Response(
                status_code=event.status_code,
                headers=[*event.headers.raw_items(), (b"connection", b"close")],
                reason=event.reason,
            )
        if not self.config.felix_lean_http:
            await super()._send_h11_event(event)
            return
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if isinstance(event, h11.Response):
            # (5) Hypercorn sends the body (or the end of an empty one) right
            # after the head, from the same task: it goes out with that.
            self._felix_held += data or b""
            return
        if self._felix_held:
            data, self._felix_held = self._felix_held + (data or b""), b""
        if data:
            await self.send(RawData(data=data))

    # --- 7: a plain request served in the connection's task ----------------------------

    def _felix_inline_request(self, data: bytes) -> PlainRequest | None:
        """``data`` as a request to serve inline (7), or None for Hypercorn's path."""
        admits = self.config.felix_inline
        connection = self.connection
        if (
            admits is None
            or self.stream is not None
            or not isinstance(connection, h11.Connection)
            or connection.our_state is not h11.IDLE
            or connection.their_state is not h11.IDLE
            or connection.trailing_data[0]
            or self.context.terminated.is_set()
            or self.keep_alive_requests + 1 >= self.config.keep_alive_max_requests
            or self.config.server_names
            or self.config.h11_pass_raw_headers
        ):
            return None
        line = request_line(data)
        if line is None or not admits(*line):
            return None
        return parse_plain_request(data, self.config.h11_max_incomplete_size, line)

    async def _felix_serve_inline(self, request: PlainRequest) -> None:
        """Serve ``request`` by calling the app in this task; one write answers it (7)."""
        self.keep_alive_requests += 1
        await self.context.mark_request()
        await self.send(Inline(busy=True))
        started = time.time()
        scope = self._felix_inline_scope(request)
        answer = _InlineAnswer(request.body)
        try:
            await self.app(
                scope, answer.receive, answer.send, trio.to_thread.run_sync, trio.from_thread.run
            )
        except Exception:
            await self.config.log.exception("Error in ASGI Framework")
        # At shutdown the answer says so and the connection closes, as in _maybe_recycle.
        closing = self.context.terminated.is_set()
        written = answer.written(self.config.response_headers("h11"), close=closing)
        if written is None:
            # No whole answer, or one h11 would not frame like this: a bare 500, as
            # HTTPStream answers an app that failed, and the connection closes.
            answer.response = {"status": 500, "headers": []}
            written = (_bare_500(self.config.response_headers("h11")), True)
        data, close = written
        await self.send(RawData(data=data))
        # Hypercorn logs an app that never answered with no response.
        response: Any = answer.response
        await self.config.log.access(scope, response, time.time() - started)
        await self.send(Inline(busy=False))
        if close:
            await self.send(Closed())

    def _felix_inline_scope(self, request: PlainRequest) -> HTTPScope:
        """The ASGI scope ``HTTPStream.handle`` builds for an HTTP/1.1 request."""
        path, _, query_string = request.target.partition(b"?")
        return {
            "type": "http",
            "http_version": "1.1",
            "asgi": {"spec_version": "2.1", "version": "3.0"},
            "method": request.method.decode("ascii").upper(),
            "scheme": "https" if self.ssl else "http",
            "path": unquote(path.decode("ascii")),
            "raw_path": path,
            "query_string": query_string,
            "root_path": self.config.root_path,
            "headers": request.headers,
            "client": self.client,
            "server": self.server,
            # As HTTPStream: the lifespan state's copy (typed loosely upstream).
            "state": self.connection_state.copy(),  # type: ignore[typeddict-item]
            "extensions": {},
        }


def _bare_500(extra: list[tuple[bytes, bytes]]) -> bytes:
    headers = [(b"content-length", b"0"), (b"connection", b"close"), *extra]
    return b"HTTP/1.1 500 \r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"


class _InlineAnswer:
    """The ASGI ``receive`` and ``send`` of an inline request (7): the body in one
    message, then ``http.disconnect``; the answer gathered for one write."""

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body
        self.response: ResponseSummary | None = None
        self._chunks: list[bytes] = []
        self._complete = False

    async def receive(self) -> HTTPRequestEvent | HTTPDisconnectEvent:
        body, self._body = self._body, None
        if body is None:
            # The connection is not read while the app runs: nothing more can come.
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(self, message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start" and self.response is None:
            self.response = {
                "status": int(message["status"]),
                "headers": message.get("headers", ()),
            }
        elif kind == "http.response.body" and self.response is not None and not self._complete:
            self._chunks.append(bytes(message.get("body", b"")))
            self._complete = not message.get("more_body", False)

    def written(
        self, extra: list[tuple[bytes, bytes]], *, close: bool
    ) -> tuple[bytes, bool] | None:
        """The response's bytes and whether to close after them; None if incomplete."""
        if self.response is None or not self._complete:
            return None
        headers = chain(self.response.get("headers", ()), extra)
        body = b"".join(self._chunks)
        return response_bytes(int(self.response["status"]), headers, body, close=close)
