"""A Trio client for Felix: a resuming event stream and a small REST client.

Follow one workflow, surviving drops, restarts and slow-consumer kicks::

    async with open_workflow_stream("http://127.0.0.1:8000", workflow_id, after=0) as stream:
        async for item in stream:
            if isinstance(item, Gap):
                ...  # events were lost for good: refetch the state over REST
            else:
                print(item["seq"], item["type"])
    # the loop ends after the workflow's terminal event

and talk to the REST API::

    async with FelixClient("http://127.0.0.1:8000", api_key=key) as felix:
        workflow = await felix.create_workflow(task="research")
        await felix.publish(workflow["workflow_id"], {"type": "synthesis", "content": "…"})

Everything this module raises on purpose is a :class:`ClientError`: an
:class:`ApiError` for a REST error answer, :class:`ConnectionFailed` when the
server cannot be reached over HTTP, and a :class:`StreamError` when a stream
cannot go on (:class:`StreamRefused` for a handshake that retrying cannot fix,
:class:`ReconnectFailed` when the reconnection budget runs out).
"""

from __future__ import annotations

import errno as errno_codes
import json
import os
import random
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, NoReturn, TypeAlias
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import attrs
import httpx
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from felix._patches import trio_websocket_leaks, trio_websocket_pong

__all__ = [
    "DEFAULT_BACKOFF",
    "ApiError",
    "Backoff",
    "ClientError",
    "ConnectionFailed",
    "Event",
    "FelixClient",
    "Gap",
    "Published",
    "ReconnectFailed",
    "StreamError",
    "StreamItem",
    "StreamNotFound",
    "StreamRefused",
    "StreamStatistics",
    "StreamUnauthorized",
    "SubscribeToken",
    "WorkflowPage",
    "WorkflowStream",
    "is_terminal",
    "open_workflow_stream",
]

#: Idle pooled connections are dropped after 2 s: before the server's keep-alive
#: timeout (FELIX_KEEP_ALIVE_TIMEOUT, 5 s by default) closes them. With equal
#: timeouts (httpx's default is 5 s too) a request sent on a connection just as
#: the server closes it fails with "Server disconnected" or a reset.
CLIENT_LIMITS: Final = httpx.Limits(keepalive_expiry=2.0)

#: One event as the server sent it: the flat JSON object of the contract.
Event: TypeAlias = dict[str, Any]

#: The close code of a finished workflow; the stream ends on it.
CLOSE_NORMAL: Final = 1000
#: What trio-websocket closes with when a frame exceeds ``max_message_size``.
CLOSE_TOO_BIG: Final = 1009
#: What a WebSocket library reports when the TCP connection ended without a close frame.
CLOSE_ABNORMAL: Final = 1006
#: Seconds the stream waits for the server's close after a terminal event.
CLOSE_WAIT: Final = 2.0
#: Handshake statuses worth retrying besides 5xx: request timeout, rate limited.
_RETRY_STATUSES: Final = frozenset({408, 429})
_TERMINAL_STATUSES: Final = frozenset({"completed", "failed", "cancelled"})
_SCHEMES: Final = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_HTTP_SCHEMES: Final = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


# --- errors -------------------------------------------------------------------


class ClientError(Exception):
    """Base of every error :mod:`felix.client` raises on purpose.

    ``str(error)`` is one line meant for people; it never holds a key or a token.
    """


class ConnectionFailed(ClientError):
    """The server could not be reached over HTTP: refused, unknown host, timeout,
    or a connection broken mid-request. ``reason`` is the short cause."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot connect to {url}: {reason}")
        self.url = url
        self.reason = reason


class ApiError(ClientError):
    """The REST API answered with an error status.

    ``status`` is the HTTP status, ``error`` the contract's error code (for
    example ``workflow_not_found``), ``message`` the server's human text and
    ``body`` the whole JSON body (a 422 for a batch carries ``index``).
    """

    def __init__(self, status: int, error: str, message: str, body: Mapping[str, Any]) -> None:
        super().__init__(f"{message} (HTTP {status} {error})")
        self.status = status
        self.error = error
        self.message = message
        self.body = dict(body)


class StreamError(ClientError):
    """A workflow stream cannot go on. Raised from ``async for`` over the stream."""


class StreamRefused(StreamError):
    """The server refused the WebSocket handshake for a reason retrying cannot fix
    (400, 403, any 4xx but 408 and 429). Carries the server's answer like
    :class:`ApiError`: ``status``, ``error``, ``message``."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status} {error})")
        self.status = status
        self.error = error
        self.message = message


class StreamUnauthorized(StreamRefused):
    """401 at the handshake: the API key or token is missing, wrong or expired."""


class StreamNotFound(StreamRefused):
    """404 at the handshake: no such workflow, or it has passed its retention period."""


class ReconnectFailed(StreamError):
    """The reconnection budget ran out (:attr:`Backoff.max_attempts` failures in a
    row, or :attr:`Backoff.max_elapsed` seconds since the first of them).

    ``attempts`` and ``elapsed`` say how far it went; ``last_error`` is the
    cause of the last failure (``"connection refused"``, ``"closed with 1011
    (internal error)"``…).
    """

    def __init__(self, url: str, attempts: int, elapsed: float, last_error: str) -> None:
        super().__init__(
            f"gave up reconnecting to {url} after {attempts} failed attempt"
            f"{'s' if attempts != 1 else ''} in {elapsed:.1f} s; last error: {last_error}"
        )
        self.url = url
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_error = last_error


# --- backoff (pure) -----------------------------------------------------------


@attrs.frozen(kw_only=True)
class Backoff:
    """When a stream reconnects, and when it gives up.

    After the ``n``-th failure in a row the stream sleeps a uniformly random
    time in ``[0, min(max_delay, base * 2 ** (n - 1))]`` ("full jitter"), so
    many clients dropped at once do not come back in step. A connection that
    delivers an event, or stays up for ``max_delay`` seconds, ends the run of
    failures. The stream gives up with :class:`ReconnectFailed` after
    ``max_attempts`` failures in a row, or once ``max_elapsed`` seconds have
    passed since the first of them; ``None`` switches either limit off.
    """

    base: float = 0.25
    max_delay: float = 10.0
    max_attempts: int | None = None
    max_elapsed: float | None = 60.0

    def __attrs_post_init__(self) -> None:
        if not (self.base > 0 and self.max_delay >= self.base):
            raise ValueError("Backoff needs 0 < base <= max_delay")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("Backoff.max_attempts must be at least 1 (or None)")
        if self.max_elapsed is not None and self.max_elapsed <= 0:
            raise ValueError("Backoff.max_elapsed must be positive (or None)")

    def ceiling(self, failures: int) -> float:
        """The longest sleep after ``failures`` failures in a row (``failures >= 1``)."""
        exponent = min(max(failures - 1, 0), 64)
        return min(self.max_delay, self.base * 2.0**exponent)

    def delay(self, failures: int, uniform: Callable[[], float] = random.random) -> float:
        """A full-jitter sleep after ``failures`` failures; ``uniform`` returns [0, 1)."""
        return self.ceiling(failures) * uniform()

    def exhausted(self, failures: int, elapsed: float) -> bool:
        """Whether ``failures`` in a row over ``elapsed`` seconds use up the budget."""
        if self.max_attempts is not None and failures >= self.max_attempts:
            return True
        return self.max_elapsed is not None and elapsed >= self.max_elapsed


#: What :func:`open_workflow_stream` uses unless told otherwise: first retry
#: within 0.25 s, at most 10 s between tries, give up after a minute of failures.
DEFAULT_BACKOFF: Final = Backoff()


# --- stream items and the resume position (pure) ----------------------------------


@attrs.frozen
class Gap:
    """Events the stream could not deliver: the server no longer retained them.

    Yielded in the place of the missing events when the stream resumed (its
    ``connected`` frame said ``"recovered": false``). Every event after
    ``after`` up to the seq of the next event yielded may be missing; the
    usual answer is to refetch the workflow's state over REST
    (:meth:`FelixClient.get_workflow`).

    ``reset`` is true when the workflow's ``seq`` went backwards: the server
    lost the workflow (a restart of an in-memory server) and a new one took the
    same id. The stream then follows the new workflow from its oldest retained
    event.
    """

    #: The seq of the last event the stream had delivered.
    after: int
    #: The workflow's last seq when the stream resumed.
    server_last_seq: int
    #: The connection that found the gap.
    connection_id: str
    reset: bool = False
    #: Lets code that dispatches on ``["type"]``-like names tell it apart.
    type: str = attrs.field(default="gap", init=False)


#: What ``async for`` over a :class:`WorkflowStream` yields.
StreamItem: TypeAlias = Event | Gap


def _seq(event: Mapping[str, Any]) -> int | None:
    seq = event.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def is_terminal(event: Mapping[str, Any]) -> bool:
    """Whether ``event`` ends its workflow: ``workflow_status`` completed, failed or
    cancelled, ``completed``, or an ``error`` with ``fatal: true``."""
    kind = event.get("type")
    if kind == "workflow_status":
        return event.get("status") in _TERMINAL_STATUSES
    if kind == "error":
        return event.get("fatal") is True
    return kind == "completed"


@attrs.define
class _Position:
    """Where a stream stands: the seq of the last event it delivered.

    Sans-IO: decides what to ask for on (re)connect, which frames are
    duplicates, and when a ``connected`` frame means a gap.
    """

    #: None until the first ``connected`` of a stream opened without ``after``.
    seq: int | None

    def on_connected(self, frame: Mapping[str, Any]) -> Gap | None:
        """Take a ``connected`` frame in; return the gap it announces, if any."""
        server_last = _seq({"seq": frame.get("last_seq")})
        if self.seq is None:
            # Live only: everything up to the workflow's current seq is history.
            self.seq = server_last or 0
            return None
        if frame.get("recovered") is not False:
            return None
        reset = server_last is not None and server_last < self.seq
        gap = Gap(
            after=self.seq,
            server_last_seq=server_last if server_last is not None else 0,
            connection_id=str(frame.get("connection_id", "")),
            reset=reset,
        )
        if reset:
            self.seq = 0
        return gap

    def is_new(self, event: Mapping[str, Any]) -> bool:
        """False for an event already delivered (``seq`` at or below the position).

        Events without a ``seq`` (system broadcasts) are always new.
        """
        seq = _seq(event)
        return seq is None or self.seq is None or seq > self.seq

    def delivered(self, event: Mapping[str, Any]) -> None:
        """Move the position past an event the caller has received."""
        seq = _seq(event)
        if seq is not None and (self.seq is None or seq > self.seq):
            self.seq = seq


# --- the stream -----------------------------------------------------------------


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
    """One workflow's events over WebSocket, resumed across drops.

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
    _position: _Position = attrs.field(alias="position", repr=False)
    _backoff: Backoff = attrs.field(alias="backoff", repr=False)
    _connect_timeout: float = attrs.field(alias="connect_timeout", repr=False)
    _max_message_size: int = attrs.field(alias="max_message_size", repr=False)
    _ssl_context: ssl.SSLContext | None = attrs.field(alias="ssl_context", repr=False)
    _receive: trio.MemoryReceiveChannel[StreamItem] = attrs.field(alias="receive", repr=False)
    _uniform: Callable[[], float] = attrs.field(default=random.random, repr=False)
    _is_connected: bool = attrs.field(default=False, init=False, repr=False)
    _connections: int = attrs.field(default=0, init=False, repr=False)
    _failures: int = attrs.field(default=0, init=False, repr=False)
    _gaps: int = attrs.field(default=0, init=False, repr=False)
    _last_drop: str | None = attrs.field(default=None, init=False, repr=False)
    _finished: bool = attrs.field(default=False, init=False, repr=False)
    _failure: BaseException | None = attrs.field(default=None, init=False, repr=False)
    _changed: trio.Event = attrs.field(factory=trio.Event, init=False, repr=False)
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
        except (trio.EndOfChannel, trio.ClosedResourceError):
            pass
        # Raised outside the except block, so the error keeps its own context.
        if self._failure is not None:
            raise self._failure
        raise StopAsyncIteration

    # --- the background task ------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _pump(self, send: trio.MemorySendChannel[StreamItem]) -> None:
        # Errors end here and reach the caller from ``async for``: raising them
        # into the nursery would cancel the caller's block instead.
        with send:
            try:
                await self._follow(send)
            except Exception as error:
                self._failure = error
            finally:
                self._finished = True
                self._is_connected = False
                self._notify()

    async def _follow(self, send: trio.MemorySendChannel[StreamItem]) -> None:
        first_failure_at: float | None = None
        while True:
            try:
                await self._connect_once(send)
                return
            except _Dropped as drop:
                now = trio.current_time()
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
                await trio.sleep(delay)

    def _query(self) -> dict[str, str]:
        query: dict[str, str] = {}
        if self._position.seq is not None:
            query["after"] = str(self._position.seq)
        if self._types is not None:
            query["types"] = self._types
        if self._token is not None:
            query["token"] = self._token
        return query

    async def _connect_once(self, send: trio.MemorySendChannel[StreamItem]) -> None:
        """One connection: returns when the stream is finished, raises :class:`_Dropped`
        to retry and :class:`StreamError` to stop."""
        self._delivered = False
        self._connected_at = None
        query = self._query()
        url = f"{self._base}?{urlencode(query)}" if query else self._base
        finished = False
        try:
            async with open_websocket_url(
                url,
                self._ssl_context,
                extra_headers=self._headers,
                max_message_size=self._max_message_size,
                connect_timeout=self._connect_timeout,
                disconnect_timeout=self._connect_timeout,
            ) as ws:
                await self._read(ws, send)
                finished = True
        except ConnectionRejected as rejected:
            raise _refusal(rejected) from None
        except ConnectionTimeout:
            raise _Dropped(
                f"no handshake within {self._connect_timeout:g} s (connect timeout)"
            ) from None
        except HandshakeError as error:
            if finished:
                return  # the close after the terminal event timed out: still done
            raise _Dropped(_os_reason(error)) from None
        except OSError as error:
            raise _Dropped(_os_reason(error)) from None

    async def _read(
        self, ws: WebSocketConnection, send: trio.MemorySendChannel[StreamItem]
    ) -> None:
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed as closed:
                close = closed.reason
                code = close.code if close is not None else CLOSE_ABNORMAL
                reason = (
                    (close.reason or close.name.lower().replace("_", " "))
                    if close is not None
                    else "abnormal closure"
                )
                if code == CLOSE_NORMAL:
                    return
                if code == CLOSE_TOO_BIG:
                    raise StreamError(
                        f"an event was larger than max_message_size="
                        f"{self._max_message_size} bytes; raise it to follow this workflow"
                    ) from None
                raise _Dropped(f"closed with {code} ({reason})") from None
            frame = _decode(message)
            if frame.get("type") == "connected":
                gap = self._position.on_connected(frame)
                self.connected = frame
                self._connections += 1
                self._is_connected = True
                self._connected_at = trio.current_time()
                self._notify()
                if gap is not None:
                    self._gaps += 1
                    await send.send(gap)
                continue
            if not self._position.is_new(frame):
                continue  # already delivered before a reconnect
            await send.send(frame)
            self._position.delivered(frame)
            self._delivered = True
            if is_terminal(frame):
                await _await_close(ws)
                return


async def _await_close(ws: WebSocketConnection) -> None:
    """Let the server close first after a terminal event (it does, with 1000).

    Closing from both ends at once makes for a messier close on the server;
    waiting costs one frame's time, and never more than :data:`CLOSE_WAIT`.
    """
    with trio.move_on_after(CLOSE_WAIT):
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


def _refusal(rejected: ConnectionRejected) -> Exception:
    status = rejected.status_code
    error, message = _error_body(rejected.body)
    message = message or f"HTTP {status}"
    if status >= 500 or status in _RETRY_STATUSES:
        retry_after: float | None = None
        for name, value in rejected.headers:
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


def _os_reason(error: BaseException) -> str:
    """A short cause for a network failure: ``connection refused``, ``name or
    service not known``…, found wherever it sits in the exception's chain."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    first: BaseException | None = None
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            if current.errno == errno_codes.ECONNREFUSED:
                return "connection refused"
            return (current.strerror or os.strerror(current.errno)).lower()
        if isinstance(current, OSError) and first is None and str(current):
            first = current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    if first is not None:
        return str(first)
    return str(error) or type(error).__name__


def _reraise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the one meaningful exception of a nursery's group, keeping its own
    cause and context, so callers catch :class:`StreamError` or their own
    errors as themselves rather than inside an exception group."""
    meaningful = [exc for exc in group.exceptions if not isinstance(exc, trio.Cancelled)]
    if len(meaningful) > 1:
        raise group
    single = meaningful[0] if meaningful else group.exceptions[0]
    context = single.__context__
    try:
        raise single
    finally:
        single.__context__ = context
        del single, context


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
) -> AsyncIterator[WorkflowStream]:
    """Follow one workflow's events; yields a :class:`WorkflowStream` to iterate.

    ``url`` is the server's base URL (``http://host:port``, ``https://…``,
    ``ws://…`` or ``wss://…``, optionally with a path prefix). ``api_key`` goes
    in the ``X-API-Key`` header, ``token`` (a subscribe token) in ``?token=``.
    ``after=N`` starts with the retained events after seq N (``0``: all of
    them); without it the stream starts with live events. ``types`` limits the
    event types the server sends (terminal detection then relies on the close
    1000 that ends every finished workflow's connections).

    The block owns a background task that connects, reads and, after any drop
    — a refused or failed connect, close 4008, 1001, 1011, an abnormal closure
    — reconnects as ``backoff`` says, resuming after the last event delivered.
    Leaving the block cancels that task and closes the connection.

    Raised from ``async for``: :class:`StreamUnauthorized` (401) and
    :class:`StreamNotFound` (404) at once, never retried, with the server's
    message; :class:`StreamRefused` for other 4xx; :class:`ReconnectFailed`
    when the budget runs out; :class:`StreamError` for a frame that is not
    JSON or is over ``max_message_size``. Raises :class:`ValueError` at once
    for a bad ``url`` or ``after``.
    """
    base = _stream_url(url, workflow_id)
    if ssl_context is not None and base.startswith("ws:"):
        raise ValueError("ssl_context needs an https:// or wss:// url")
    if after is not None and after < 0:
        raise ValueError(f"after must be a non-negative seq, got {after}")
    type_list: Sequence[str] | None = list(types) if types is not None else None
    trio_websocket_leaks.install()
    trio_websocket_pong.install()
    send, receive = trio.open_memory_channel[StreamItem](0)
    stream = WorkflowStream(
        workflow_id=workflow_id,
        url=base,
        base=base,
        headers=[(b"X-API-Key", api_key.encode())] if api_key else [],
        token=token,
        types=",".join(type_list) if type_list is not None else None,
        position=_Position(after),
        backoff=backoff,
        connect_timeout=connect_timeout,
        max_message_size=max_message_size,
        ssl_context=ssl_context,
        receive=receive,
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream._pump, send)
            try:
                yield stream
            finally:
                receive.close()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        _reraise_single(group)


# --- REST ---------------------------------------------------------------------------


@attrs.frozen
class Published:
    """What a publish answered: how many events were applied and their seq range."""

    accepted: int
    first_seq: int | None
    last_seq: int | None


@attrs.frozen
class WorkflowPage:
    """One page of ``GET /api/v1/workflows``: the workflows and how many matched."""

    workflows: list[dict[str, Any]]
    total: int


@attrs.frozen
class SubscribeToken:
    """A subscribe token for one workflow's WebSocket (``?token=``) and its expiry."""

    token: str
    expires_at: str


def _http_base(url: str) -> str:
    parts = urlsplit(url)
    scheme = _HTTP_SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(f"url must be http://, https://, ws:// or wss:// with a host, got {url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _path(workflow_id: str, *rest: str) -> str:
    return "/".join(("/api/v1/workflows", quote(workflow_id, safe=""), *rest))


class FelixClient:
    """A REST client of one Felix server, on :class:`httpx.AsyncClient`.

    Use it as an async context manager: it owns the HTTP connection pool and
    leaving the block closes it (:meth:`aclose`, idempotent). ``api_key`` goes
    in the ``X-API-Key`` header of every request.

    Every method raises :class:`ApiError` for an error answer (with the
    contract's ``status``, ``error`` and ``message``) and
    :class:`ConnectionFailed` when the server cannot be reached. Nothing is
    retried: a publish that failed in transit may or may not have been applied.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = _http_base(base_url)
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            limits=CLIENT_LIMITS,
        )

    async def __aenter__(self) -> FelixClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent."""
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> Any:
        try:
            response = await self._http.request(
                method,
                path,
                json=json_body,
                params={key: str(value) for key, value in (params or {}).items()},
            )
        except httpx.TimeoutException:
            raise ConnectionFailed(self.base_url, "timed out") from None
        except httpx.TransportError as error:
            raise ConnectionFailed(self.base_url, _os_reason(error)) from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                text = response.text.strip()[:200] or response.reason_phrase
                body = {"error": "http_error", "message": text}
            raise ApiError(
                response.status_code,
                str(body.get("error", "error")),
                str(body.get("message", "")),
                body,
            )
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                response.status_code,
                "invalid_response",
                "the server's answer is not JSON",
                {"text": response.text[:200]},
            ) from None

    async def create_workflow(
        self,
        workflow_id: str | None = None,
        task: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a pending workflow; returns it. 409 if the id is taken, 422 if invalid."""
        body: dict[str, Any] = {}
        if workflow_id is not None:
            body["workflow_id"] = workflow_id
        if task is not None:
            body["task"] = task
        if metadata is not None:
            body["metadata"] = dict(metadata)
        workflow: dict[str, Any] = await self._request("POST", "/api/v1/workflows", json_body=body)
        return workflow

    async def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        """One workflow with the state its events built (agents, synthesis, result…). 404."""
        workflow: dict[str, Any] = await self._request("GET", _path(workflow_id))
        return workflow

    async def list_workflows(
        self, status: str | None = None, limit: int = 100, offset: int = 0
    ) -> WorkflowPage:
        """One page of workflows in creation order, optionally of one ``status``. 422."""
        params: dict[str, str | int] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        page = await self._request("GET", "/api/v1/workflows", params=params)
        return WorkflowPage(workflows=list(page["workflows"]), total=int(page["total"]))

    async def publish(
        self, workflow_id: str, event_or_events: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> Published:
        """Publish one event, or a batch (a sequence) all or nothing.

        404 unknown workflow, 409 terminal, 413 too large, 422 invalid (the
        body's ``index`` names the first bad event of a batch).
        """
        body: Any = (
            dict(event_or_events)
            if isinstance(event_or_events, Mapping)
            else [dict(event) for event in event_or_events]
        )
        answer = await self._request("POST", _path(workflow_id, "events"), json_body=body)
        return Published(
            accepted=int(answer["accepted"]),
            first_seq=answer.get("first_seq"),
            last_seq=answer.get("last_seq"),
        )

    async def cancel(self, workflow_id: str) -> dict[str, Any]:
        """Cancel a workflow (publishes ``workflow_status`` cancelled). 404, 409 if ended."""
        answer: dict[str, Any] = await self._request("DELETE", _path(workflow_id))
        return answer

    async def mint_token(
        self, workflow_id: str, ttl_seconds: float | None = None
    ) -> SubscribeToken:
        """A subscribe token that opens this workflow's WebSocket (``token=``) only."""
        body: dict[str, Any] = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        answer = await self._request("POST", _path(workflow_id, "tokens"), json_body=body)
        return SubscribeToken(token=str(answer["token"]), expires_at=str(answer["expires_at"]))

    async def events(
        self, workflow_id: str, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        """Retained events with ``seq > after``, oldest first, at most ``limit``. 404."""
        params: dict[str, str | int] = {"after": after}
        if limit is not None:
            params["limit"] = limit
        answer = await self._request("GET", _path(workflow_id, "events"), params=params)
        return list(answer["events"])
