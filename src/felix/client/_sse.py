"""Server-Sent Events on anyio and h11: one GET, its status, then its events.

The contract's SSE routes carry the same frames as the WebSocket: ``event:``
names the type, ``data:`` is the one-line JSON object, and the stream ends
with ``event: close`` holding the WebSocket close code. Like
:mod:`felix.client._websocket` this reads in the caller's task and starts
none. It does not use httpx: httpx streams a body through nested async
generators that cannot all be closed when a reader leaves early, which Trio
reports as abandoned generators; h11 (shipped with the server's stack) turns
bytes into a response and body chunks with nothing to abandon.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import h11

from felix.client._errors import StreamError, broken_as_os_error
from felix.client._websocket import connect, target

__all__ = ["EventStream", "open_event_stream", "sse_url"]

_HTTP_SCHEMES: Final = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
_READ_SIZE: Final = 65536
#: The most bytes of a refusal's body kept (the contract's JSON error is far smaller).
_MAX_ERROR_BODY: Final = 64 * 1024


def sse_url(websocket_url: str) -> str:
    """The SSE route mirroring a workflow's WebSocket route."""
    parts = urlsplit(websocket_url)
    path = parts.path.replace("/api/v1/ws/", "/api/v1/sse/", 1)
    return urlunsplit((_HTTP_SCHEMES[parts.scheme], parts.netloc, path, parts.query, ""))


class EventStream:
    """A response to an SSE request: its ``status`` and ``headers``, then its body
    read as events (:meth:`next_event`) or, for a refusal, whole (:meth:`read_body`)."""

    def __init__(
        self, stream: anyio.abc.ByteStream, protocol: h11.Connection, response: h11.Response
    ) -> None:
        self._stream = stream
        self._protocol = protocol
        self.status = response.status_code
        self.headers: list[tuple[bytes, bytes]] = list(response.headers)
        self._buffer = b""
        self._ended = False

    async def _chunk(self) -> bytes | None:
        """The next piece of the body; None at its end (or the connection's)."""
        while not self._ended:
            event = self._protocol.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self._stream.receive(_READ_SIZE)
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    data = b""
                self._protocol.receive_data(data)
            elif isinstance(event, h11.Data):
                return bytes(event.data)
            else:  # EndOfMessage, ConnectionClosed
                self._ended = True
        return None

    async def read_body(self) -> bytes:
        """At most 64 KiB of the body (an error answer)."""
        body = b""
        while len(body) < _MAX_ERROR_BODY and (chunk := await self._chunk()) is not None:
            body += chunk
        return body[:_MAX_ERROR_BODY]

    async def _line(self, limit: int) -> str | None:
        while b"\n" not in self._buffer:
            if len(self._buffer) > limit:
                raise StreamError(
                    f"an event was larger than max_message_size={limit} "
                    "bytes; raise it to follow this workflow"
                )
            chunk = await self._chunk()
            if chunk is None:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.removesuffix(b"\r").decode("utf-8", "replace")

    async def next_event(self, max_message_size: int) -> tuple[str, str] | None:
        """The next ``(event name, data)``; None when the body ends.

        Comments (``: ping``), ``id:`` and ``retry:`` lines are skipped: the
        stream resumes from the seq in the data, which is what ``id`` holds.
        Raises :class:`StreamError` for an event over ``max_message_size``.
        """
        kind = "message"
        data: list[str] = []
        while (line := await self._line(max_message_size)) is not None:
            if not line:
                if data:
                    return kind, "\n".join(data)
                kind = "message"
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
        return None


async def _request(
    stream: anyio.abc.ByteStream, url: str, headers: list[tuple[bytes, bytes]]
) -> EventStream:
    _, _, _, host_header, resource = target(url)
    protocol = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=resource,
        headers=[(b"Host", host_header.encode()), (b"Accept", b"text/event-stream"), *headers],
    )
    await stream.send(protocol.send(request) + (protocol.send(h11.EndOfMessage()) or b""))
    while True:
        event = protocol.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive(_READ_SIZE)
            except anyio.EndOfStream:
                data = b""
            protocol.receive_data(data)
        elif isinstance(event, h11.Response):
            return EventStream(stream, protocol, event)
        elif isinstance(event, h11.ConnectionClosed):
            raise OSError("the server closed the connection before answering")


@asynccontextmanager
async def open_event_stream(
    url: str,
    *,
    headers: list[tuple[bytes, bytes]],
    ssl_context: ssl.SSLContext | None,
    connect_timeout: float,
) -> AsyncIterator[EventStream]:
    """Send ``GET url`` (``http://`` or ``https://``, with its query) and yield the
    response once its head has come.

    Owns the connection: leaving the block closes it. Raises
    :class:`TimeoutError` when the connect and the response's head take over
    ``connect_timeout`` seconds, :class:`OSError` for a failed connect and
    :class:`h11.RemoteProtocolError` for an answer that is not HTTP/1.1.
    """
    with anyio.fail_after(connect_timeout):
        stream = await connect(url, ssl_context)
    try:
        with anyio.fail_after(connect_timeout), broken_as_os_error():
            response = await _request(stream, url, headers)
        yield response
    finally:
        with anyio.move_on_after(connect_timeout, shield=True):
            await stream.aclose()
