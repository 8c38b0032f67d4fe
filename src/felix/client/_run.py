"""``run()`` for producers: a workflow's lifecycle around a block, published once each.

:func:`open_run` creates the workflow, marks it running, hands the block a
:class:`Run` to publish agents, outputs, syntheses and errors, and ends the
workflow as the block ends: ``completed`` (with :attr:`Run.result`), or a
fatal ``error`` carrying the exception's message and traceback.

Every publish carries an idempotency key (the run's random id and the
event's number) and is retried after a dropped connection, a 503 or a full
inbox, with the same key: a server with idempotent publishes applies it
once; an older server, which ignores keys, may apply a retried publish
twice but never loses one. Publishes go over the producer stream
(``WS /api/v1/ws/publish``) when the server has it, one connection for the
whole run; a server that refuses that handshake (an older one answers 404)
gets REST posts with an ``Idempotency-Key`` header instead.
"""

from __future__ import annotations

import json
import random
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
import attrs

from felix._errors import FelixError
from felix.client._answers import Published
from felix.client._errors import ApiError, ClientError, ConnectionFailed, os_reason
from felix.client._resume import Backoff
from felix.client._websocket import (
    ClientWebSocket,
    ConnectionClosed,
    HandshakeRejected,
    open_connection,
)

if TYPE_CHECKING:
    from felix.client._rest import FelixClient

__all__ = ["PUBLISH_BACKOFF", "PublishMode", "Run", "open_run"]

#: How :class:`Run` retries one publish: quickly at first, for at most a minute.
PUBLISH_BACKOFF: Final = Backoff(base=0.1, max_delay=5.0, max_elapsed=60.0)
#: REST statuses and nack codes worth retrying with the same idempotency key.
_RETRY_STATUSES: Final = frozenset({408, 429, 502, 503, 504})
_RETRY_CODES: Final = frozenset({"inbox_full", "idempotency_in_progress", "rate_limited"})
#: How a run publishes: the producer stream when the server has it, or REST only.
PublishMode = Literal["auto", "rest"]


def _status_of(code: str) -> int:
    """The HTTP status the server gives an error code (for a nack, which has none)."""
    pending: list[type[FelixError]] = [FelixError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            return cls.http_status
        pending.extend(cls.__subclasses__())
    return 400


class _Retry(Exception):
    """A publish that may be repeated with the same key."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@attrs.define(eq=False)
class _Publisher:
    """Sends one run's publishes, in order, over the producer stream or REST."""

    client: FelixClient
    workflow_id: str
    mode: PublishMode
    backoff: Backoff = PUBLISH_BACKOFF
    _ws: ClientWebSocket | None = attrs.field(default=None, init=False)
    _exits: AsyncExitStack = attrs.field(factory=AsyncExitStack, init=False)
    _lock: anyio.Lock = attrs.field(factory=anyio.Lock, init=False)
    _refs: int = attrs.field(default=0, init=False)

    async def publish(self, events: list[dict[str, Any]], key: str) -> Published:
        """Apply ``events`` once (as far as the server's idempotency allows), retrying
        drops with the same ``key``. Raises :class:`ApiError` for a refusal and
        :class:`ConnectionFailed` when the retry budget runs out."""
        async with self._lock:
            failures, first = 0, anyio.current_time()
            while True:
                try:
                    if self.mode == "rest":
                        return await self._rest(events, key)
                    return await self._stream(events, key)
                except _Retry as retry:
                    failures += 1
                    elapsed = anyio.current_time() - first
                    if self.backoff.exhausted(failures, elapsed):
                        raise ConnectionFailed(self.client.base_url, str(retry)) from None
                    delay = self.backoff.delay(failures, random.random)
                    await anyio.sleep(max(delay, min(retry.retry_after or 0, 5.0)))

    async def _rest(self, events: list[dict[str, Any]], key: str) -> Published:
        try:
            return await self.client.publish(self.workflow_id, events, idempotency_key=key)
        except ConnectionFailed as error:
            raise _Retry(error.reason) from None
        except ApiError as error:
            if error.status in _RETRY_STATUSES or error.error in _RETRY_CODES:
                raise _Retry(str(error), _retry_after(error.body)) from None
            raise

    async def _connect(self) -> ClientWebSocket:
        if self._ws is not None:
            return self._ws
        url = _publish_url(self.client.base_url)
        headers = [(b"X-API-Key", self.client.api_key.encode())] if self.client.api_key else []
        try:
            self._ws = await self._exits.enter_async_context(
                open_connection(
                    url,
                    ssl_context=None,
                    headers=headers,
                    max_message_size=1024 * 1024,
                    connect_timeout=self.client.timeout,
                )
            )
        except HandshakeRejected:
            # No producer stream here (an older server answers 404): REST from now on.
            self.mode = "rest"
            raise _Retry("the server has no producer stream") from None
        except (TimeoutError, OSError) as error:
            raise _Retry(os_reason(error)) from None
        return self._ws

    async def _stream(self, events: list[dict[str, Any]], key: str) -> Published:
        ws = await self._connect()
        self._refs += 1
        ref = self._refs
        frame = {"ref": ref, "workflow_id": self.workflow_id, "events": events}
        try:
            await ws.send_message(json.dumps({**frame, "idempotency_key": key}))
            while True:
                answer = json.loads(await ws.get_message())
                if isinstance(answer, dict) and answer.get("ref") == ref:
                    break
        except (ConnectionClosed, ValueError) as error:
            await self.aclose()  # reconnect on the next try, which sends the same key
            raise _Retry(str(error)) from None
        if answer.get("type") == "ack":
            return Published(
                accepted=int(answer["accepted"]),
                first_seq=answer.get("first_seq"),
                last_seq=answer.get("last_seq"),
            )
        code = str(answer.get("error", "error"))
        if code in _RETRY_CODES:
            raise _Retry(str(answer.get("message", code)), _retry_after(answer))
        raise ApiError(_status_of(code), code, str(answer.get("message", "")), answer)

    async def aclose(self) -> None:
        """Close the producer stream's connection, if open. Idempotent."""
        self._ws = None
        exits, self._exits = self._exits, AsyncExitStack()
        await exits.aclose()


def _retry_after(body: Mapping[str, Any]) -> float | None:
    value = body.get("retry_after")
    return float(value) if isinstance(value, int | float) else None


def _publish_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, f"{parts.path}/api/v1/ws/publish", "", ""))


@attrs.define(eq=False)
class Run:
    """One workflow as its producer sees it, inside :meth:`FelixClient.run`.

    Each method publishes one event and returns what the server answered
    (:class:`Published`); each raises :class:`ApiError` when the server
    refuses it (409 once the workflow has ended) and :class:`ConnectionFailed`
    when the server stays unreachable for the retry budget (a minute).
    """

    #: The workflow this run publishes to.
    workflow_id: str
    _publisher: _Publisher = attrs.field(alias="publisher", repr=False)
    #: What ``completed`` carries when the block ends without an exception.
    result: Any = None
    _began: float = attrs.field(factory=time.monotonic, repr=False)
    _key: str = attrs.field(factory=lambda: uuid.uuid4().hex, repr=False)
    _count: int = attrs.field(default=0, repr=False)

    async def publish(self, event: Mapping[str, Any]) -> Published:
        """Publish any event of the contract (``{"type": …, …}``) with the run's next key."""
        self._count += 1
        return await self._publisher.publish([dict(event)], f"run-{self._key}:{self._count}")

    async def agent_spawned(
        self, agent_id: str, agent_type: str, spawn_time: float | None = None, **fields: Any
    ) -> Published:
        """An agent started; ``spawn_time`` defaults to the seconds since the run began."""
        if spawn_time is None:
            spawn_time = round(time.monotonic() - self._began, 6)
        event = {"agent_id": agent_id, "agent_type": agent_type, "spawn_time": spawn_time}
        return await self.publish({"type": "agent_spawned", **event, **fields})

    async def agent_output(
        self, agent_id: str, content: str, confidence: float, **fields: Any
    ) -> Published:
        """An agent's output, with its ``confidence`` (0..1)."""
        event = {"agent_id": agent_id, "content": content, "confidence": confidence}
        return await self.publish({"type": "agent_output", **event, **fields})

    async def synthesis(self, content: str, **fields: Any) -> Published:
        """A synthesis; ``fields`` may hold ``confidence``, ``agents_synthesized``, ``final``."""
        return await self.publish({"type": "synthesis", "content": content, **fields})

    async def error(self, message: str, fatal: bool = False, **fields: Any) -> Published:
        """An error; ``fatal=True`` ends the workflow as failed."""
        return await self.publish({"type": "error", "message": message, "fatal": fatal, **fields})


#: Seconds the run may take to publish its last event after a cancellation.
_FINAL_PUBLISH_TIMEOUT: Final = 10.0


@asynccontextmanager
async def open_run(
    client: FelixClient,
    *,
    task: str | None,
    workflow_id: str | None,
    metadata: Mapping[str, Any] | None,
    mode: PublishMode = "auto",
) -> AsyncIterator[Run]:
    """The body of :meth:`FelixClient.run`; see there."""
    workflow = await client.create_workflow(workflow_id, task, metadata)
    publisher = _Publisher(client, workflow["workflow_id"], mode)
    try:
        run = Run(workflow["workflow_id"], publisher=publisher)
        await run.publish({"type": "workflow_status", "status": "running"})
        try:
            yield run
        except Exception as error:
            with anyio.move_on_after(_FINAL_PUBLISH_TIMEOUT, shield=True), suppress(ClientError):
                await run.error(
                    str(error) or type(error).__name__,
                    fatal=True,
                    exception=type(error).__name__,
                    traceback="".join(traceback.format_exception(error)),
                )
            raise
        except BaseException:
            # Cancelled or interrupted: the workflow did not fail, it was stopped.
            with anyio.move_on_after(_FINAL_PUBLISH_TIMEOUT, shield=True), suppress(ClientError):
                await run.publish({"type": "workflow_status", "status": "cancelled"})
            raise
        await run.publish({"type": "completed", "result": run.result})
    finally:
        with anyio.move_on_after(_FINAL_PUBLISH_TIMEOUT, shield=True):
            await publisher.aclose()
