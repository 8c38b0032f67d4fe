"""The blocking client: :class:`SyncFelixClient`, for code without an event loop.

It runs the async client (:class:`FelixClient`, :func:`open_workflow_stream`,
:meth:`FelixClient.run`) on an event loop of its own, in one thread it owns
(anyio's blocking portal), and waits for each call. So the blocking client
behaves exactly like the async one, resumes the same way, and may be called
from many threads at once: each call is a task on that loop.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, Literal, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from felix.client._answers import Published, SubscribeToken, WorkflowPage
from felix.client._rest import FelixClient
from felix.client._resume import DEFAULT_BACKOFF, Backoff, Event, StreamItem
from felix.client._run import PublishMode, Run
from felix.client._stream import Transport, WorkflowStream, open_workflow_stream

__all__ = ["SyncFelixClient", "SyncRun"]

T = TypeVar("T")
_END = object()


async def _next_item(stream: WorkflowStream) -> object:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return _END


class SyncRun:
    """:class:`Run` for blocking code: the same methods, each waiting for its answer."""

    def __init__(self, run: Run, portal: BlockingPortal) -> None:
        self._run = run
        self._portal = portal

    @property
    def workflow_id(self) -> str:
        """The workflow this run publishes to."""
        return self._run.workflow_id

    @property
    def result(self) -> Any:
        """What ``completed`` carries when the block ends without an exception."""
        return self._run.result

    @result.setter
    def result(self, value: Any) -> None:
        self._run.result = value

    def publish(self, event: Mapping[str, Any]) -> Published:
        """Publish any event of the contract; see :meth:`Run.publish`."""
        published: Published = self._portal.call(self._run.publish, event)
        return published

    def agent_spawned(
        self, agent_id: str, agent_type: str, spawn_time: float | None = None, **fields: Any
    ) -> Published:
        """An agent started; see :meth:`Run.agent_spawned`."""
        call = functools.partial(self._run.agent_spawned, **fields)
        return self._portal.call(call, agent_id, agent_type, spawn_time)

    def agent_output(
        self, agent_id: str, content: str, confidence: float, **fields: Any
    ) -> Published:
        """An agent's output; see :meth:`Run.agent_output`."""
        call = functools.partial(self._run.agent_output, **fields)
        return self._portal.call(call, agent_id, content, confidence)

    def synthesis(self, content: str, **fields: Any) -> Published:
        """A synthesis; see :meth:`Run.synthesis`."""
        return self._portal.call(functools.partial(self._run.synthesis, content, **fields))

    def error(self, message: str, fatal: bool = False, **fields: Any) -> Published:
        """An error; see :meth:`Run.error`."""
        return self._portal.call(functools.partial(self._run.error, message, fatal, **fields))


class SyncFelixClient:
    """A blocking client of one Felix server: every REST call of
    :class:`FelixClient`, :meth:`stream` and :meth:`run`.

    Owns a thread running an event loop (``backend``: ``"asyncio"`` or
    ``"trio"``) and the HTTP connection pool on it. Use it as a context
    manager, or call :meth:`close`: that closes the pool, ends every stream and
    run still open and joins the thread. Safe to call from several threads
    at once. Raises what :class:`FelixClient` raises (:class:`ApiError`,
    :class:`ConnectionFailed`); calling it after :meth:`close` raises
    :class:`RuntimeError`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        backend: str = "asyncio",
    ) -> None:
        self._exits = ExitStack()
        self._portal = self._exits.enter_context(start_blocking_portal(backend))
        try:
            self._client = FelixClient(base_url, api_key, timeout=timeout)
        except BaseException:
            self._exits.close()
            raise
        self.base_url = self._client.base_url
        self._api_key = api_key
        self._closed = False

    def __enter__(self) -> SyncFelixClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool, end the streams and runs still open, and
        stop the loop's thread (joined before this returns). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._portal.call(self._client.aclose)
            # Cancel what is still open (a stream nobody finished): the portal
            # would otherwise wait for it before its thread could end.
            self._portal.call(self._portal.stop, True)
        finally:
            self._exits.close()

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        return self._portal.call(functools.partial(fn, *args, **kwargs))

    # --- REST -----------------------------------------------------------------------

    def create_workflow(
        self,
        workflow_id: str | None = None,
        task: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a pending workflow; see :meth:`FelixClient.create_workflow`."""
        return self._call(self._client.create_workflow, workflow_id, task, metadata)

    def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        """One workflow and its state; see :meth:`FelixClient.get_workflow`."""
        return self._call(self._client.get_workflow, workflow_id)

    def list_workflows(
        self,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        order: Literal["oldest", "newest"] = "oldest",
    ) -> WorkflowPage:
        """One page of workflows; see :meth:`FelixClient.list_workflows`."""
        return self._call(self._client.list_workflows, status, limit, offset, order)

    def publish(
        self,
        workflow_id: str,
        event_or_events: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> Published:
        """Publish one event or a batch; see :meth:`FelixClient.publish`."""
        return self._call(
            self._client.publish, workflow_id, event_or_events, idempotency_key=idempotency_key
        )

    def cancel(self, workflow_id: str) -> dict[str, Any]:
        """Cancel a workflow; see :meth:`FelixClient.cancel`."""
        return self._call(self._client.cancel, workflow_id)

    def mint_token(self, workflow_id: str, ttl_seconds: float | None = None) -> SubscribeToken:
        """A subscribe token for one workflow; see :meth:`FelixClient.mint_token`."""
        return self._call(self._client.mint_token, workflow_id, ttl_seconds)

    def events(self, workflow_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """Retained events after ``after``; see :meth:`FelixClient.events`."""
        return self._call(self._client.events, workflow_id, after, limit)

    # --- streams and runs -----------------------------------------------------------

    def stream(
        self,
        workflow_id: str,
        *,
        after: int | None = None,
        types: Iterable[str] | None = None,
        token: str | None = None,
        transport: Transport = "websocket",
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> Iterator[StreamItem]:
        """Follow one workflow: a plain iterator of its events (and :class:`Gap`\\ s).

        The same stream as :func:`open_workflow_stream` (same arguments, same
        resuming, same errors raised from ``next()``); it ends after the
        workflow's terminal event. The connection opens at the first
        ``next()`` and closes when the iterator ends, is closed (``close()``,
        or leaving a ``for`` loop and dropping it) or the client is closed.
        """
        opened = open_workflow_stream(
            self.base_url,
            workflow_id,
            api_key=self._api_key,
            token=token,
            after=after,
            types=types,
            backoff=backoff,
            transport=transport,
        )
        try:
            with self._portal.wrap_async_context_manager(opened) as stream:
                while (item := self._portal.call(_next_item, stream)) is not _END:
                    yield item  # type: ignore[misc]
        except RuntimeError:
            if not self._closed:
                raise  # not the portal stopped by close(), which ended this stream

    @contextmanager
    def run(
        self,
        task: str | None = None,
        workflow_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        publish: PublishMode = "auto",
    ) -> Iterator[SyncRun]:
        """Produce one workflow: ``with client.run(task=…) as run:``.

        Everything :meth:`FelixClient.run` does (create, running, the events
        of the block, then ``completed`` or a fatal ``error`` with the
        traceback), for blocking code.
        """
        opened = self._client.run(task, workflow_id, metadata, publish=publish)
        with self._portal.wrap_async_context_manager(opened) as run:
            yield SyncRun(run, self._portal)
