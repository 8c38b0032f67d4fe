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

Everything this package raises on purpose is a :class:`ClientError`: an
:class:`ApiError` for a REST error answer, :class:`ConnectionFailed` when the
server cannot be reached over HTTP, and a :class:`StreamError` when a stream
cannot go on (:class:`StreamRefused` for a handshake that retrying cannot fix,
:class:`ReconnectFailed` when the reconnection budget runs out).

Importing or using the client changes nothing in other libraries: the stream
works around trio-websocket's client defects (a leaked socket after a refusal
or a server's close; a late ping that cancels the caller's nursery) by owning
its socket and its reader task, not by patching trio-websocket. Programs that
use trio-websocket directly and want those fixes call
``felix._patches.trio_websocket_leaks.install()`` and
``felix._patches.trio_websocket_pong.install()`` themselves.

The modules, one reason to change each: ``_errors`` (the error classes),
``_resume`` (backoff, gaps and the resume position: pure), ``_websocket`` (one
connection), ``_stream`` (the resuming stream), ``_rest`` (:class:`FelixClient`).
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
