"""One client WebSocket connection on anyio and wsproto, read by its caller's task.

Runs under asyncio and under Trio alike. The connection has no background
task: :meth:`ClientWebSocket.get_message` reads the socket, answers the
server's pings and returns the next message, so nothing outlives the block
that opened it and a ping crossing our Close cannot crash a reader behind the
caller's back (trio-websocket 0.12.2 has both defects; see ``felix._patches``).
While the caller does not read, nothing is read: the kernel's buffers fill and
the server sees a slow consumer, which is how backpressure should work.

Why not a WebSocket library: trio-websocket is Trio only; httpx-ws runs a
reader task with a queue of whole messages, leaves a message's size
unbounded (its ``max_message_size_bytes`` is a read size) and needs a second
dependency; the handshake and framing are wsproto's, which the server's stack
already ships, so this module only moves bytes.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Final
from urllib.parse import urlsplit

import anyio
import anyio.abc
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from felix.client._errors import broken_as_os_error

__all__ = [
    "ClientWebSocket",
    "ConnectionClosed",
    "HandshakeRejected",
    "connect",
    "open_connection",
    "target",
]

_READ_SIZE: Final = 65536
#: Close codes the client itself reports.
CLOSE_ABNORMAL: Final = 1006
CLOSE_TOO_BIG: Final = 1009
#: The most bytes of a refusal's body kept (the contract's JSON error is far smaller).
_MAX_REJECT_BODY: Final = 64 * 1024


class ConnectionClosed(Exception):
    """The connection ended: the server's close ``code`` and ``reason``, or 1006
    (abnormal closure) when the TCP connection ended without a close frame."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with {code} ({reason})")
        self.code = code
        self.reason = reason


class HandshakeRejected(Exception):
    """The server answered the handshake with an HTTP status instead of 101."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"handshake refused with HTTP {status}")
        self.status = status
        self.headers = headers
        self.body = body


def target(url: str) -> tuple[str, int, bool, str, str]:
    """``(host, port, tls, Host header, resource)`` of a ``ws(s)://`` or ``http(s)://`` URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    tls = parts.scheme in ("wss", "https")
    port = parts.port or (443 if tls else 80)
    name = f"[{host}]" if ":" in host else host  # an IPv6 literal
    host_header = name if port in (80, 443) else f"{name}:{port}"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, port, tls, host_header, resource


class ClientWebSocket:
    """An open WebSocket. One task reads (:meth:`get_message`) and may send
    (:meth:`send_message`); it is not meant to be shared between tasks."""

    def __init__(
        self, stream: anyio.abc.ByteStream, protocol: WSConnection, max_message_size: int
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self._max_message_size = max_message_size
        self._parts: list[str | bytes | bytearray] = []
        self._size = 0
        self.closed: ConnectionClosed | None = None

    async def _send(self, event: Event) -> None:
        data = self._protocol.send(event)
        try:
            await self._stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            self.closed = ConnectionClosed(CLOSE_ABNORMAL, "abnormal closure")
            raise self.closed from None

    async def _receive(self) -> None:
        """Feed the next bytes to wsproto; a dead connection is a 1006."""
        try:
            data = await self._stream.receive(_READ_SIZE)
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            data = None
        if data is None:
            self.closed = ConnectionClosed(CLOSE_ABNORMAL, "abnormal closure")
            raise self.closed
        self._protocol.receive_data(data)

    async def get_message(self) -> str | bytes:
        """The next whole message; answers pings on the way.

        Raises :class:`ConnectionClosed` when the connection has ended (after
        answering the server's close), with 1009 for a message over
        ``max_message_size`` (the connection is closed with 1009 then).
        """
        while True:
            if self.closed is not None:
                raise self.closed
            try:
                for event in self._protocol.events():
                    message = await self._handle(event)
                    if message is not None:
                        return message
            except RemoteProtocolError as error:
                self.closed = ConnectionClosed(1002, str(error))
                raise self.closed from None
            await self._receive()

    async def _handle(self, event: Event) -> str | bytes | None:
        if isinstance(event, Ping):
            if self._protocol.state is ConnectionState.OPEN:  # a ping crossing our Close
                await self._send(event.response())
        elif isinstance(event, CloseConnection):
            if self._protocol.state is ConnectionState.REMOTE_CLOSING:
                await self._send(event.response())
            self.closed = ConnectionClosed(event.code, event.reason or _name(event.code))
            raise self.closed
        elif isinstance(event, TextMessage | BytesMessage):
            self._size += len(event.data)
            if self._size > self._max_message_size:
                await self.aclose(CLOSE_TOO_BIG, "message too big")
                self.closed = ConnectionClosed(CLOSE_TOO_BIG, "message too big")
                raise self.closed
            self._parts.append(event.data)
            if event.message_finished:
                parts, self._parts, self._size = self._parts, [], 0
                if isinstance(event, TextMessage):
                    return "".join(str(part) for part in parts)
                return b"".join(part for part in parts if not isinstance(part, str))
        return None

    async def send_message(self, text: str) -> None:
        """Send one text message. Raises :class:`ConnectionClosed` if the connection ended."""
        if self.closed is not None:
            raise self.closed
        try:
            await self._send(TextMessage(data=text))
        except LocalProtocolError:
            self.closed = ConnectionClosed(CLOSE_ABNORMAL, "connection closing")
            raise self.closed from None

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Send a Close if the connection is open. Idempotent; never raises for a
        connection that is already gone."""
        if self._protocol.state is ConnectionState.OPEN:
            with suppress(ConnectionClosed):
                await self._send(CloseConnection(code=code, reason=reason))


def _name(code: int) -> str:
    return {1000: "normal closure", 1001: "going away", 1011: "internal error"}.get(code, "closed")


async def connect(url: str, ssl_context: ssl.SSLContext | None) -> anyio.abc.ByteStream:
    """A TCP (or, for ``wss``/``https``, TLS) stream to the URL's host; raises :class:`OSError`."""
    host, port, tls, _, _ = target(url)
    if tls:
        context = ssl_context or ssl.create_default_context()
        # Like HTTPS clients, accept a peer that closes without close_notify.
        return await anyio.connect_tcp(
            host, port, ssl_context=context, tls_hostname=host, tls_standard_compatible=False
        )
    return await anyio.connect_tcp(host, port)


async def _handshake(
    stream: anyio.abc.ByteStream, url: str, headers: list[tuple[bytes, bytes]]
) -> WSConnection:
    _, _, _, host_header, resource = target(url)
    protocol = WSConnection(ConnectionType.CLIENT)
    await stream.send(
        protocol.send(Request(host=host_header, target=resource, extra_headers=headers))
    )
    rejected: RejectConnection | None = None
    body = b""
    while True:
        for event in protocol.events():
            if isinstance(event, AcceptConnection):
                return protocol
            if isinstance(event, RejectConnection):
                rejected = event
                if not event.has_body:
                    raise HandshakeRejected(event.status_code, list(event.headers), b"")
            elif isinstance(event, RejectData) and rejected is not None:
                body = (body + event.data)[:_MAX_REJECT_BODY]
                if event.body_finished:
                    raise HandshakeRejected(rejected.status_code, list(rejected.headers), body)
        try:
            data: bytes | None = await stream.receive(_READ_SIZE)
        except anyio.EndOfStream:
            data = None
        if data is None and rejected is not None:
            raise HandshakeRejected(rejected.status_code, list(rejected.headers), body)
        if data is None:
            raise OSError("the server closed the connection during the handshake")
        protocol.receive_data(data)


@asynccontextmanager
async def open_connection(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None,
    headers: list[tuple[bytes, bytes]],
    max_message_size: int,
    connect_timeout: float,
) -> AsyncIterator[ClientWebSocket]:
    """Open one WebSocket to ``url`` (``ws://`` or ``wss://``) and yield it.

    Owns the TCP (or TLS) stream: leaving the block sends a Close, waits at
    most ``connect_timeout`` seconds for the server's, and closes the socket,
    whatever happened. Starts no task.

    Raises :class:`TimeoutError` when the connect and the handshake take over
    ``connect_timeout`` seconds, :class:`HandshakeRejected` for a refused
    handshake, :class:`OSError` for a failed connect and
    :class:`wsproto.utilities.RemoteProtocolError` for an answer that is not a
    WebSocket handshake.
    """
    with anyio.fail_after(connect_timeout):
        stream = await connect(url, ssl_context)
    try:
        with anyio.fail_after(connect_timeout), broken_as_os_error():
            protocol = await _handshake(stream, url, headers)
        ws = ClientWebSocket(stream, protocol, max_message_size)
        try:
            yield ws
        finally:
            with anyio.move_on_after(connect_timeout, shield=True):
                await ws.aclose()
                while ws.closed is None:
                    try:
                        await ws.get_message()
                    except ConnectionClosed:
                        break
    finally:
        with anyio.move_on_after(connect_timeout, shield=True):
            await stream.aclose()
