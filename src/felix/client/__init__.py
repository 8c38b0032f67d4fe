"""The Python client of Felix, for asyncio, Trio and blocking code.

Follow one workflow, surviving drops, restarts and slow-consumer kicks, under
``asyncio.run`` or ``trio.run`` alike::

    async with open_workflow_stream("http://127.0.0.1:8000", workflow_id, after=0) as stream:
        async for item in stream:
            if isinstance(item, Gap):
                ...  # events were lost for good: refetch the state over REST
            else:
                print(item["seq"], item["type"])
    # the loop ends after the workflow's terminal event

talk to the REST API, and produce a workflow with :meth:`FelixClient.run`::

    async with FelixClient("http://127.0.0.1:8000", api_key=key) as felix:
        async with felix.run(task="research") as run:
            await run.agent_spawned("a1", "research")
            run.result = {"answer": 42}

or do all of it from blocking code with :class:`SyncFelixClient`.

Everything this package raises on purpose is a :class:`ClientError`: an
:class:`ApiError` for a REST error answer, :class:`ConnectionFailed` when the
server cannot be reached over HTTP, and a :class:`StreamError` when a stream
cannot go on (:class:`StreamRefused` for a handshake that retrying cannot fix,
:class:`ReconnectFailed` when the reconnection budget runs out).

The client runs on anyio: its WebSocket is wsproto over anyio's streams and
its Server-Sent Events h11, both read by the stream's own task, so it patches
nothing and leaks no reader task. The modules, one reason to change each:
``_errors`` (the error classes), ``_resume`` (backoff, gaps and the resume
position: pure), ``_websocket`` (one WebSocket), ``_sse`` (one SSE response),
``_stream`` (the resuming stream), ``_answers`` and ``_rest``
(:class:`FelixClient`), ``_run`` (:meth:`FelixClient.run`), ``_sync``
(:class:`SyncFelixClient`).
"""

from __future__ import annotations

from felix.client._errors import (
    ApiError,
    ClientError,
    ConnectionFailed,
    ReconnectFailed,
    StreamError,
    StreamNotFound,
    StreamRefused,
    StreamUnauthorized,
)
from felix.client._rest import (
    CLIENT_LIMITS,
    FelixClient,
    Published,
    SubscribeToken,
    WorkflowPage,
)
from felix.client._resume import DEFAULT_BACKOFF, Backoff, Event, Gap, StreamItem, is_terminal
from felix.client._run import PublishMode, Run
from felix.client._stream import StreamStatistics, Transport, WorkflowStream, open_workflow_stream
from felix.client._sync import SyncFelixClient, SyncRun

__all__ = [
    "CLIENT_LIMITS",
    "DEFAULT_BACKOFF",
    "ApiError",
    "Backoff",
    "ClientError",
    "ConnectionFailed",
    "Event",
    "FelixClient",
    "Gap",
    "PublishMode",
    "Published",
    "ReconnectFailed",
    "Run",
    "StreamError",
    "StreamItem",
    "StreamNotFound",
    "StreamRefused",
    "StreamStatistics",
    "StreamUnauthorized",
    "SubscribeToken",
    "SyncFelixClient",
    "SyncRun",
    "Transport",
    "WorkflowPage",
    "WorkflowStream",
    "is_terminal",
    "open_workflow_stream",
]
