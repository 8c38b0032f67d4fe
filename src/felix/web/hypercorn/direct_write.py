"""The hot path: pre-built WebSocket frames written straight to the socket.

Through the ASGI interface, every delivered frame costs a wake-up of the
connection's writer task, Hypercorn's WebSocket layers, wsproto framing, the
send lock, a shielded cancel scope and a checkpoint after the write: over a
hundred microseconds of CPU per frame on this stack
(``../shared/notes/performance-calibration.md``), most of it per subscriber.

Server frames are never masked, so without compression a frame's bytes are
the same for every subscriber: :class:`felix.Frame` builds them once
(``Frame.wire``). A :class:`DirectWriter` lets the publisher's task hand
those bytes to the kernel with one non-blocking ``send`` per subscriber and
publish, with no task switch. It writes only when nothing can be overtaken:
the subscription has nothing queued or in flight (checked by the
subscription) and Hypercorn holds no write of its own (its send lock is free,
the stream is open). Whatever the socket does not take at once is left to the
connection's writer, which writes it — and every frame queued behind it, in
one ``send`` — through Hypercorn's own path, with its write deadline.

It reaches trio's private socket object and skips Hypercorn's WebSocket
layer for data frames only (wsproto keeps no state for them; control frames
and the close still go through wsproto). It is not used when
permessage-deflate was negotiated, nor over HTTP/2. Tests cover ordering
against queued frames, partial writes, a stalled reader and cancellation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypercorn.events import RawData
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream

from felix.web.hypercorn.fix_send_deadline import CURRENT_SERVER, DeadlineTCPServer

if TYPE_CHECKING:
    from felix._runtime.subscription import Subscription

__all__ = ["DirectWriter"]


class DirectWriter:
    """Writes frame bytes to one WebSocket connection's socket."""

    def __init__(self, server: DeadlineTCPServer, stream: WSStream, sock: Any) -> None:
        self._server = server
        self._stream = stream
        self._sock = sock

    @classmethod
    def for_current_connection(cls) -> DirectWriter | None:
        """The writer for the connection serving this task, if direct writes are safe."""
        server = CURRENT_SERVER.get()
        if server is None:
            return None
        stream = getattr(getattr(server.protocol, "protocol", None), "stream", None)
        if not isinstance(stream, WSStream):
            return None  # HTTP/2, or not a WebSocket
        # Compressed frames differ per connection. If wsproto's internals ever
        # move, this answers "maybe compressed" and the ASGI path is used.
        extensions = getattr(
            getattr(getattr(stream, "connection", None), "_proto", None), "extensions", None
        )
        if extensions is None or any(extension.enabled() for extension in extensions):
            return None
        sock = getattr(getattr(server.stream, "socket", None), "_sock", None)
        if sock is None:
            return None  # TLS: bytes must go through the SSL stream
        return cls(server, stream, sock)

    def try_send(self, data: bytes) -> int:
        """Write what the kernel takes now, without waiting; return the byte count.

        Returns 0 when a write of Hypercorn's is in progress or the stream is
        closing, so the caller queues the bytes behind it instead.
        """
        stream = self._stream
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

    def attach(self, sub: Subscription) -> None:
        """Let ``sub`` write through this connection; Hypercorn's own writes
        (pongs, pings, the close) then send the rest of a half-written frame first."""
        sub.direct = self
        self._server.felix_take_leftover = sub.take_leftover

    def detach(self, sub: Subscription) -> None:
        """Undo :meth:`attach`."""
        sub.direct = None
        self._server.felix_take_leftover = None

    async def send(self, data: bytes) -> None:
        """Write through Hypercorn's path: its send lock and Felix's write deadline."""
        await self._server.protocol_send(RawData(data))
