"""Delivery under faults: slow consumers, stalled sockets, dead peers, busy workflows."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.conftest import (
    Server,
    StartServer,
    create_workflow,
    publish,
    raw_websocket,
    receive_json,
    wait_until,
)

BIG = "x" * 30_000


def big_batch(start: int, count: int = 10) -> list[dict[str, Any]]:
    return [{"type": "synthesis", "content": BIG, "n": start + i} for i in range(count)]


async def test_slow_consumer_is_closed_4008_and_others_lose_nothing(
    start_server: StartServer,
) -> None:
    server = await start_server(
        subscriber_buffer_bytes=256 * 1024, history_size=5000, history_bytes=1 << 30
    )
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        fast_seqs: list[int] = []
        async with (
            server.open_ws(workflow_id) as slow,
            server.open_ws(workflow_id, message_queue_size=1000) as fast,
        ):
            await receive_json(slow)
            await receive_json(fast)

            def received(count: int) -> bool:
                return len(fast_seqs) == count

            async def read_fast() -> None:
                while True:
                    event = await receive_json(fast)
                    fast_seqs.append(event["seq"])

            published = 0
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_fast)
                # The slow client reads nothing: kernel buffers fill, then its
                # backlog passes the budget and the next publish ends it.
                with trio.fail_after(30):
                    while server.hub.actor_statistics()[0]["subscribers"] == 2:
                        await publish(client, workflow_id, big_batch(published))
                        published += 10
                        # A reader that keeps up has its batch before the next one.
                        await wait_until(partial(received, published))
                nursery.cancel_scope.cancel()
            assert fast_seqs == list(range(1, published + 1))
            # The slow client now reads: what the kernel held, then 4008.
            seen: list[int] = []

            async def read_slow() -> None:
                while True:
                    seen.append((await receive_json(slow))["seq"])

            with pytest.raises(ConnectionClosed) as info:
                await read_slow()
        assert info.value.reason is not None
        assert (info.value.reason.code, info.value.reason.reason) == (4008, "slow consumer")
        assert seen == list(range(1, len(seen) + 1))
        # It resumes where it stopped and loses nothing retained.
        async with server.open_ws(workflow_id, f"after={seen[-1] if seen else 0}") as again:
            assert (await receive_json(again))["recovered"] is True
            rest = [(await receive_json(again))["seq"] for _ in range(published - len(seen))]
        assert seen + rest == list(range(1, published + 1))


async def test_stalled_reader_is_disconnected_after_the_send_timeout(
    start_server: StartServer,
) -> None:
    # How many events get in before the deadline depends on the machine; a
    # history that holds them all (in count and in bytes) keeps the resume
    # check independent of it.
    server = await start_server(
        send_timeout=0.5,
        subscriber_buffer_bytes=64 * 1024 * 1024,
        history_size=1_000_000,
        history_bytes=1 << 30,
    )
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        sock, _ = await raw_websocket(
            server.http, f"/api/v1/ws/workflows/{workflow_id}", rcvbuf=4096
        )
        with sock:
            assert server.hub.connection_count() == 1
            with trio.fail_after(30):
                sent = 0
                while server.hub.connection_count() == 1:
                    await publish(client, workflow_id, big_batch(sent))
                    sent += 10
            # Gone within the deadline, and the workflow still serves others.
        async with server.open_ws(workflow_id, "after=0") as ws:
            assert (await receive_json(ws))["recovered"] is True


async def test_silent_peer_is_dropped(start_server: StartServer) -> None:
    server = await start_server(ping_interval=0.2, ping_timeout=0.2)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
    sock, _ = await raw_websocket(server.http, f"/api/v1/ws/workflows/{workflow_id}")
    with sock:
        # It never reads, so it never answers a ping: gone within 0.4 s + slack.
        await wait_until(lambda: server.hub.connection_count() == 0, timeout=3)


async def test_live_peer_survives_many_pings(start_server: StartServer) -> None:
    server = await start_server(ping_interval=0.05, ping_timeout=0.05)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        async with server.open_ws(workflow_id) as ws:
            await receive_json(ws)
            # trio-websocket answers pings by itself; twenty rounds pass.
            await trio.sleep(1)
            await publish(client, workflow_id, {"type": "synthesis", "content": "still here"})
            assert (await receive_json(ws))["content"] == "still here"


@pytest.mark.parametrize("enabled", [False, True])
async def test_compression_is_a_setting(start_server: StartServer, enabled: bool) -> None:
    server = await start_server(ws_compression=enabled)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
    sock, answer = await raw_websocket(
        server.http,
        f"/api/v1/ws/workflows/{workflow_id}",
        headers="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    )
    with sock:
        assert answer.startswith(b"HTTP/1.1 101")
        assert (b"permessage-deflate" in answer.lower()) is enabled
        # The first frame (connected) is compressed exactly when it was agreed:
        # RSV1 set (0xC1) rather than a plain final text frame (0x81).
        with trio.fail_after(5):
            first = await sock.recv(1)
        assert first == (b"\xc1" if enabled else b"\x81")


async def test_full_inbox_is_503_with_retry_after(
    server: Server, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import felix
    from felix._runtime.actor import WorkflowActor

    async def busy(self: WorkflowActor, *args: Any) -> Any:
        raise felix.InboxFull("workflow x is busy: its inbox stayed full for 5 s; retry later")

    workflow_id = await create_workflow(client)
    # The hub queues every publish with enqueue() (publish() is enqueue and wait).
    monkeypatch.setattr(WorkflowActor, "enqueue", busy)
    response = await publish(client, workflow_id, {"type": "synthesis", "content": "x"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert json.loads(response.text)["error"] == "inbox_full"


async def test_max_workflows_is_503_on_create(start_server: StartServer) -> None:
    server = await start_server(max_workflows=1)
    async with server.client() as client:
        await create_workflow(client)
        response = await client.post("/api/v1/workflows")
        assert response.status_code == 503
        assert response.json()["error"] == "over_capacity"
        assert "limit" in response.json()["message"]


async def test_agents_per_workflow_limit_is_422(start_server: StartServer) -> None:
    server = await start_server(max_agents_per_workflow=2)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        spawn = [
            {"type": "agent_spawned", "agent_id": f"a{i}", "agent_type": "t", "spawn_time": 0}
            for i in range(3)
        ]
        response = await publish(client, workflow_id, spawn)
        assert response.status_code == 422
        assert response.json()["index"] == 2
