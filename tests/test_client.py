"""felix.client against real servers over real sockets, plus its pure parts.

The resuming stream is driven through every way a connection can end: a
terminal event, close 1000, 4008 (slow consumer), a refused handshake (401,
404, 503), a stopped and restarted web layer, a server that misbehaves. With
real sockets the backoff is small and every wait is bounded.
"""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import anyio
import attrs
import httpx
import pytest
import trio
import trio.testing
from trio_websocket import WebSocketConnection, WebSocketRequest, serve_websocket

import felix
from felix.client import (
    CLIENT_LIMITS,
    ApiError,
    Backoff,
    ConnectionFailed,
    Event,
    FelixClient,
    Gap,
    ReconnectFailed,
    StreamItem,
    StreamNotFound,
    StreamUnauthorized,
    WorkflowStream,
    is_terminal,
    open_workflow_stream,
)
from felix.client._resume import Position as _Position
from felix.client._stream import _Dropped
from felix.web import serve
from tests.client_loops import Loop, loop
from tests.conftest import Server, StartServer, create_workflow, publish, wait_until

__all__ = ["loop"]  # the fixture, imported: tests marked dual run under Trio and asyncio

#: Reconnect fast: real sockets, so no virtual clock.
FAST = Backoff(base=0.02, max_delay=0.1, max_elapsed=10.0)
RUNNING = {"type": "workflow_status", "status": "running"}
COMPLETED = {"type": "completed", "result": {"ok": True}}


def big_batch(count: int) -> list[dict[str, Any]]:
    return [{"type": "synthesis", "content": "x" * 30_000} for _ in range(count)]


def output(i: int) -> dict[str, Any]:
    return {"type": "agent_output", "agent_id": "a1", "content": f"out {i}", "confidence": 0.5}


async def drain(stream: WorkflowStream, timeout: float = 5.0) -> list[StreamItem]:
    """Everything the stream yields until it ends, bounded in time."""
    items: list[StreamItem] = []
    with anyio.fail_after(timeout):
        async for item in stream:
            items.append(item)
    return items


async def take(stream: WorkflowStream, count: int, timeout: float = 5.0) -> list[StreamItem]:
    """The next ``count`` items."""
    items: list[StreamItem] = []
    with anyio.fail_after(timeout):
        for _ in range(count):
            items.append(await anext(stream))
    return items


def seqs(items: list[StreamItem]) -> list[int]:
    return [item["seq"] for item in items if not isinstance(item, Gap)]


# --- the pure parts -------------------------------------------------------------------


def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    backoff = Backoff(base=0.5, max_delay=4.0)
    assert [backoff.ceiling(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.delay(3, lambda: 0.0) == 0.0
    assert backoff.delay(3, lambda: 0.5) == 1.0
    assert backoff.ceiling(10_000) == 4.0  # no overflow


def test_backoff_budget() -> None:
    assert Backoff(max_attempts=3, max_elapsed=None).exhausted(3, 0.0)
    assert not Backoff(max_attempts=3, max_elapsed=None).exhausted(2, 1e9)
    assert Backoff(max_elapsed=5.0).exhausted(1, 5.0)
    assert not Backoff(max_attempts=None, max_elapsed=None).exhausted(10**6, 1e9)
    with pytest.raises(ValueError, match="base"):
        Backoff(base=2.0, max_delay=1.0)
    with pytest.raises(ValueError, match="max_attempts"):
        Backoff(max_attempts=0)


async def test_retry_schedule_and_time_budget_in_virtual_time(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No sockets: every connection attempt fails at once, so virtual time is safe.
    attempts: list[float] = []

    async def refused(self: WorkflowStream, send: object) -> None:
        attempts.append(trio.current_time())
        raise _Dropped("connection refused")

    def no_jitter(self: Backoff, failures: int, uniform: object = None) -> float:
        return self.ceiling(failures)

    monkeypatch.setattr(WorkflowStream, "_connect_once", refused)
    monkeypatch.setattr(Backoff, "delay", no_jitter)
    backoff = Backoff(base=1.0, max_delay=4.0, max_elapsed=20.0)
    async with open_workflow_stream("http://felix.invalid", "wf", backoff=backoff) as stream:
        with pytest.raises(ReconnectFailed) as info:
            await drain(stream, timeout=100)
    # Sleeps of 1, 2, 4, 4, 4, 4, then what is left of the budget: 1.
    offsets = [moment - attempts[0] for moment in attempts]
    assert offsets == pytest.approx([0, 1, 3, 7, 11, 15, 19, 20])
    assert info.value.attempts == 8
    assert info.value.elapsed == pytest.approx(20)


def test_position_drops_duplicates_and_passes_system_events() -> None:
    position = _Position(3)
    assert not position.is_new({"type": "synthesis", "seq": 3})
    assert position.is_new({"type": "synthesis", "seq": 4})
    assert position.is_new({"type": "maintenance"})  # a broadcast: no seq
    position.delivered({"seq": 4})
    assert position.seq == 4
    assert not position.is_new({"seq": 4})


def test_position_live_start_takes_the_servers_last_seq() -> None:
    position = _Position(None)
    assert position.on_connected({"type": "connected", "last_seq": 7}) is None
    assert position.seq == 7


def test_position_gap_and_reset() -> None:
    position = _Position(5)
    assert position.on_connected({"last_seq": 9, "recovered": True}) is None
    gap = position.on_connected({"last_seq": 9, "recovered": False, "connection_id": "c"})
    assert gap == Gap(after=5, server_last_seq=9, connection_id="c", reset=False)
    assert position.seq == 5
    # The workflow's seq went backwards: a new workflow took the id.
    reset = position.on_connected({"last_seq": 2, "recovered": False, "connection_id": "d"})
    assert reset is not None
    assert reset.reset
    assert position.seq == 0
    assert position.is_new({"seq": 1})


@pytest.mark.parametrize(
    ("event", "terminal"),
    [
        ({"type": "workflow_status", "status": "completed"}, True),
        ({"type": "workflow_status", "status": "failed"}, True),
        ({"type": "workflow_status", "status": "cancelled"}, True),
        ({"type": "workflow_status", "status": "running"}, False),
        ({"type": "completed"}, True),
        ({"type": "error", "message": "x", "fatal": True}, True),
        ({"type": "error", "message": "x"}, False),
        ({"type": "synthesis", "content": "x", "final": True}, False),
    ],
)
def test_is_terminal(event: Event, terminal: bool) -> None:
    assert is_terminal(event) is terminal


def test_bad_arguments_fail_at_once() -> None:
    with pytest.raises(ValueError, match="url"):
        FelixClient("ftp://example.com")


async def test_bad_stream_arguments_fail_at_once(server: Server) -> None:
    with pytest.raises(ValueError, match="url"):
        async with open_workflow_stream("localhost:8000", "wf"):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="after"):
        async with open_workflow_stream(server.http, "wf", after=-1):
            pass  # pragma: no cover


# --- following a workflow ------------------------------------------------------------------


async def test_stream_yields_live_events_in_order_and_ends_after_terminal(
    server: Server, loop: Loop
) -> None:
    async def client_side() -> tuple[WorkflowStream, list[StreamItem]]:
        async with FelixClient(server.http) as felix_client:
            workflow_id = (await felix_client.create_workflow(workflow_id="wf_live"))["workflow_id"]
            async with open_workflow_stream(server.http, workflow_id) as stream:
                connected = await stream.wait_connected()
                assert connected["type"] == "connected"
                assert connected["workflow_id"] == workflow_id
                assert stream.connected is connected
                await felix_client.publish(workflow_id, [RUNNING, output(1), output(2), COMPLETED])
                return stream, await drain(stream)

    stream, items = await loop.run(client_side)
    assert [item["type"] for item in items if not isinstance(item, Gap)] == [
        "workflow_status",
        "agent_output",
        "agent_output",
        "completed",
    ]
    assert seqs(items) == [1, 2, 3, 4]
    assert stream.last_seq == 4
    assert stream.statistics().connections == 1


async def test_ws_url_forms_are_accepted(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, [RUNNING, COMPLETED])
    for base in (server.ws, server.http + "/"):
        async with open_workflow_stream(base, workflow_id, after=0) as stream:
            assert seqs(await drain(stream)) == [1, 2]


async def test_after_replays_retained_events_then_live_ones(server: Server, loop: Loop) -> None:
    async def client_side() -> None:
        async with FelixClient(server.http) as felix_client:
            workflow_id = (await felix_client.create_workflow())["workflow_id"]
            await felix_client.publish(workflow_id, [RUNNING, output(1), output(2)])
            async with open_workflow_stream(server.http, workflow_id, after=1) as stream:
                assert seqs(await take(stream, 2)) == [2, 3]
                assert stream.connected is not None
                assert stream.connected["recovered"] is True
                await felix_client.publish(workflow_id, COMPLETED)
                assert seqs(await drain(stream)) == [4]

    await loop.run(client_side)


async def test_types_filter_and_close_1000_end_the_stream(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    async with open_workflow_stream(
        server.http, workflow_id, after=0, types=["agent_output"]
    ) as stream:
        await stream.wait_connected()
        # The terminal event is filtered out: the close 1000 ends the stream.
        await publish(client, workflow_id, [RUNNING, output(1), COMPLETED])
        items = await drain(stream)
    assert [item["type"] for item in items if not isinstance(item, Gap)] == ["agent_output"]


@pytest.mark.parametrize(
    "terminal",
    [
        {"type": "workflow_status", "status": "failed"},
        {"type": "workflow_status", "status": "cancelled"},
        {"type": "error", "message": "boom", "fatal": True},
        COMPLETED,
    ],
)
async def test_every_terminal_event_ends_the_stream(
    server: Server, client: httpx.AsyncClient, terminal: dict[str, Any]
) -> None:
    workflow_id = await create_workflow(client)
    async with open_workflow_stream(server.http, workflow_id, after=0) as stream:
        await publish(client, workflow_id, [RUNNING, {"type": "error", "message": "minor"}])
        assert seqs(await take(stream, 2)) == [1, 2]  # a non-fatal error goes on
        await publish(client, workflow_id, terminal)
        items = await drain(stream)
    assert [item["type"] for item in items if not isinstance(item, Gap)] == [terminal["type"]]


async def test_cancel_over_rest_ends_the_stream(server: Server) -> None:
    async with FelixClient(server.http) as felix:
        workflow = await felix.create_workflow()
        workflow_id = workflow["workflow_id"]
        async with open_workflow_stream(server.http, workflow_id) as stream:
            await stream.wait_connected()
            await felix.cancel(workflow_id)
            (item,) = await drain(stream)
    assert not isinstance(item, Gap)
    assert (item["type"], item["status"]) == ("workflow_status", "cancelled")


async def test_finished_workflow_replays_and_ends(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, [RUNNING, output(1), COMPLETED])
    async with open_workflow_stream(server.http, workflow_id, after=0) as stream:
        assert seqs(await drain(stream)) == [1, 2, 3]
        with trio.fail_after(5):
            assert (await stream.wait_connected())["status"] == "completed"


async def test_lost_events_surface_as_a_gap(start_server: StartServer) -> None:
    server = await start_server(history_size=3)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        await publish(client, workflow_id, [RUNNING, *(output(i) for i in range(5))])  # 1..6
        async with open_workflow_stream(server.http, workflow_id, after=1) as stream:
            gap, *replayed = await take(stream, 4)
            assert gap == Gap(
                after=1,
                server_last_seq=6,
                connection_id=stream.connected["connection_id"] if stream.connected else "",
            )
            assert seqs(replayed) == [4, 5, 6]
            await publish(client, workflow_id, COMPLETED)
            assert seqs(await drain(stream)) == [7]
    assert stream.statistics().gaps == 1


# --- reconnecting ---------------------------------------------------------------------------


async def test_slow_reader_is_kicked_4008_then_resumes_losing_nothing(
    start_server: StartServer, loop: Loop
) -> None:
    # The write deadline is far off, so the kick is the buffer's 4008 and not a reset.
    server = await start_server(
        subscriber_buffer_bytes=256 * 1024, history_size=5000, send_timeout=60
    )

    def subscribers() -> int:
        count: int = server.hub.actor_statistics()[0]["subscribers"]
        return count

    async def client_side() -> None:
        async with FelixClient(server.http) as client:
            await slow_reader(server, loop, client, subscribers)

    await loop.run(client_side)


async def slow_reader(
    server: Server, loop: Loop, client: FelixClient, subscribers: Callable[[], int]
) -> None:
    """The client side of the slow-reader test: stop reading until kicked, then read all."""
    workflow_id = (await client.create_workflow())["workflow_id"]
    async with open_workflow_stream(server.http, workflow_id, backoff=FAST) as stream:
        await stream.wait_connected()
        await client.publish(workflow_id, [RUNNING, output(0)])
        assert seqs(await take(stream, 2)) == [1, 2]
        # Stop reading: the stream stops reading its socket, the kernel's
        # buffers fill, the server's backlog passes its budget and the next
        # publish ends the connection with 4008.
        published = 2
        with anyio.fail_after(20):
            while await loop.server_sync(subscribers) == 1:
                await client.publish(workflow_id, big_batch(10))
                published += 10
        # Read again: what the kernel held, then (after the reconnect) the rest.
        assert seqs(await take(stream, published - 2, timeout=10)) == list(range(3, published + 1))
        stats = stream.statistics()
        assert stats.last_drop == "closed with 4008 (slow consumer)"
        assert stats.connections == 2
        assert stats.gaps == 0
        await client.publish(workflow_id, COMPLETED)
        assert seqs(await drain(stream)) == [published + 1]


@attrs.define
class WebLayer:
    """Felix's web layer in a cancel scope of its own, over a hub that outlives it."""

    scope: trio.CancelScope
    url: str
    stopped: trio.Event


async def run_web_layer(
    hub: felix.Hub, settings: felix.Settings, *, task_status: trio.TaskStatus[WebLayer]
) -> None:
    stopped = trio.Event()
    try:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                binds: list[str] = await nursery.start(serve, hub, settings)
                task_status.started(WebLayer(scope, binds[0], stopped))
    finally:
        stopped.set()


async def run_hub(settings: felix.Settings, *, task_status: trio.TaskStatus[felix.Hub]) -> None:
    async with felix.open_hub(settings) as hub:
        task_status.started(hub)
        await trio.sleep_forever()


async def test_resumes_across_a_web_layer_restart(nursery: trio.Nursery, loop: Loop) -> None:
    settings = felix.Settings(host="127.0.0.1", port=0)
    hub: felix.Hub = await nursery.start(run_hub, settings)
    web: WebLayer = await nursery.start(run_web_layer, hub, settings)
    workflow = await hub.create_workflow()
    workflow_id = workflow.workflow_id

    async def stop() -> None:
        web.scope.cancel()
        with trio.fail_after(5):
            await web.stopped.wait()

    async def restart() -> WebLayer:
        port = int(web.url.rsplit(":", 1)[1])
        again = felix.Settings(host="127.0.0.1", port=port)
        restarted: WebLayer = await nursery.start(run_web_layer, hub, again)
        return restarted

    async def client_side() -> WebLayer:
        async with open_workflow_stream(web.url, workflow_id, backoff=FAST) as stream:
            await stream.wait_connected()
            await loop.server(hub.publish, workflow_id, [RUNNING, output(1)])
            assert seqs(await take(stream, 2)) == [1, 2]
            await loop.server(stop)
            # The drop, then at least one refused connect, while the port is closed.
            with anyio.fail_after(5):
                while stream.statistics().failures < 2:
                    await anyio.sleep(0.005)
            assert not stream.statistics().connected
            assert stream.statistics().last_drop == "connection refused"
            # Published during the outage:
            await loop.server(hub.publish, workflow_id, [output(2), output(3)])
            restarted = await loop.server(restart)
            assert restarted.url == web.url
            assert seqs(await take(stream, 2)) == [3, 4]
            assert stream.statistics().connections == 2
            assert stream.connected is not None
            assert stream.connected["recovered"] is True
            await loop.server(hub.publish, workflow_id, [COMPLETED])
            assert seqs(await drain(stream)) == [5]
            return restarted

    restarted = await loop.run(client_side)
    restarted.scope.cancel()


async def test_1001_then_503_are_retried_until_the_budget(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    backoff = Backoff(base=0.01, max_delay=0.02, max_attempts=3, max_elapsed=None)
    async with open_workflow_stream(server.http, workflow_id, backoff=backoff) as stream:
        await stream.wait_connected()
        # Graceful shutdown: open streams close with 1001, new handshakes get 503.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.hub.shutdown, 5.0)
            with pytest.raises(ReconnectFailed) as info, trio.fail_after(5):
                await drain(stream)
    assert info.value.attempts == 3
    assert info.value.last_error == "refused with HTTP 503: the server is shutting down"
    assert stream.statistics().connections == 1


@contextmanager
def closed_port() -> Iterator[int]:
    """A local port with nothing listening (bound, never listened: connects are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_gives_up_after_the_attempt_budget(loop: Loop) -> None:
    async def client_side() -> tuple[WorkflowStream, pytest.ExceptionInfo[ReconnectFailed]]:
        backoff = Backoff(base=0.01, max_delay=0.02, max_attempts=3, max_elapsed=None)
        async with open_workflow_stream(
            f"http://127.0.0.1:{port}", "wf", backoff=backoff
        ) as stream:
            with pytest.raises(ReconnectFailed) as info, anyio.fail_after(5):
                await drain(stream)
        return stream, info

    with closed_port() as port:
        stream, info = await loop.run(client_side)
    assert info.value.attempts == 3
    assert info.value.last_error == "connection refused"
    assert "gave up reconnecting" in str(info.value)
    assert stream.statistics().connections == 0


async def test_gives_up_after_the_time_budget() -> None:
    with closed_port() as port:
        backoff = Backoff(base=0.01, max_delay=0.02, max_elapsed=0.2)
        async with open_workflow_stream(
            f"http://127.0.0.1:{port}", "wf", backoff=backoff
        ) as stream:
            with pytest.raises(ReconnectFailed) as info, trio.fail_after(5):
                await stream.wait_connected()
    assert info.value.elapsed >= 0.2
    assert info.value.attempts >= 2


async def test_bad_key_is_not_retried(start_server: StartServer, loop: Loop) -> None:
    server = await start_server(api_keys=("right",))
    async with server.client("right") as client:
        workflow_id = await create_workflow(client)

    async def client_side() -> None:
        async with open_workflow_stream(server.http, workflow_id, api_key="wrong") as stream:
            with pytest.raises(StreamUnauthorized) as info, anyio.fail_after(5):
                await drain(stream)
        assert (info.value.status, info.value.error) == (401, "unauthorized")
        assert info.value.message == "missing or invalid API key"
        assert stream.statistics().failures == 0  # refused for good, not retried
        # The key travels in the X-API-Key header.
        async with open_workflow_stream(server.http, workflow_id, api_key="right") as stream:
            with anyio.fail_after(5):
                assert (await stream.wait_connected())["workflow_id"] == workflow_id

    await loop.run(client_side)


async def test_unknown_workflow_is_not_retried(server: Server, loop: Loop) -> None:
    async def client_side() -> None:
        async with open_workflow_stream(server.http, "wf_nope") as stream:
            with pytest.raises(StreamNotFound) as info, anyio.fail_after(5):
                await drain(stream)
        assert info.value.status == 404
        assert info.value.message == "workflow wf_nope not found"
        assert stream.statistics().failures == 0

    await loop.run(client_side)


async def test_leaving_the_block_early_closes_the_connection(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, [RUNNING, output(1), output(2)])
    async with open_workflow_stream(server.http, workflow_id, after=0) as stream:
        async for item in stream:
            assert not isinstance(item, Gap)
            break
    await wait_until(lambda: server.hub.connection_count(workflow_id) == 0)


async def test_errors_in_the_block_propagate_as_themselves(
    server: Server, client: httpx.AsyncClient, loop: Loop
) -> None:
    workflow_id = await create_workflow(client)

    async def fail_inside() -> None:
        async with open_workflow_stream(server.http, workflow_id) as stream:
            await stream.wait_connected()
            raise KeyError("mine")

    # Not wrapped in an exception group by the stream's task group.
    with pytest.raises(KeyError, match="mine"):
        await loop.run(fail_inside)


# --- against a scripted server: what Felix itself never does -----------------------------


Script = Callable[[WebSocketRequest], Awaitable[None]]


@attrs.define
class FakeServer:
    """A WebSocket server playing one script per connection, recording requests."""

    scripts: list[Script]
    url: str = ""
    paths: list[str] = attrs.Factory(list)
    headers: list[dict[bytes, bytes]] = attrs.Factory(list)

    async def handle(self, request: WebSocketRequest) -> None:
        self.paths.append(request.path)
        self.headers.append({name.lower(): value for name, value in request.headers})
        await self.scripts.pop(0)(request)


async def fake_server(nursery: trio.Nursery, *scripts: Script) -> FakeServer:
    fake = FakeServer(list(scripts))
    ws_server = await nursery.start(serve_websocket, fake.handle, "127.0.0.1", 0, None)
    fake.url = f"ws://127.0.0.1:{ws_server.port}"
    return fake


def frame(kind: str, seq: int | None = None, **fields: Any) -> str:
    event: dict[str, Any] = {"type": kind, "workflow_id": "wf", **fields}
    if seq is not None:
        event["seq"] = seq
    return json.dumps(event)


async def send_all(ws: WebSocketConnection, *frames: str) -> None:
    for text in frames:
        await ws.send_message(text)


async def test_no_duplicates_when_the_server_replays_too_much(
    nursery: trio.Nursery, loop: Loop
) -> None:
    async def first(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await send_all(ws, frame("connected", last_seq=0), frame("synthesis", 1, content="a"))
        await send_all(ws, frame("synthesis", 2, content="b"))
        await ws.aclose(code=1011, reason="internal error")

    async def second(request: WebSocketRequest) -> None:
        ws = await request.accept()
        # Ignores after=2 and sends 1 and 2 again.
        await send_all(ws, frame("connected", last_seq=3, recovered=True))
        await send_all(ws, *(frame("synthesis", seq, content="x") for seq in (1, 2, 3)))
        await send_all(ws, frame("maintenance", note="no seq"), frame("completed", 4))
        await ws.aclose()

    fake = await fake_server(nursery, first, second)

    async def client_side() -> tuple[WorkflowStream, list[StreamItem]]:
        async with open_workflow_stream(fake.url, "wf", backoff=FAST) as stream:
            return stream, await drain(stream)

    stream, items = await loop.run(client_side)
    assert [(item.get("seq"), item["type"]) for item in items if not isinstance(item, Gap)] == [
        (1, "synthesis"),
        (2, "synthesis"),
        (3, "synthesis"),
        (None, "maintenance"),
        (4, "completed"),
    ]
    assert stream.statistics().last_drop == "closed with 1011 (internal error)"
    assert fake.paths == ["/api/v1/ws/workflows/wf", "/api/v1/ws/workflows/wf?after=2"]


async def test_503_is_retried_and_credentials_go_where_the_contract_says(
    nursery: trio.Nursery,
) -> None:
    async def busy(request: WebSocketRequest) -> None:
        body = b'{"error": "shutting_down", "message": "the server is shutting down"}'
        await request.reject(503, body=body)

    async def accept(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await send_all(ws, frame("connected", last_seq=5, recovered=True), frame("completed", 6))
        await ws.aclose()

    fake = await fake_server(nursery, busy, accept)
    async with open_workflow_stream(
        fake.url, "wf", api_key="k-123", token="t_abc", after=5, types=["completed"], backoff=FAST
    ) as stream:
        assert seqs(await drain(stream)) == [6]
    assert stream.statistics().last_drop == "refused with HTTP 503: the server is shutting down"
    assert fake.paths[1] == "/api/v1/ws/workflows/wf?after=5&types=completed&token=t_abc"
    assert all(headers[b"x-api-key"] == b"k-123" for headers in fake.headers)
    assert all(b"k-123" not in path.encode() for path in fake.paths)


async def test_a_reused_workflow_id_resets_the_position(nursery: trio.Nursery) -> None:
    async def restarted(request: WebSocketRequest) -> None:
        ws = await request.accept()
        # A new workflow under the same id: its seq is behind ours.
        await send_all(ws, frame("connected", last_seq=2, recovered=False, connection_id="c2"))
        await send_all(ws, frame("synthesis", 1, content="new"), frame("completed", 2))
        await ws.aclose()

    fake = await fake_server(nursery, restarted)
    async with open_workflow_stream(fake.url, "wf", after=9) as stream:
        gap, *events = await drain(stream)
    assert gap == Gap(after=9, server_last_seq=2, connection_id="c2", reset=True)
    assert seqs(events) == [1, 2]


async def test_a_frame_that_is_not_json_fails_the_stream(nursery: trio.Nursery) -> None:
    async def garbage(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await send_all(ws, "not json")
        await trio.sleep_forever()

    fake = await fake_server(nursery, garbage)
    async with open_workflow_stream(fake.url, "wf") as stream:
        with pytest.raises(felix.client.StreamError, match="not a JSON object"), trio.fail_after(5):
            await drain(stream)


# --- REST -----------------------------------------------------------------------------------


async def test_rest_round_trip(server: Server, loop: Loop) -> None:
    async def client_side() -> None:
        async with FelixClient(server.http) as felix_client:
            await rest_round_trip(felix_client)

    await loop.run(client_side)


async def rest_round_trip(felix_client: FelixClient) -> None:
    created = await felix_client.create_workflow(workflow_id="wf_rest", task="t", metadata={"k": 1})
    assert (created["workflow_id"], created["status"], created["metadata"]) == (
        "wf_rest",
        "pending",
        {"k": 1},
    )
    published = await felix_client.publish("wf_rest", RUNNING)
    assert (published.accepted, published.first_seq, published.last_seq) == (1, 1, 1)
    published = await felix_client.publish("wf_rest", [output(1), output(2)])
    assert (published.accepted, published.first_seq, published.last_seq) == (2, 2, 3)
    workflow = await felix_client.get_workflow("wf_rest")
    assert workflow["status"] == "running"
    assert workflow["agents"][0]["agent_id"] == "a1"
    assert [event["seq"] for event in await felix_client.events("wf_rest")] == [1, 2, 3]
    assert [event["seq"] for event in await felix_client.events("wf_rest", after=1, limit=1)] == [2]
    await felix_client.create_workflow()
    page = await felix_client.list_workflows(status="running")
    assert page.total == 1
    assert [wf["workflow_id"] for wf in page.workflows] == ["wf_rest"]
    everything = await felix_client.list_workflows(limit=1, offset=1)
    assert (everything.total, len(everything.workflows)) == (2, 1)
    cancelled = await felix_client.cancel("wf_rest")
    assert cancelled["status"] == "cancelled"


async def test_rest_errors_carry_the_contract_body(server: Server, loop: Loop) -> None:
    async def client_side() -> None:
        async with FelixClient(server.http) as felix_client:
            await rest_errors(felix_client)

    await loop.run(client_side)


async def rest_errors(felix_client: FelixClient) -> None:
    with pytest.raises(ApiError) as info:
        await felix_client.get_workflow("wf_missing")
    assert (info.value.status, info.value.error) == (404, "workflow_not_found")
    assert info.value.message == "workflow wf_missing not found"
    await felix_client.create_workflow(workflow_id="wf_twice")
    with pytest.raises(ApiError) as info:
        await felix_client.create_workflow(workflow_id="wf_twice")
    assert (info.value.status, info.value.error) == (409, "workflow_exists")
    with pytest.raises(ApiError) as info:
        await felix_client.publish("wf_twice", [RUNNING, {"type": "agent_output"}])
    assert (info.value.status, info.value.body["index"]) == (422, 1)
    await felix_client.cancel("wf_twice")
    with pytest.raises(ApiError) as info:
        await felix_client.publish("wf_twice", output(1))
    assert info.value.status == 409


async def test_rest_key_goes_in_the_header(start_server: StartServer) -> None:
    server = await start_server(api_keys=("right",))
    async with FelixClient(server.http, api_key="right") as good:
        assert (await good.list_workflows()).total == 0
    async with FelixClient(server.http, api_key="wrong") as bad:
        with pytest.raises(ApiError) as info:
            await bad.list_workflows()
    assert (info.value.status, info.value.error) == (401, "unauthorized")
    assert str(info.value) == "missing or invalid API key (HTTP 401 unauthorized)"


async def test_rest_connection_refused_is_a_clear_error(loop: Loop) -> None:
    async def client_side() -> pytest.ExceptionInfo[ConnectionFailed]:
        client = FelixClient(f"http://127.0.0.1:{port}")
        async with client:
            with pytest.raises(ConnectionFailed) as info:
                await client.get_workflow("wf")
        await client.aclose()  # idempotent
        return info

    with closed_port() as port:
        info = await loop.run(client_side)
    assert info.value.reason == "connection refused"
    assert str(info.value) == f"cannot connect to http://127.0.0.1:{port}: connection refused"


def test_pooled_connections_expire_before_the_server_closes_them() -> None:
    # Equal expiries race: a request sent on a connection as the server closes
    # it fails ("Server disconnected without sending a response"); the soak
    # hit it with httpx's default of 5 s against the server's 5 s.
    assert CLIENT_LIMITS.keepalive_expiry is not None
    assert CLIENT_LIMITS.keepalive_expiry < felix.Settings().keep_alive_timeout / 2


# --- Server-Sent Events (transport="sse") ---------------------------------------------------


@attrs.define
class FakeSseServer:
    """An HTTP server answering each request with the next canned response."""

    answers: list[bytes]
    url: str = ""
    requests: list[str] = attrs.Factory(list)

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                head += chunk
            self.requests.append(head.decode())
            await stream.send_all(self.answers.pop(0))


def sse_answer(*frames: tuple[str, dict[str, Any]], status: str = "200 OK") -> bytes:
    body = "retry: 1000\n\n" + "".join(
        f"{'id: ' + str(data['seq']) + chr(10) if 'seq' in data else ''}"
        f"event: {kind}\ndata: {json.dumps(data)}\n\n: ping\n\n"
        for kind, data in frames
    )
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{body}"
    ).encode()


async def fake_sse_server(nursery: trio.Nursery, *answers: bytes) -> FakeSseServer:
    fake = FakeSseServer(list(answers))
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, fake.handle, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    fake.url = f"http://127.0.0.1:{port}"
    return fake


def sse_event(kind: str, seq: int | None = None, **fields: Any) -> tuple[str, dict[str, Any]]:
    return kind, json.loads(frame(kind, seq, **fields))


async def test_sse_transport_resumes_and_ends_like_the_websocket(
    nursery: trio.Nursery, loop: Loop
) -> None:
    busy = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: 60\r\n\r\n"
        + b'{"error": "shutting_down", "message": "shutting down"}'.ljust(60)
    )
    first = sse_answer(
        sse_event("connected", last_seq=0),
        sse_event("synthesis", 1, content="a"),
        sse_event("error", 2, message="minor"),
        ("close", {"code": 4008, "reason": "slow consumer"}),
    )
    second = sse_answer(
        sse_event("connected", last_seq=3, recovered=True),
        sse_event("error", 2, message="minor"),  # a duplicate, dropped
        sse_event("completed", 3),
        ("close", {"code": 1000, "reason": "workflow completed"}),
    )
    fake = await fake_sse_server(nursery, busy, first, second)

    async def client_side() -> tuple[WorkflowStream, list[StreamItem]]:
        async with open_workflow_stream(
            fake.url,
            "wf",
            transport="sse",
            api_key="k-1",
            types=["synthesis", "error"],
            backoff=FAST,
        ) as stream:
            return stream, await drain(stream)

    stream, items = await loop.run(client_side)
    assert [(item["seq"], item["type"]) for item in items if not isinstance(item, Gap)] == [
        (1, "synthesis"),
        (2, "error"),  # a workflow's error event is data, not the transport failing
        (3, "completed"),
    ]
    assert stream.statistics().connections == 2
    assert stream.statistics().last_drop == "closed with 4008 (slow consumer)"
    paths = [request.split(" ", 2)[1] for request in fake.requests]
    assert paths == [
        "/api/v1/sse/workflows/wf?types=synthesis%2Cerror",
        "/api/v1/sse/workflows/wf?types=synthesis%2Cerror",
        "/api/v1/sse/workflows/wf?after=2&types=synthesis%2Cerror",
    ]
    assert all("x-api-key: k-1" in request.lower() for request in fake.requests)
    assert all("accept: text/event-stream" in request.lower() for request in fake.requests)


async def test_sse_refusals_are_not_retried(nursery: trio.Nursery, loop: Loop) -> None:
    body = b'{"error": "unauthorized", "message": "missing or invalid API key"}'
    refused = (
        b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nconnection: close\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    fake = await fake_sse_server(nursery, refused)

    async def client_side() -> StreamUnauthorized:
        async with open_workflow_stream(fake.url, "wf", transport="sse") as stream:
            with pytest.raises(StreamUnauthorized) as info, anyio.fail_after(5):
                await drain(stream)
        return info.value

    error = await loop.run(client_side)
    assert (error.status, error.message) == (401, "missing or invalid API key")


async def test_sse_against_the_server(server: Server, loop: Loop) -> None:
    """Needs the server's SSE routes (contract: Server-Sent Events); skipped before them."""
    async with server.client() as http:
        probe = await http.get("/api/v1/sse/workflows/wf_probe")
    if probe.status_code == 404 and probe.json().get("error") == "not_found":
        pytest.skip("this server has no SSE routes yet (GET /api/v1/sse/workflows/{id})")

    async def client_side() -> list[StreamItem]:
        async with FelixClient(server.http) as client:
            workflow_id = (await client.create_workflow())["workflow_id"]
            await client.publish(workflow_id, [RUNNING, output(1)])
            async with open_workflow_stream(
                server.http, workflow_id, after=0, transport="sse"
            ) as stream:
                assert seqs(await take(stream, 2)) == [1, 2]
                await client.publish(workflow_id, [output(2), COMPLETED])
                return await drain(stream)

    assert seqs(await loop.run(client_side)) == [3, 4]


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_reset_during_the_handshake_is_retried_with_backoff(
    nursery: trio.Nursery, transport: Literal["websocket", "sse"]
) -> None:
    # A server (or a proxy) that resets each connection once the request is in,
    # as a restarting node can: the stream retries until its budget runs out.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    resets: list[int] = []

    async def reset(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        resets.append(1)
        await stream.aclose()

    nursery.start_soon(trio.serve_listeners, reset, listeners)
    backoff = Backoff(base=0.01, max_delay=0.02, max_attempts=3)
    url = f"http://127.0.0.1:{port}"
    async with open_workflow_stream(url, "wf", backoff=backoff, transport=transport) as stream:
        with pytest.raises(ReconnectFailed) as info, trio.fail_after(10):
            await drain(stream, timeout=10)
    assert info.value.attempts == 3
    assert len(resets) == 3
