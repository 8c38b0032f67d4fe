"""``FelixClient.run()``: a producer's workflow lifecycle, under Trio and asyncio.

The dropped-connection test puts a TCP proxy between the client and the
server that, once, swallows the answer to a publish the server has applied
and cuts the connection: the run must retry with the same idempotency key,
so the event is neither lost nor (on a server with idempotent publishes)
repeated.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import attrs
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from felix.client import ApiError, FelixClient, PublishMode
from felix.client._run import _Publisher
from tests.client_loops import Loop, loop
from tests.conftest import Server

__all__ = ["loop"]

MODES: list[PublishMode] = ["auto", "rest"]
RUNNING_EVENT = {"type": "workflow_status", "status": "running"}


async def events_of(client: FelixClient, workflow_id: str) -> list[dict[str, Any]]:
    return await client.events(workflow_id)


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


@pytest.mark.parametrize("publish", MODES)
async def test_run_publishes_the_lifecycle(
    server: Server, loop: Loop, publish: PublishMode
) -> None:
    async def client_side() -> list[dict[str, Any]]:
        async with FelixClient(server.http) as client:
            async with client.run(task="research", metadata={"team": "a"}, publish=publish) as run:
                await run.agent_spawned("a1", "research")
                await run.agent_spawned("a2", "critic", spawn_time=0.5)
                await run.agent_output("a1", "found it", 0.8)
                await run.error("a2 timed out once")
                await run.synthesis("done", confidence=0.9, final=True)
                run.result = {"answer": 42}
            workflow = await client.get_workflow(run.workflow_id)
            assert workflow["status"] == "completed"
            assert (workflow["task"], workflow["metadata"]) == ("research", {"team": "a"})
            assert workflow["result"] == {"answer": 42}
            return await events_of(client, run.workflow_id)

    events = await loop.run(client_side)
    assert kinds(events) == [
        "workflow_status",
        "agent_spawned",
        "agent_spawned",
        "agent_output",
        "error",
        "synthesis",
        "completed",
    ]
    assert events[0]["status"] == "running"
    spawned = events[1]
    assert isinstance(spawned["spawn_time"], float)
    assert 0 <= spawned["spawn_time"] < 5  # seconds since the run began
    assert events[2]["spawn_time"] == 0.5
    assert events[4]["fatal"] is False
    assert (events[5]["confidence"], events[5]["final"]) == (0.9, True)
    assert events[6]["result"] == {"answer": 42}


async def divide_by_zero_in_a_run(client: FelixClient) -> None:
    async with client.run(workflow_id="wf_fails") as run:
        await run.agent_spawned("a1", "math")
        _ = 1 / 0


async def test_an_exception_fails_the_workflow_and_propagates(server: Server, loop: Loop) -> None:
    async def client_side() -> tuple[str, list[dict[str, Any]]]:
        async with FelixClient(server.http) as client:
            with pytest.raises(ZeroDivisionError):
                await divide_by_zero_in_a_run(client)
            workflow = await client.get_workflow("wf_fails")
            return str(workflow["status"]), await events_of(client, "wf_fails")

    status, events = await loop.run(client_side)
    assert status == "failed"
    assert kinds(events) == ["workflow_status", "agent_spawned", "error"]
    error = events[-1]
    assert (error["message"], error["fatal"], error["exception"]) == (
        "division by zero",
        True,
        "ZeroDivisionError",
    )
    assert "1 / 0" in error["traceback"]
    assert error["traceback"].startswith("Traceback (most recent call last):")


async def test_refusals_are_raised_not_retried(server: Server, loop: Loop) -> None:
    async def client_side() -> None:
        async with FelixClient(server.http) as client:
            await client.create_workflow(workflow_id="wf_taken")
            with pytest.raises(ApiError) as taken:
                async with client.run(workflow_id="wf_taken"):
                    pass  # pragma: no cover
            assert taken.value.status == 409
            with pytest.raises(ApiError) as invalid:
                async with client.run() as run:
                    await run.agent_output("a1", "x", confidence=7)
            assert (invalid.value.status, invalid.value.error) == (422, "invalid")
            # The invalid event failed the block: the run ended as failed.
            assert (await client.get_workflow(run.workflow_id))["status"] == "failed"

    await loop.run(client_side)


# --- a connection dropped mid-run ----------------------------------------------------------


@attrs.define
class CuttingProxy:
    """Forwards TCP to the server; once, swallows the ``cut_at``-th answer holding
    ``marker`` (a publish the server has applied) and cuts that connection."""

    upstream_port: int
    cut_at: int
    marker: bytes = b'"accepted"'
    seen: int = 0
    cuts: int = 0
    url: str = ""

    async def handle(self, downstream: trio.SocketStream) -> None:
        up = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
        async with downstream, up, trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, downstream, up, nursery.cancel_scope, False)
            nursery.start_soon(self._pipe, up, downstream, nursery.cancel_scope, True)

    async def _pipe(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        scope: trio.CancelScope,
        answers: bool,
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                if answers and self.marker in data:
                    self.seen += 1
                    if self.seen == self.cut_at and self.cuts == 0:
                        self.cuts += 1
                        break  # the answer is lost with the connection
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()


async def cutting_proxy(nursery: trio.Nursery, server: Server, cut_at: int) -> CuttingProxy:
    proxy = CuttingProxy(int(server.http.rsplit(":", 1)[1]), cut_at)
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1")
    )
    proxy.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    return proxy


async def server_has_idempotency(server: Server) -> bool:
    """Whether the server applies a repeated Idempotency-Key once (contract:
    Idempotent publishes); older servers ignore the header."""
    async with server.client() as http:
        workflow_id = (await http.post("/api/v1/workflows", json={})).json()["workflow_id"]
        event = {"type": "synthesis", "content": "probe"}
        headers = {"Idempotency-Key": "probe-1"}
        url = f"/api/v1/workflows/{workflow_id}/events"
        await http.post(url, json=event, headers=headers)
        again = await http.post(url, json=event, headers=headers)
        await http.delete(f"/api/v1/workflows/{workflow_id}")
    return bool(again.headers.get("idempotent-replayed") == "true")


@pytest.mark.parametrize("publish", MODES)
async def test_a_dropped_connection_neither_loses_nor_repeats_an_event(
    server: Server, loop: Loop, nursery: trio.Nursery, publish: PublishMode
) -> None:
    # Answers: 1 running, 2 spawned, 3 the first output: cut there.
    proxy = await cutting_proxy(nursery, server, cut_at=3)

    async def client_side() -> str:
        async with FelixClient(proxy.url) as client, client.run(publish=publish) as run:
            await run.agent_spawned("a1", "research")
            for i in range(3):
                await run.agent_output("a1", f"output {i}", 0.5)
            return run.workflow_id

    with trio.fail_after(30):
        workflow_id = await loop.run(client_side)
    assert proxy.cuts == 1
    async with FelixClient(server.http) as client:
        contents = [event.get("content") for event in await client.events(workflow_id)]
    outputs = [content for content in contents if content is not None]
    assert await server_has_idempotency(server)
    assert outputs == ["output 0", "output 1", "output 2"]  # exactly once


async def test_run_publishes_cancelled_when_the_block_is_cancelled(
    server: Server, loop: Loop
) -> None:
    async def client_side() -> str:
        async with FelixClient(server.http) as client:
            with anyio.move_on_after(0.2):
                async with client.run() as run:
                    await anyio.sleep_forever()
            return str((await client.get_workflow(run.workflow_id))["status"])

    assert await loop.run(client_side) == "cancelled"


# --- the producer stream, against a scripted server (until the server has it) -----------

Script = Callable[[WebSocketRequest], Awaitable[None]]


@attrs.define
class FakePublishServer:
    """A WebSocket server playing one script per connection and recording frames."""

    scripts: list[Script]
    frames: list[dict[str, Any]] = attrs.Factory(list)
    paths: list[str] = attrs.Factory(list)
    url: str = ""

    async def handle(self, request: WebSocketRequest) -> None:
        self.paths.append(request.path)
        await self.scripts.pop(0)(request)

    async def receive(self, ws: WebSocketConnection) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await ws.get_message())
        self.frames.append(frame)
        return frame


async def fake_publish_server(nursery: trio.Nursery, *scripts: Script) -> FakePublishServer:
    fake = FakePublishServer(list(scripts))
    ws_server = await nursery.start(serve_websocket, fake.handle, "127.0.0.1", 0, None)
    fake.url = f"http://127.0.0.1:{ws_server.port}"
    return fake


def ack(frame: dict[str, Any], seq: int) -> str:
    answer = {"type": "ack", "ref": frame["ref"], "accepted": 1, "first_seq": seq}
    return json.dumps({**answer, "last_seq": seq})


def nack(frame: dict[str, Any], error: str, **fields: Any) -> str:
    return json.dumps({"type": "nack", "ref": frame["ref"], "error": error, **fields})


async def test_producer_stream_resends_with_the_same_key_after_a_drop(
    nursery: trio.Nursery, loop: Loop
) -> None:
    async def applied_then_dropped(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await fake.receive(ws)
        await ws.aclose(code=1011, reason="internal error")  # the ack is lost

    async def answers(request: WebSocketRequest) -> None:
        ws = await request.accept()
        frame = await fake.receive(ws)  # the same publish again
        await ws.send_message(ack(frame, 1))
        frame = await fake.receive(ws)
        await ws.send_message(nack(frame, "inbox_full", message="busy", retry_after=0.01))
        frame = await fake.receive(ws)
        await ws.send_message(ack(frame, 2))
        frame = await fake.receive(ws)
        await ws.send_message(nack(frame, "invalid", message="bad event", index=0))
        with contextlib.suppress(ConnectionClosed):
            await ws.get_message()

    fake = await fake_publish_server(nursery, applied_then_dropped, answers)

    async def client_side() -> list[Any]:
        async with FelixClient(fake.url, api_key="k") as client:
            publisher = _Publisher(client, "wf", "auto")
            try:
                first = await publisher.publish([{"type": "synthesis", "content": "a"}], "key-1")
                second = await publisher.publish([{"type": "synthesis", "content": "b"}], "key-2")
                with pytest.raises(ApiError) as refused:
                    await publisher.publish([{"type": "bad"}], "key-3")
            finally:
                await publisher.aclose()
        return [first, second, refused.value]

    with trio.fail_after(20):
        first, second, refused = await loop.run(client_side)
    assert (first.first_seq, second.first_seq) == (1, 2)
    assert (refused.status, refused.error, refused.body["index"]) == (422, "invalid", 0)
    keys = [frame["idempotency_key"] for frame in fake.frames]
    assert keys == ["key-1", "key-1", "key-2", "key-2", "key-3"]
    assert all(frame["workflow_id"] == "wf" for frame in fake.frames)
    assert fake.paths == ["/api/v1/ws/publish", "/api/v1/ws/publish"]


async def test_producer_stream_falls_back_to_rest_when_refused(
    server: Server, loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server from before the producer stream: its route table has no such row,
    # so the handshake is refused with 404, as an older Felix refuses it.
    from felix.web.edge import routes

    older = tuple(route for route in routes.ROUTES if route.name != "publish_stream")
    monkeypatch.setattr(routes, "ROUTES", older)

    async def client_side() -> tuple[str, list[dict[str, Any]]]:
        async with FelixClient(server.http) as client:
            workflow_id = (await client.create_workflow())["workflow_id"]
            publisher = _Publisher(client, workflow_id, "auto")
            await publisher.publish([RUNNING_EVENT], "k-1")
            mode = publisher.mode
            await publisher.aclose()
            return mode, await client.events(workflow_id)

    mode, events = await loop.run(client_side)
    assert mode == "rest"
    assert kinds(events) == ["workflow_status"]
