"""The hot path for Server-Sent Events: pre-built chunks written straight to the socket.

An event stream is an HTTP/1.1 response with a chunked body. Through the ASGI
interface every delivery costs a wake-up of the stream's writer task,
Hypercorn's HTTP stream, h11's chunk framing, the send lock and a checkpoint:
three to four times what a WebSocket delivery costs with
:mod:`felix.web.hypercorn.connection`'s direct writes (the ``sse-fanout`` bench).

A chunk's bytes are the same for every subscriber, so Felix builds them once
per event (``Frame.sse_chunk``), and a :class:`DirectStreamWriter` lets the
publisher's task hand them to the kernel as the WebSocket's direct writer
does, under the same rules: only when nothing can be overtaken, and whatever
the socket does not take is written by the stream's own task through
Hypercorn's path, with Felix's write deadline.

h11 keeps no state for a chunked body's data (its ``ChunkedWriter`` frames
each ``Data`` on its own), so chunks written beside it leave it consistent:
the end of the response still goes through h11. It is used only once the
response head is on the wire, on plain TCP (not TLS), with a chunked body (not
HTTP/1.0, not HTTP/2). Delete it, and Felix writes through ASGI, if Hypercorn
ever offers a cheaper write for streaming responses.

Written against Hypercorn 0.18.0 (``H11Protocol.stream``/``.connection``,
``HTTPStream.state``) and h11 0.16.0 (``Connection._writer`` is a
``ChunkedWriter`` for a chunked body); it reads Felix's own
:class:`~felix.web.hypercorn.h11_protocol.FelixH11Protocol` (the held head) and
:class:`~felix.web.hypercorn.tcp_server.FelixTCPServer` (send lock, leftovers).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import h11
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream

from felix.web.hypercorn.connection import WriterBase
from felix.web.hypercorn.tcp_server import CURRENT_SERVER, FelixTCPServer

if TYPE_CHECKING:
    pass

__all__ = ["DirectStreamWriter"]


class DirectStreamWriter(WriterBase):
    """Writes whole chunks of a streaming HTTP/1.1 response to its socket."""

    def __init__(
        self, server: FelixTCPServer, protocol: H11Protocol, stream: HTTPStream, sock: Any
    ) -> None:
        super().__init__(server)
        self._protocol = protocol
        self._http = stream
        self._sock = sock

    @classmethod
    def for_current_connection(cls) -> DirectStreamWriter | None:
        """The writer for the response this task is streaming, if direct writes are safe.

        Call it after the response's head and first body bytes were sent
        through ASGI (Hypercorn holds the head until then).
        """
        server = CURRENT_SERVER.get()
        if server is None:
            return None
        protocol = getattr(server.protocol, "protocol", None)
        if not isinstance(protocol, H11Protocol):
            return None  # HTTP/2
        stream = protocol.stream
        connection = protocol.connection
        held: Any = getattr(protocol, "_felix_held", None)
        if (
            not isinstance(stream, HTTPStream)
            or not isinstance(connection, h11.Connection)
            or connection.our_state is not h11.SEND_BODY
            # If h11's internals ever move, this answers "not chunked" and the
            # ASGI path is used.
            or type(getattr(connection, "_writer", None)).__name__ != "ChunkedWriter"
            or held  # the head is not on the wire yet
        ):
            return None
        sock = getattr(getattr(server.stream, "socket", None), "_sock", None)
        if sock is None:
            return None  # TLS: bytes must go through the SSL stream
        return cls(server, protocol, stream, sock)

    def drop_silent_peer(self, after: float) -> bool:
        """Have the kernel drop the connection once sent bytes go unacknowledged ``after`` s.

        A WebSocket peer that vanished is found by its missing pongs
        (:mod:`felix.web.hypercorn.ws_stream`); an event stream has no
        pongs, but it sends a ``: ping`` every interval, and TCP acknowledges
        every byte: ``TCP_USER_TIMEOUT`` ends a connection whose peer stopped
        acknowledging, and the app gets its disconnect. Returns False where
        the option does not exist (not Linux).
        """
        option = getattr(socket, "TCP_USER_TIMEOUT", None)
        if option is None:
            return False
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, option, max(1, round(after * 1000)))
        except OSError:
            return False
        return True

    def try_send(self, data: bytes) -> int:
        """Write what the kernel takes now, without waiting; return the byte count.

        Returns 0 when a write of Hypercorn's is in progress or the response is
        ending, so the caller queues the bytes behind it instead.
        """
        stream = self._http
        if (
            self._server.send_lock.locked()
            or stream.closed
            or stream.state is not ASGIHTTPState.RESPONSE
        ):
            return 0
        try:
            sent: int = self._sock.send(data)
        except OSError:
            return 0  # would block, or the peer is gone: the writer's own write finds out
        return sent
