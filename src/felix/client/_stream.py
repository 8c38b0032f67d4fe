"""The resuming event stream: :func:`open_workflow_stream` and :class:`WorkflowStream`.

Runs under asyncio and Trio (anyio). Rides a WebSocket
(:mod:`felix.client._websocket`) or, with ``transport="sse"``, Server-Sent
Events over httpx (:mod:`felix.client._sse`); both feed the same resume logic.
"""

from __future__ import annotations

import json
import random
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Final, Literal, NoReturn
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import anyio
import attrs
import h11
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from wsproto.utilities import RemoteProtocolError

from felix.client._errors import (
    ReconnectFailed,
    StreamError,
    StreamNotFound,
    StreamRefused,
    StreamUnauthorized,
    os_reason,
)
from felix.client._resume import (
    DEFAULT_BACKOFF,
    Backoff,
    Event,
    Position,
    StreamItem,
    is_terminal,
)
from felix.client._sse import open_event_stream, sse_url
from felix.client._websocket import (
    CLOSE_ABNORMAL,
    CLOSE_TOO_BIG,
    ClientWebSocket,
    ConnectionClosed,
    HandshakeRejected,
    open_connection,
)

__all__ = [
    "CLOSE_WAIT",
    "StreamStatistics",
    "Transport",
    "WorkflowStream",
    "open_workflow_stream",
]

#: The close code of a finished workflow; the stream ends on it.
CLOSE_NORMAL: Final = 1000
#: Seconds the stream waits for the server's close after a terminal event.
CLOSE_WAIT: Final = 2.0
#: Handshake statuses worth retrying besides 5xx: request timeout, rate limited.
_RETRY_STATUSES: Final = frozenset({408, 429})
_SCHEMES: Final = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}

#: How a stream reaches the server: a WebSocket, or Server-Sent Events over plain HTTP.
Transport = Literal["websocket", "sse"]


class _Dropped(Exception):
    """A connection attempt failed or a connection ended in a way worth retrying."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@attrs.frozen
class StreamStatistics:
    """A snapshot of a stream's connection state, for people and tests."""

    #: Whether a connection is open right now (its ``connected`` frame came).
    connected: bool
    #: Connections opened so far (``connected`` frames received).
    connections: int
    #: Failures in the current run (0 while things go well).
    failures: int
    #: The seq of the last event delivered, if any is known.
    last_seq: int | None
    #: Gaps yielded so far.
    gaps: int
    #: Why the last connection ended or the last attempt failed.
    last_drop: str | None


@attrs.define(eq=False, kw_only=True)
class WorkflowStream:
    """One workflow's events over WebSocket (or SSE), resumed across drops.

    Get one from :func:`open_workflow_stream`, which owns the background task
    that connects, reads and reconnects. ``async for`` yields each event once,
    in ``seq`` order (system broadcasts, which have no ``seq``, as they come),
    a :class:`Gap` where events were lost for good, and ends after the
    workflow's terminal event or a close 1000. It raises a
    :class:`StreamError` when the stream cannot go on.

    The reader waits for the loop: while the caller is busy, no further frames
    are read, the server's buffer for this connection fills and, past its
    limit, the server closes it with 4008; the stream then resumes after the
    last event the caller received, so a slow caller loses nothing retained.
    """

    workflow_id: str
    #: The URL connected to, without its query (which may hold a token).
    url: str
    #: The last ``connected`` frame (status, last_seq, connection_id, recovered).
    connected: Event | None = attrs.field(default=None, init=False)
    _base: str = attrs.field(alias="base", repr=False)
    _headers: list[tuple[bytes, bytes]] = attrs.field(alias="headers", repr=False)
    _token: str | None = attrs.field(alias="token", repr=False)
    _types: str | None = attrs.field(alias="types", repr=False)
    _position: Position = attrs.field(alias="position", repr=False)
    _backoff: Backoff = attrs.field(alias="backoff", repr=False)
    _connect_timeout: float = attrs.field(alias="connect_timeout", repr=False)
    _max_message_size: int = attrs.field(alias="max_message_size", repr=False)
    _ssl_context: ssl.SSLContext | None = attrs.field(alias="ssl_context", repr=False)
    _receive: MemoryObjectReceiveStream[StreamItem] = attrs.field(alias="receive", repr=False)
    _transport: Transport = attrs.field(default="websocket", alias="transport", repr=False)
    _uniform: Callable[[], float] = attrs.field(default=random.random, repr=False)
    _is_connected: bool = attrs.field(default=False, init=False, repr=False)
    _connections: int = attrs.field(default=0, init=False, repr=False)
    _failures: int = attrs.field(default=0, init=False, repr=False)
    _gaps: int = attrs.field(default=0, init=False, repr=False)
    _last_drop: str | None = attrs.field(default=None, init=False, repr=False)
    _finished: bool = attrs.field(default=False, init=False, repr=False)
    _failure: BaseException | None = attrs.field(default=None, init=False, repr=False)
    _changed: anyio.Event = attrs.field(factory=anyio.Event, init=False, repr=False)
    _delivered: bool = attrs.field(default=False, init=False, repr=False)
    _connected_at: float | None = attrs.field(default=None, init=False, repr=False)

    # --- the caller's side ----------------------------------------------------

    @property
    def last_seq(self) -> int | None:
        """The seq of the last event delivered; the ``after=`` of the next reconnect."""
        return self._position.seq

    def statistics(self) -> StreamStatistics:
        """Connection state and counters; cheap, never waits."""
        return StreamStatistics(
            connected=self._is_connected,
            connections=self._connections,
            failures=self._failures,
            last_seq=self._position.seq,
            gaps=self._gaps,
            last_drop=self._last_drop,
        )

    async def wait_connected(self) -> Event:
        """Wait until a connection is open (its ``connected`` frame came) and return
        that frame; at once if one is open.

        Raises the stream's :class:`StreamError` if it failed, and
        :class:`StreamError` if it ended without ever connecting.
        """
        while True:
            if self._failure is not None:
                raise self._failure
            if self._is_connected and self.connected is not None:
                return self.connected
            if self._finished:
                if self.connected is not None:
                    return self.connected
                raise StreamError("the stream ended before it connected")
            await self._changed.wait()

    def __aiter__(self) -> WorkflowStream:
        return self

    async def __anext__(self) -> StreamItem:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            pass
        # Raised outside the except block, so the error keeps its own context.
        if self._failure is not None:
            raise self._failure
        raise StopAsyncIteration

    # --- the background task ------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _pump(self, send: MemoryObjectSendStream[StreamItem]) -> None:
        # Errors end here and reach the caller from ``async for``: raising them
        # into the task group would cancel the caller's block instead.
        with send:
            try:
                await self._follow(send)
            except Exception as error:
                self._failure = error
            finally:
                self._finished = True
                self._is_connected = False
                self._notify()

    async def _follow(self, send: MemoryObjectSendStream[StreamItem]) -> None:
        first_failure_at: float | None = None
        while True:
            try:
                await self._connect_once(send)
                return
            except _Dropped as drop:
                now = anyio.current_time()
                self._last_drop = drop.reason
                self._is_connected = False
                healthy = self._delivered or (
                    self._connected_at is not None
                    and now - self._connected_at >= self._backoff.max_delay
                )
                if healthy:
                    self._failures = 0
                    first_failure_at = None
                self._failures += 1
                if first_failure_at is None:
                    first_failure_at = now
                elapsed = now - first_failure_at
                self._notify()
                if self._backoff.exhausted(self._failures, elapsed):
                    raise ReconnectFailed(self.url, self._failures, elapsed, drop.reason) from None
                delay = self._backoff.delay(self._failures, self._uniform)
                if drop.retry_after is not None:
                    delay = max(delay, min(drop.retry_after, self._backoff.max_delay))
                if self._backoff.max_elapsed is not None:
                    delay = min(delay, self._backoff.max_elapsed - elapsed)
                await anyio.sleep(delay)

    def _query(self) -> dict[str, str]:
        query: dict[str, str] = {}
        if self._position.seq is not None:
            query["after"] = str(self._position.seq)
        if self._types is not None:
            query["types"] = self._types
        if self._token is not None:
            query["token"] = self._token
        return query

    async def _connect_once(self, send: MemoryObjectSendStream[StreamItem]) -> None:
        """One connection: returns when the stream is finished, raises :class:`_Dropped`
        to retry and :class:`StreamError` to stop."""
        self._delivered = False
        self._connected_at = None
        if self._transport == "sse":
            await self._connect_sse(send)
            return
        query = self._query()
        url = f"{self._base}?{urlencode(query)}" if query else self._base
        try:
            async with open_connection(
                url,
                ssl_context=self._ssl_context,
                headers=self._headers,
                max_message_size=self._max_message_size,
                connect_timeout=self._connect_timeout,
            ) as ws:
                await self._read(ws, send)
        except HandshakeRejected as rejected:
            raise _refusal(rejected.status, rejected.headers, rejected.body) from None
        except TimeoutError:
            raise _Dropped(
                f"no handshake within {self._connect_timeout:g} s (connect timeout)"
            ) from None
        except (RemoteProtocolError, OSError) as error:
            raise _Dropped(os_reason(error)) from None

    async def _read(self, ws: ClientWebSocket, send: MemoryObjectSendStream[StreamItem]) -> None:
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed as closed:
                self._on_close(closed.code, closed.reason)
                return
            if await self._on_frame(_decode(message), send):
                await _await_close(ws)
                return

    def _on_close(self, code: int, reason: str) -> None:
        """The server ended the connection: return for 1000, raise otherwise."""
        if code == CLOSE_NORMAL:
            return
        if code == CLOSE_TOO_BIG:
            raise StreamError(
                f"an event was larger than max_message_size="
                f"{self._max_message_size} bytes; raise it to follow this workflow"
            )
        raise _Dropped(f"closed with {code} ({reason})")

    async def _on_frame(self, frame: Event, send: MemoryObjectSendStream[StreamItem]) -> bool:
        """Deliver one frame (either transport); True after the terminal event."""
        if frame.get("type") == "connected":
            gap = self._position.on_connected(frame)
            self.connected = frame
            self._connections += 1
            self._is_connected = True
            self._connected_at = anyio.current_time()
            self._notify()
            if gap is not None:
                self._gaps += 1
                await send.send(gap)
            return False
        if not self._position.is_new(frame):
            return False  # already delivered before a reconnect
        await send.send(frame)
        self._position.delivered(frame)
        self._delivered = True
        return is_terminal(frame)

    async def _connect_sse(self, send: MemoryObjectSendStream[StreamItem]) -> None:
        query = self._query()
        url = sse_url(f"{self._base}?{urlencode(query)}" if query else self._base)
        try:
            async with open_event_stream(
                url,
                headers=self._headers,
                ssl_context=self._ssl_context,
                connect_timeout=self._connect_timeout,
            ) as response:
                if response.status == 204:
                    return  # already at the end of a finished workflow
                if response.status != 200:
                    body = await response.read_body()
                    raise _refusal(response.status, response.headers, body)
                while (event := await response.next_event(self._max_message_size)) is not None:
                    kind, data = event
                    if kind == "close":
                        close = _decode(data)
                        self._on_close(
                            int(close.get("code", CLOSE_ABNORMAL)), str(close.get("reason", ""))
                        )
                        return
                    if await self._on_frame(_decode(data), send):
                        return
        except TimeoutError:
            raise _Dropped(
                f"no answer within {self._connect_timeout:g} s (connect timeout)"
            ) from None
        except (h11.ProtocolError, OSError) as error:
            raise _Dropped(os_reason(error)) from None
        raise _Dropped(f"closed with {CLOSE_ABNORMAL} (the event stream ended without a close)")


async def _await_close(ws: ClientWebSocket) -> None:
    """Let the server close first after a terminal event (it does, with 1000).

    Closing from both ends at once makes for a messier close on the server;
    waiting costs one frame's time, and never more than :data:`CLOSE_WAIT`.
    """
    with anyio.move_on_after(CLOSE_WAIT):
        while True:
            try:
                await ws.get_message()
            except ConnectionClosed:
                return


def _decode(message: str | bytes) -> Event:
    try:
        frame = json.loads(message)
    except ValueError:
        frame = None
    if not isinstance(frame, dict):
        preview = message[:80] if isinstance(message, str) else repr(message[:80])
        raise StreamError(f"the server sent a frame that is not a JSON object: {preview!r}")
    return frame


def _error_body(body: bytes | None) -> tuple[str, str]:
    """The contract's ``(error, message)`` from a JSON error body, best effort."""
    text = (body or b"").decode("utf-8", "replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return str(parsed.get("error", "error")), str(parsed.get("message", text.strip()))
    return "error", text.strip()[:200]


def _refusal(status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Exception:
    """What a refused handshake (or SSE request) means: retry, or stop with why."""
    error, message = _error_body(body)
    message = message or f"HTTP {status}"
    if status >= 500 or status in _RETRY_STATUSES:
        retry_after: float | None = None
        for name, value in headers:
            if name.lower() == b"retry-after":
                try:
                    retry_after = float(value)
                except ValueError:
                    retry_after = None
        return _Dropped(f"refused with HTTP {status}: {message}", retry_after)
    if status == 401:
        return StreamUnauthorized(status, error, message)
    if status == 404:
        return StreamNotFound(status, error, message)
    return StreamRefused(status, error, message)


def _stream_url(url: str, workflow_id: str) -> str:
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(f"url must be http://, https://, ws:// or wss:// with a host, got {url!r}")
    path = f"{parts.path.rstrip('/')}/api/v1/ws/workflows/{quote(workflow_id, safe='')}"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


@asynccontextmanager
async def open_workflow_stream(
    url: str,
    workflow_id: str,
    *,
    api_key: str | None = None,
    token: str | None = None,
    after: int | None = None,
    types: Iterable[str] | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    connect_timeout: float = 10.0,
    max_message_size: int = 16 * 1024 * 1024,
    ssl_context: ssl.SSLContext | None = None,
    transport: Transport = "websocket",
) -> AsyncIterator[WorkflowStream]:
    """Follow one workflow's events; yields a :class:`WorkflowStream` to iterate.

    ``url`` is the server's base URL (``http://host:port``, ``https://…``,
    ``ws://…`` or ``wss://…``, optionally with a path prefix). ``api_key`` goes
    in the ``X-API-Key`` header, ``token`` (a subscribe token) in ``?token=``.
    ``after=N`` starts with the retained events after seq N (``0``: all of
    them); without it the stream starts with live events. ``types`` limits the
    event types the server sends (terminal detection then relies on the close
    1000 that ends every finished workflow's connections).

    ``transport="sse"`` follows the same events over Server-Sent Events
    (``GET /api/v1/sse/workflows/{id}``), for networks that drop WebSockets;
    everything else here holds for both.

    Runs under asyncio and Trio. The block owns a background task that
    connects, reads and, after any drop — a refused or failed connect, close
    4008, 1001, 1011, an abnormal closure — reconnects as ``backoff`` says,
    resuming after the last event delivered.
    Leaving the block cancels that task and closes the connection.

    Raised from ``async for``: :class:`StreamUnauthorized` (401) and
    :class:`StreamNotFound` (404) at once, never retried, with the server's
    message; :class:`StreamRefused` for other 4xx; :class:`ReconnectFailed`
    when the budget runs out; :class:`StreamError` for a frame that is not
    JSON or is over ``max_message_size``. Raises :class:`ValueError` at once
    for a bad ``url`` or ``after``.
    """
    if transport not in ("websocket", "sse"):
        raise ValueError(f"transport must be 'websocket' or 'sse', got {transport!r}")
    base = _stream_url(url, workflow_id)
    if ssl_context is not None and base.startswith("ws:"):
        raise ValueError("ssl_context needs an https:// or wss:// url")
    if after is not None and after < 0:
        raise ValueError(f"after must be a non-negative seq, got {after}")
    type_list: Sequence[str] | None = list(types) if types is not None else None
    send, receive = anyio.create_memory_object_stream[StreamItem](0)
    stream = WorkflowStream(
        workflow_id=workflow_id,
        url=base,
        base=base,
        headers=[(b"X-API-Key", api_key.encode())] if api_key else [],
        token=token,
        types=",".join(type_list) if type_list is not None else None,
        position=Position(after),
        backoff=backoff,
        connect_timeout=connect_timeout,
        max_message_size=max_message_size,
        ssl_context=ssl_context,
        receive=receive,
        transport=transport,
    )
    # The pump keeps its errors for ``async for``, so the task group only ever
    # raises the block's own exception: unwrap it for the caller.
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(stream._pump, send)
            try:
                yield stream
            finally:
                receive.close()
                group.cancel_scope.cancel()
    except BaseExceptionGroup as errors:
        reraise_single(errors)


def reraise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the one meaningful exception of a task group's group, keeping its own
    cause and context, so callers catch :class:`StreamError` or their own
    errors as themselves rather than inside an exception group."""
    cancelled = anyio.get_cancelled_exc_class()
    meaningful = [exc for exc in group.exceptions if not isinstance(exc, cancelled)]
    if len(meaningful) > 1:
        raise group
    single = meaningful[0] if meaningful else group.exceptions[0]
    context = single.__context__
    try:
        raise single
    finally:
        single.__context__ = context
        del single, context
