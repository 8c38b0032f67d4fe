"""Everything Felix changes in ``hypercorn.protocol.ws_stream.WSStream``.

Written against Hypercorn 0.18.0 and wsproto 1.3.2. :class:`FelixWSStream`
is built only for a :class:`~felix.web.hypercorn.FelixConfig` (``install()``
rebinds ``hypercorn.protocol.h11.WSStream`` and ``hypercorn.protocol.h2.WSStream``
to a factory that builds Hypercorn's own class for any other config). Upstream's main
branch (commit 0e2311f, the 0.18.0 release, checked December 2026) fixes none
of the defects below. Each section says how to delete its part; when all are gone,
delete the module and its two rebinds in ``install()``.

1. **Pongs never checked** (defect). With ``websocket_ping_interval`` set,
   Hypercorn pings but ignores the answers, so a peer that vanished without
   closing (a laptop lid shut, a NAT mapping dropped) is never noticed; and its
   ping task sleeps through the close, holding the connection's task group
   (and shutdown) for up to an interval. Here the time of any data from the
   peer is noted (``handle``), and ``_send_pings`` hands the stream to the
   server's one :class:`~felix.web.hypercorn.pinger.Pinger` instead of
   sleeping in a task of its own. Delete when
   ``test_silent_peer_is_kept_without_the_fix`` fails and Hypercorn's ping
   task ends with its stream.
2. **permessage-deflate whenever offered** (cost). The handshake always
   negotiates the extension when a client offers it, so each event is
   compressed once per subscriber. ``_accept`` drops the offer unless
   ``felix_compression``. Delete when Hypercorn can decline it by configuration.
3. **A message after an oversized one crashes the server** (defect). Past
   ``websocket_max_message_size`` Hypercorn sends 1009 but keeps the partial
   message; a later message of the other kind raises ``TypeError`` out of the
   connection task, which ends ``hypercorn.trio.serve`` for everyone.
   ``_handle_events`` (a copy of Hypercorn's loop) clears the buffer and
   discards the rest. Delete when
   ``tests/test_fuzz.py::test_a_message_after_one_too_big_does_not_crash_the_server``
   passes without it.
4. **A reader task per connection** (cost). An ASGI app learns of client
   messages only through ``receive()``, so an app that also writes needs a
   second task per connection. ``felix_listen`` lets the app install a sink,
   called with each message from the connection's own task (``handle`` swaps
   ``app_put``). Not a defect: it goes when ASGI has something like it.
5. **The HTTP/1.1 parser kept for the life of a WebSocket** (cost). After the
   ``101`` only raw bytes pass, yet the h11 connection and the parsed
   handshake headers are kept. ``_accept`` lets go of both. Not a defect.
6. **Data before the handshake is answered** (defect). RFC 6455 §4.1 says a
   client waits for the ``101``; one that sends frames with its handshake
   (a Close in the same write) gets Hypercorn's ``400``, sent while the app
   may be accepting: the app's ``101`` then raises h11's ``LocalProtocolError``
   (a traceback), the connection is never closed, and the app is never told
   of the disconnect (its task and subscription live on). ``handle`` marks
   the stream closed before the ``400`` (now with a JSON body), tells the app
   and closes the connection. Delete when
   ``tests/web/test_hostile_input.py::test_9_data_before_the_101_is_refused_and_closed``
   passes without it.
7. **One message size for every WebSocket path** (missing feature).
   ``websocket_max_message_size`` applies to all routes, but the producer
   stream takes a REST body's worth per frame while a subscriber's commands
   are tiny. ``handle`` sets the buffer's limit from
   ``FelixConfig.felix_message_limits`` for the request's path. Delete when
   Hypercorn lets the app choose the limit per connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.protocol.events import Body, Data, EndBody, Event, Request, Response, StreamClosed
from hypercorn.protocol.h11 import H11WSConnection
from hypercorn.protocol.ws_stream import ASGIWebsocketState, FrameTooLargeError, WSStream
from hypercorn.typing import WebsocketAcceptEvent
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.frame_protocol import CloseReason

from felix._core.events import encode
from felix.web.hypercorn.config import FelixConfig
from felix.web.hypercorn.pinger import Pinger
from felix.web.hypercorn.task_group import AppInbox
from felix.web.hypercorn.tcp_server import CURRENT_SERVER

__all__ = ["FelixWSStream", "MessageSink"]

#: Called with each ASGI message from the client, in the connection's task.
MessageSink = Callable[[dict[str, Any]], None]

#: The upstream methods this module overrides (the guard test checks them).
OVERRIDES = ("handle", "_handle_events", "_accept", "_send_pings", "_send_wsproto_event")


class _Sent101:
    """Stands in for the h11 connection once the handshake is over (5).

    Hypercorn sends nothing through it after the ``101``; if a later version
    did, this says so instead of failing obscurely.
    """

    def send(self, event: object) -> bytes:
        raise RuntimeError(f"HTTP/1.1 event {event!r} after the WebSocket handshake")


class _Accepted:
    """Stands in for Hypercorn's ``Handshake`` once the WebSocket is open (5)."""

    accepted = True


_SENT_101 = _Sent101()
_ACCEPTED = _Accepted()


class FelixWSStream(WSStream):
    """Hypercorn's WebSocket stream with Felix's fixes, direct reads and less kept."""

    config: FelixConfig  # built only for one (see install())

    #: When data last came from the peer (trio's clock) (1).
    felix_heard: float = 0.0
    #: When the pinger last sent this stream a ping; None before the first (1).
    felix_pinged_at: float | None = None
    _felix_pinger: Pinger | None = None
    _felix_discarding: bool = False  # (3)
    _felix_sink: MessageSink | None = None  # (4)
    _felix_app_put: Callable[[dict[str, Any]], Awaitable[None]] | None = None  # (4)

    async def handle(self, event: Event) -> None:
        if isinstance(event, Body | Data):
            self.felix_heard = self.context.time()
            if not self.closed and not self.handshake.accepted:
                await self._felix_refuse_early_data()  # (6)
                return
        await super().handle(event)
        if isinstance(event, Request):
            # (7) A limit of this path's own, before any message arrives.
            limit = self.config.felix_message_limits.get(self.scope.get("path"))
            if limit is not None:
                self.buffer.max_length = limit
        if isinstance(event, Request) and self.app_put is not None and self._felix_app_put is None:
            # Every message for the app passes through app_put, which
            # Hypercorn sets when it starts the app (4).
            self._felix_app_put = self.app_put
            self.app_put = self._felix_put
        if self.closed and self._felix_pinger is not None:
            self._felix_pinger.forget(self)
            self._felix_pinger = None

    # --- 6: data before the 101 ------------------------------------------------------

    async def _felix_refuse_early_data(self) -> None:
        """Answer 400 and close; the app is told it lost the client (never raises)."""
        if self.state is not ASGIWebsocketState.HANDSHAKE or getattr(self, "response", None):
            return  # the app's own refusal is under way, and closes the connection
        # Closed first: an accept racing the 400 is then dropped by app_send.
        self.closed = True
        body = encode(
            {
                "error": "bad_request",
                "message": "WebSocket data arrived before the handshake was answered",
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await self.send(Response(stream_id=self.stream_id, status_code=400, headers=headers))
        await self.send(Body(stream_id=self.stream_id, data=body))
        await self.send(EndBody(stream_id=self.stream_id))
        if self.app_put is not None:
            code = CloseReason.ABNORMAL_CLOSURE.value
            await self.app_put({"type": "websocket.disconnect", "code": code})
        await self.send(StreamClosed(stream_id=self.stream_id))

    # --- 4: direct reads ---------------------------------------------------------

    async def _felix_put(self, message: dict[str, Any]) -> None:
        sink = self._felix_sink
        if sink is not None:
            sink(message)
        elif self._felix_app_put is not None:
            await self._felix_app_put(message)

    def felix_take_queued(self) -> list[dict[str, Any]]:
        """The app's messages already queued, taken without waiting (see AppInbox)."""
        inbox = getattr(self._felix_app_put, "__self__", None)
        return inbox.take_queued() if isinstance(inbox, AppInbox) else []  # type: ignore[return-value]

    def felix_listen(self, sink: MessageSink) -> bool:
        """Send every later message to ``sink``; False if the stream has already closed."""
        if self.closed:
            return False
        self._felix_sink = sink
        return True

    # --- 3: oversized messages -----------------------------------------------------

    async def _handle_events(self) -> None:
        # Hypercorn's own loop, but a too-large message clears the buffer and
        # turns further messages away instead of breaking out with it full.
        for event in self.connection.events():
            if isinstance(event, Message):
                if self._felix_discarding:
                    continue
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    self.buffer.clear()
                    self._felix_discarding = True
                    await self._send_wsproto_event(
                        CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)
                    )
                    continue
                if event.message_finished and self.app_put is not None:
                    await self.app_put(self.buffer.to_message())
                    self.buffer.clear()
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                if self.connection.state == ConnectionState.REMOTE_CLOSING:
                    # RFC 6455 §5.5.1: the answer echoes the client's own code.
                    await self._send_wsproto_event(event.response())
                await self.send(StreamClosed(stream_id=self.stream_id))

    # --- 2 and 5: the handshake -------------------------------------------------------

    async def _accept(self, message: WebsocketAcceptEvent) -> None:
        if not self.config.felix_compression:
            # With no offer on record, Hypercorn answers without the extension.
            self.handshake.extensions = None
        await super()._accept(message)
        if self.state is ASGIWebsocketState.CONNECTED:
            # self.send is the HTTP/1.1 protocol's stream_send (HTTP/2 has no
            # per-stream parser to drop).
            connection = getattr(getattr(self.send, "__self__", None), "connection", None)
            if isinstance(connection, H11WSConnection):
                connection.h11_connection = _SENT_101  # type: ignore[assignment]
            self.handshake = _ACCEPTED  # type: ignore[assignment]

    # --- 1: dead peers ---------------------------------------------------------------

    async def _send_pings(self) -> None:
        # Hypercorn starts this task once the WebSocket is accepted. With a
        # ping timeout it only hands the stream to the server's pinger and
        # ends, so an idle connection keeps no ping task of its own.
        timeout: float | None = self.config.felix_ping_timeout
        pinger: Pinger = self.config.felix_pinger
        interval = self.config.websocket_ping_interval
        server = CURRENT_SERVER.get()
        nursery = None if server is None else server.felix_handler_nursery
        if timeout is None or interval is None or nursery is None:
            await super()._send_pings()
            return
        if not self.closed:
            self._felix_pinger = pinger
            pinger.watch(self, nursery, interval, timeout)

    def felix_ping(self, now: float) -> None:
        """Send a ping from a short task of this connection (never waits)."""
        if self._felix_spawn(self._send_wsproto_event, Ping()):
            self.felix_pinged_at = now

    def felix_drop(self) -> None:
        """Drop the connection (no close frame: the peer is not answering)."""
        self._felix_spawn(self._felix_drop)

    async def _felix_drop(self) -> None:
        if not self.closed:
            await self.config.log.info("dropping a WebSocket peer that stopped answering pings")
            await self.send(StreamClosed(stream_id=self.stream_id))

    def _felix_spawn(self, func: Any, *args: Any) -> bool:
        if self.closed:
            return False
        try:
            self.task_group.spawn(func, *args)
        except (RuntimeError, AttributeError):
            # The connection's task group is over: the connection is ending.
            if self._felix_pinger is not None:
                self._felix_pinger.forget(self)
                self._felix_pinger = None
            return False
        return True
