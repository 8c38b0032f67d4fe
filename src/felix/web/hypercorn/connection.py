"""The one way the rest of Felix reaches a connection: :class:`Connection`.

Changes no upstream class; it is the small interface in front of
:class:`~felix.web.hypercorn.tcp_server.FelixTCPServer` and
:class:`~felix.web.hypercorn.ws_stream.FelixWSStream`, so that nothing outside
this package touches a Hypercorn, wsproto or trio-socket object.

:func:`current_connection` answers, for the task serving a WebSocket, a
:class:`Connection` with:

- :meth:`Connection.listen` — hand every later client message (ASGI
  ``websocket.receive`` / ``websocket.disconnect``) to a sink, called in the
  connection's own task, so the app needs no reader task;
- :meth:`Connection.take_queued` — the client messages already queued for
  the app, without a checkpoint each (a burst handled in one turn);
- :meth:`Connection.try_send` — write pre-built frame bytes with one
  non-blocking ``send`` (the hot path), or 0 if that would overtake anything;
- :meth:`Connection.send` — write through Hypercorn's path, with its lock and
  Felix's write deadline;
- :meth:`Connection.attach` / :meth:`Connection.detach` — let a subscription's
  half-written frame go out before Hypercorn's own frames (pong, ping, close);
- :meth:`Connection.abort` — reset the connection at once.

Why direct writes are safe: server frames are never masked, so without
compression a frame's bytes are the same for every subscriber
(``Frame.wire``). :meth:`~Connection.try_send` writes only when Hypercorn
holds no write of its own (its send lock is free, the stream open), and the
subscription checks it has nothing queued. :attr:`Connection.can_write_direct`
is False with permessage-deflate, over HTTP/2 and TLS; then only the ASGI
path may be used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypercorn.events import RawData
from hypercorn.protocol.ws_stream import ASGIWebsocketState

from felix.web.hypercorn.tcp_server import CURRENT_SERVER, FelixTCPServer
from felix.web.hypercorn.ws_stream import FelixWSStream, MessageSink

if TYPE_CHECKING:
    from felix._runtime.subscription import Subscription

__all__ = [
    "Connection",
    "MessageSink",
    "WriterBase",
    "current_connection",
]


class WriterBase:
    """What every direct writer shares: Hypercorn's own write path, and the
    hand-over of a half-written message to Hypercorn's writes.

    Subclasses add ``try_send`` for their kind of stream (a WebSocket, a
    streaming HTTP/1.1 response): the non-blocking write beside Hypercorn's.
    """

    def __init__(self, server: FelixTCPServer) -> None:
        self._server = server

    def try_send(self, data: bytes) -> int:
        """Write what the kernel takes now, without waiting; return the byte count."""
        raise NotImplementedError

    async def send(self, data: bytes) -> None:
        """Write through Hypercorn's path: its send lock and Felix's write deadline.

        Shielded while it writes; an overdue write resets the connection.
        """
        await self._server.protocol_send(RawData(data))

    def attach(self, sub: Subscription) -> None:
        """Let ``sub`` write through this connection; Hypercorn's own writes
        (pongs, pings, the close, the end of a body) then send the rest of a
        half-written message first."""
        sub.direct = self
        self._server.felix_take_leftover = sub.take_leftover

    def detach(self, sub: Subscription) -> None:
        """Undo :meth:`attach`."""
        sub.direct = None
        self._server.felix_take_leftover = None


class Connection(WriterBase):
    """One WebSocket connection served by Felix's Hypercorn classes.

    Made by :func:`current_connection`; holds the connection's handler and
    stream, never outlives them in use (every method is safe after the close).
    """

    def __init__(self, server: FelixTCPServer, stream: FelixWSStream) -> None:
        super().__init__(server)
        self._stream = stream
        self._resolved = False
        self._sock: Any = None

    @property
    def can_write_direct(self) -> bool:
        """Whether :meth:`try_send` may be used (no compression, HTTP/1.1, no TLS).

        Known once the WebSocket is accepted (compression is negotiated then);
        False before.
        """
        if not self._resolved and self._stream.state is ASGIWebsocketState.CONNECTED:
            self._resolved = True
            self._sock = _plain_socket(self._server) if _uncompressed(self._stream) else None
        return self._sock is not None

    def listen(self, sink: MessageSink) -> bool:
        """Send every later client message to ``sink``, in the connection's task.

        ``sink`` must not block or raise. Returns False if the stream has
        already closed (the app has missed nothing but the disconnect). Call
        it before the accept, so no message reaches the app's inbox first.
        """
        return self._stream.felix_listen(sink)

    def take_queued(self) -> list[dict[str, Any]]:
        """The client messages already queued for the app, taken without waiting.

        Call it right after ``await receive()`` to handle a burst of messages
        (a producer's frames from one read) in one turn of the task; the
        messages are those ``receive()`` would give next, in order. Empty
        when none are queued, or when the app's inbox is not Felix's.
        """
        return self._stream.felix_take_queued()

    def try_send(self, data: bytes) -> int:
        """Write what the kernel takes now, without waiting; return the byte count.

        Returns 0 when a write of Hypercorn's is in progress, the stream is
        closing, or direct writes are not possible, so the caller queues the
        bytes behind it instead. Never raises.
        """
        stream = self._stream
        sock = self._sock
        if sock is None and (self._resolved or not self.can_write_direct):
            return 0  # (the hot path pays one attribute test once resolved)
        if (
            self._server.send_lock.locked()
            or stream.closed
            or stream.state is not ASGIWebsocketState.CONNECTED
        ):
            return 0
        try:
            sent: int = self._sock.send(data)
        except OSError:
            # Would block, or the peer is gone: the writer's own write will
            # wait for room or find the error and close the connection.
            return 0
        return sent

    async def abort(self) -> None:
        """Reset the TCP connection now (no close frame); the app gets its disconnect."""
        await self._server.felix_abort()


def _uncompressed(stream: FelixWSStream) -> bool:
    # Compressed frames differ per connection. If wsproto's internals ever
    # move, this answers "maybe compressed" and the ASGI path is used.
    extensions = getattr(
        getattr(getattr(stream, "connection", None), "_proto", None), "extensions", None
    )
    return extensions is not None and not any(extension.enabled() for extension in extensions)


def _plain_socket(server: FelixTCPServer) -> Any:
    """trio's private socket object, or None under TLS."""
    return getattr(getattr(server.stream, "socket", None), "_sock", None)


def _current() -> tuple[FelixTCPServer, FelixWSStream] | None:
    server = CURRENT_SERVER.get()
    if server is None:
        return None
    stream = getattr(getattr(server.protocol, "protocol", None), "stream", None)
    if not isinstance(stream, FelixWSStream):
        return None
    return server, stream


def current_connection() -> Connection | None:
    """The WebSocket connection serving this task, or None.

    None when the connection is not served by Felix's classes (another
    config, HTTP/2, not a WebSocket): the app then uses ``receive()`` and
    ``send()`` as usual.
    """
    found = _current()
    return None if found is None else Connection(*found)
