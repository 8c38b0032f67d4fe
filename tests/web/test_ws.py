"""Every WebSocket row of the contract, with trio-websocket over real sockets."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from tests.conftest import (
    Server,
    StartServer,
    create_workflow,
    publish,
    receive_json,
    wait_until,
    websocket_tasks,
)

RUNNING = {"type": "workflow_status", "status": "running"}


def synthesis(i: int) -> dict[str, Any]:
    return {"type": "synthesis", "content": f"draft {i}"}


async def closed_with(ws: WebSocketConnection) -> tuple[int, str | None, list[dict[str, Any]]]:
    """Read until the server closes; return the code, reason and what came before."""
    seen: list[dict[str, Any]] = []

    async def read_all() -> None:
        while True:
            seen.append(json.loads(await ws.get_message()))

    with pytest.raises(ConnectionClosed) as info, trio.fail_after(5):
        await read_all()
    reason = info.value.reason
    assert reason is not None
    return reason.code, reason.reason, seen


async def refused(server: Server, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    from trio_websocket import open_websocket_url

    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(f"{server.ws}{path}", **kwargs):
            pass
    body = json.loads(info.value.body or b"{}")
    assert set(body) >= {"error", "message"}
    status: int = info.value.status_code
    return status, body


async def test_connected_then_live_events(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    async with server.open_ws(workflow_id) as ws:
        connected = await receive_json(ws)
        assert connected["type"] == "connected"
        assert connected["workflow_id"] == workflow_id
        assert connected["status"] == "pending"
        assert connected["last_seq"] == 0
        assert connected["connection_id"].startswith("conn_")
        assert connected["timestamp"].endswith("Z")
        assert "recovered" not in connected
        await publish(client, workflow_id, [RUNNING, synthesis(1)])
        first, second = await receive_json(ws), await receive_json(ws)
    assert first == {
        **RUNNING,
        "workflow_id": workflow_id,
        "seq": 1,
        "timestamp": first["timestamp"],
    }
    assert second["seq"] == 2
    assert second["content"] == "draft 1"


async def test_without_after_only_live_events(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, [RUNNING, synthesis(1)])
    async with server.open_ws(workflow_id) as ws:
        assert (await receive_json(ws))["last_seq"] == 2
        await publish(client, workflow_id, synthesis(2))
        assert (await receive_json(ws))["seq"] == 3


@pytest.mark.parametrize(("after", "expected"), [(0, [1, 2, 3]), (2, [3]), (3, [])])
async def test_after_replays_then_goes_live(
    server: Server, client: httpx.AsyncClient, after: int, expected: list[int]
) -> None:
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, [RUNNING, synthesis(1), synthesis(2)])
    async with server.open_ws(workflow_id, f"after={after}") as ws:
        connected = await receive_json(ws)
        assert connected["recovered"] is True
        replayed = [(await receive_json(ws))["seq"] for _ in expected]
        assert replayed == expected
        await publish(client, workflow_id, synthesis(3))
        assert (await receive_json(ws))["seq"] == 4


async def test_resume_past_the_history_is_not_recovered(start_server: StartServer) -> None:
    server = await start_server(history_size=3)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        await publish(client, workflow_id, [RUNNING] + [synthesis(i) for i in range(4)])
        async with server.open_ws(workflow_id, "after=1") as ws:
            connected = await receive_json(ws)
            assert connected["recovered"] is False
            assert [(await receive_json(ws))["seq"] for _ in range(3)] == [3, 4, 5]


async def test_types_filter(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    async with server.open_ws(workflow_id, "types=synthesis,completed") as ws:
        assert (await receive_json(ws))["type"] == "connected"
        await ws.send_message('{"type": "ping"}')
        assert (await receive_json(ws))["type"] == "pong"
        await publish(client, workflow_id, [RUNNING, synthesis(1), RUNNING, {"type": "completed"}])
        code, reason, seen = await closed_with(ws)
    assert [event["type"] for event in seen] == ["synthesis", "completed"]
    assert (code, reason) == (1000, "workflow completed")


async def test_ping_pong_and_command_errors(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    async with server.open_ws(workflow_id) as ws:
        await receive_json(ws)
        await ws.send_message("ping")
        assert await ws.get_message() == "pong"
        await ws.send_message('{"type": "ping"}')
        pong = await receive_json(ws)
        assert pong["type"] == "pong"
        assert pong["timestamp"].endswith("Z")
        for bad in ('{"type": "dance"}', "{not json", "[1]", b"\x00\x01"):
            await ws.send_message(bad)
            error = await receive_json(ws)
            assert error["type"] == "command_error"
            assert error["message"]
        # Still open and streaming after the bad commands.
        await publish(client, workflow_id, RUNNING)
        assert (await receive_json(ws))["seq"] == 1


@pytest.mark.parametrize(
    ("last", "reason"),
    [
        ({"type": "completed"}, "workflow completed"),
        ({"type": "error", "message": "boom", "fatal": True}, "workflow failed"),
        ({"type": "workflow_status", "status": "cancelled"}, "workflow cancelled"),
    ],
)
async def test_terminal_event_then_close_1000(
    server: Server, client: httpx.AsyncClient, last: dict[str, Any], reason: str
) -> None:
    workflow_id = await create_workflow(client)
    async with server.open_ws(workflow_id) as ws:
        await receive_json(ws)
        await publish(client, workflow_id, [RUNNING, last])
        code, got_reason, seen = await closed_with(ws)
    assert [event["seq"] for event in seen] == [1, 2]
    assert (code, got_reason) == (1000, reason)


async def test_replay_of_a_finished_workflow(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, [RUNNING, {"type": "completed", "result": 1}])
    async with server.open_ws(workflow_id, "after=0") as ws:
        code, reason, seen = await closed_with(ws)
    assert [event["type"] for event in seen] == ["connected", "workflow_status", "completed"]
    assert seen[0]["status"] == "completed"
    assert (code, reason) == (1000, "workflow completed")


async def test_cancel_over_rest_closes_subscribers(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    async with server.open_ws(workflow_id) as ws:
        await receive_json(ws)
        assert (await client.delete(f"/api/v1/workflows/{workflow_id}")).status_code == 202
        code, reason, seen = await closed_with(ws)
    assert seen[-1]["status"] == "cancelled"
    assert (code, reason) == (1000, "workflow cancelled")


async def test_refusals_happen_at_the_handshake(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    status, body = await refused(server, "/api/v1/ws/workflows/unknown")
    assert (status, body["error"]) == (404, "workflow_not_found")
    for query in ("after=-1", "after=x", "after=1&after=2", "types=", "types=a%20b"):
        status, body = await refused(server, f"/api/v1/ws/workflows/{workflow_id}?{query}")
        assert status == 400, query
    status, _ = await refused(server, "/api/v1/ws/elsewhere")
    assert status == 404
    status, _ = await refused(server, "/api/v1/ws/system/events?after=0")
    assert status == 400


async def test_authentication_comes_first(start_server: StartServer) -> None:
    server = await start_server(api_keys=("k1",))
    async with server.client(api_key="k1") as client:
        workflow_id = await create_workflow(client)
    for path in (
        f"/api/v1/ws/workflows/{workflow_id}",
        f"/api/v1/ws/workflows/{workflow_id}?api_key=wrong",
        "/api/v1/ws/workflows/unknown",
        "/api/v1/ws/workflows/unknown?after=bad",
        f"/api/v1/ws/workflows/{workflow_id}?after=1&after=2",
        "/api/v1/ws/system/events",
    ):
        status, body = await refused(server, path)
        assert (status, body["error"]) == (401, "unauthorized"), path
    async with server.open_ws(workflow_id, "api_key=k1") as ws:
        assert (await receive_json(ws))["type"] == "connected"
    async with server.open_ws(workflow_id, extra_headers=[(b"x-api-key", b"k1")]) as ws:
        assert (await receive_json(ws))["type"] == "connected"
    bearer = [(b"authorization", b"Bearer k1")]
    async with server.open_ws(workflow_id, extra_headers=bearer) as ws:
        assert (await receive_json(ws))["type"] == "connected"


async def test_connection_limits_are_503(start_server: StartServer) -> None:
    server = await start_server(max_connections_per_workflow=1, max_connections=2)
    async with server.client() as client:
        first, second = await create_workflow(client), await create_workflow(client)
    async with server.open_ws(first) as ws1:
        await receive_json(ws1)
        status, body = await refused(server, f"/api/v1/ws/workflows/{first}")
        assert status == 503
        assert "limit" in body["message"]
        async with server.open_ws(second) as ws2:
            await receive_json(ws2)
            status, _ = await refused(server, "/api/v1/ws/system/events")
            assert status == 503


async def test_oversized_client_frame_closes_1009(start_server: StartServer) -> None:
    server = await start_server(max_client_frame_bytes=1024)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
    async with server.open_ws(workflow_id) as ws:
        await receive_json(ws)
        await ws.send_message("x" * 2048)
        code, _, _ = await closed_with(ws)
    assert code == 1009


async def test_broadcast_reaches_every_client(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    async with (
        server.open_ws(workflow_id) as workflow_ws,
        trio_websocket_system(server) as system_ws,
        server.open_ws(workflow_id, "types=synthesis") as filtered_ws,
    ):
        for ws in (workflow_ws, system_ws, filtered_ws):
            await receive_json(ws)
        response = await client.post("/api/v1/broadcast", json={"type": "maintenance", "in": 5})
        assert response.json()["delivered"] == 2
        for ws in (workflow_ws, system_ws):
            message = await receive_json(ws)
            assert message["type"] == "maintenance"
            assert message["in"] == 5
            assert "seq" not in message
            assert "workflow_id" not in message
        await publish(client, workflow_id, synthesis(1))
        assert (await receive_json(filtered_ws))["type"] == "synthesis"


def trio_websocket_system(server: Server, query: str = "") -> Any:
    from trio_websocket import open_websocket_url

    url = f"{server.ws}/api/v1/ws/system/events"
    return open_websocket_url(f"{url}?{query}" if query else url)


async def test_system_stream_sees_every_workflow(server: Server, client: httpx.AsyncClient) -> None:
    async with trio_websocket_system(server) as ws:
        connected = await receive_json(ws)
        assert connected["type"] == "connected"
        assert connected["workflow_id"] is None
        assert "status" not in connected
        assert "last_seq" not in connected
        first = await create_workflow(client, task="one")
        second = await create_workflow(client)
        await publish(client, first, RUNNING)
        await publish(client, second, RUNNING)
        seen = [await receive_json(ws) for _ in range(4)]
    # A new workflow is announced (no seq: not one of its events), then its events.
    assert [(event["type"], event["workflow_id"], event.get("seq")) for event in seen] == [
        ("workflow_created", first, None),
        ("workflow_created", second, None),
        ("workflow_status", first, 1),
        ("workflow_status", second, 1),
    ]
    assert seen[0]["task"] == "one"
    assert seen[0]["status"] == "pending"


async def test_system_stream_types_filter_can_leave_out_creations(server: Server) -> None:
    async with (
        server.client() as client,
        trio_websocket_system(server, "types=workflow_status") as ws,
    ):
        await receive_json(ws)
        workflow_id = await create_workflow(client)
        await publish(client, workflow_id, RUNNING)
        assert (await receive_json(ws))["type"] == "workflow_status"


async def test_a_broadcast_cannot_pose_as_a_creation(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/broadcast", json={"type": "workflow_created", "workflow_id": "x"}
    )
    assert response.status_code == 422


async def test_connections_listing(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    async with server.open_ws(workflow_id) as ws:
        connected = await receive_json(ws)
        await publish(client, workflow_id, RUNNING)
        await receive_json(ws)
        listing = (await client.get("/api/v1/connections")).json()
        assert listing["total"] == 1
        [connection] = listing["connections"]
        assert connection["connection_id"] == connected["connection_id"]
        assert connection["workflow_id"] == workflow_id
        assert connection["remote"].startswith("127.0.0.1:")
        assert connection["messages_sent"] == 2
        assert connection["connected_at"].endswith("Z")
        view = (await client.get(f"/api/v1/workflows/{workflow_id}")).json()
        assert view["subscribers"] == 1


async def test_vanished_client_leaves_nothing_behind(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, RUNNING)
    async with server.open_ws(workflow_id) as ws:
        await receive_json(ws)
        assert server.hub.connection_count() == 1
        assert websocket_tasks()
        # Drop the TCP connection with no closing handshake, as a crashed
        # client or a pulled cable would.
        await ws._stream.aclose()
    await wait_until(lambda: server.hub.connection_count() == 0)
    await wait_until(lambda: not websocket_tasks())
    await publish(client, workflow_id, synthesis(1))
    assert (await client.get(f"/api/v1/workflows/{workflow_id}")).json()["subscribers"] == 0
    [stats] = server.hub.actor_statistics()
    assert stats["subscribers"] == 0


async def test_error_after_accept_closes_1011(
    server: Server, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import felix.web.edge.websocket

    async def broken_writer(*_: Any) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(felix.web.edge.websocket, "_write", broken_writer)
    monkeypatch.setattr(felix.web.edge.websocket, "_write_direct", broken_writer)
    workflow_id = await create_workflow(client)
    async with server.open_ws(workflow_id) as ws:
        code, reason, _ = await closed_with(ws)
    assert (code, reason) == (1011, "internal error")
    assert server.hub.connection_count() == 0


@pytest.mark.parametrize("direct", [True, False], ids=["direct-writes", "asgi-sends"])
async def test_both_write_paths_keep_order_and_close(
    server: Server, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """The hot path (frames written straight to the socket) and the ASGI path
    (used with compression, HTTP/2 or TLS) deliver the same stream."""
    from felix.web.hypercorn import Connection

    if not direct:
        monkeypatch.setattr(Connection, "can_write_direct", property(lambda self: False))
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, [RUNNING, synthesis(0)])
    async with server.open_ws(workflow_id, "after=1", message_queue_size=500) as ws:
        assert (await receive_json(ws))["type"] == "connected"
        # Replayed, then live in batches of every size, then the end.
        for start in range(0, 300, 30):
            await publish(client, workflow_id, [synthesis(i) for i in range(start, start + 30)])
        await publish(client, workflow_id, {"type": "completed"})
        code, reason, seen = await closed_with(ws)
    seqs = [event["seq"] for event in seen if "seq" in event]
    assert seqs == list(range(2, 304))
    assert (code, reason) == (1000, "workflow completed")
