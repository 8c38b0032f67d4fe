"""Several Felix nodes on one Redis behave as one server.

Each test starts a private redis-server (see conftest.py) and real Felix nodes
on it — in this process (Hypercorn on port 0, each with its own hub) or as
``felix serve`` subprocesses where a node must die — and drives them with real
HTTP and WebSocket clients.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

import felix
from felix._errors import BrokerUnavailable
from tests.conftest import (
    Server,
    StartServer,
    create_workflow,
    publish,
    raw_websocket,
    receive_json,
)
from tests.redis.conftest import RedisServer
from tests.test_cli import FELIX, start_serve


async def start_nodes(
    start_server: StartServer, redis: RedisServer, count: int = 2, **settings: Any
) -> list[Server]:
    """``count`` Felix nodes sharing ``redis``."""
    return [await start_server(broker=redis.url, **settings) for _ in range(count)]


def output(n: int) -> dict[str, Any]:
    return {"type": "agent_output", "agent_id": "a1", "content": f"out-{n}", "confidence": 0.5}


async def read_until_close(ws: WebSocketConnection) -> tuple[list[dict[str, Any]], int | None]:
    """Every frame up to the close, and the close code."""
    frames: list[dict[str, Any]] = []
    try:
        while True:
            frames.append(await receive_json(ws))
    except ConnectionClosed as closed:
        return frames, closed.reason.code if closed.reason else None


async def test_an_event_published_on_one_node_reaches_subscribers_on_every_node(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = await start_nodes(start_server, redis_server)
    async with a.client() as on_a, b.client() as on_b:
        workflow_id = await create_workflow(on_a, task="spread")
        async with a.open_ws(workflow_id) as ws_a, b.open_ws(workflow_id) as ws_b:
            for ws in (ws_a, ws_b):
                assert (await receive_json(ws))["type"] == "connected"
            assert (await publish(on_a, workflow_id, [output(1), output(2)])).status_code == 202
            assert (await publish(on_b, workflow_id, output(3))).json()["first_seq"] == 3
            assert (await publish(on_a, workflow_id, {"type": "completed"})).status_code == 202
            seen_a, code_a = await read_until_close(ws_a)
            seen_b, code_b = await read_until_close(ws_b)
    for seen, code in ((seen_a, code_a), (seen_b, code_b)):
        assert [frame["seq"] for frame in seen] == [1, 2, 3, 4]
        assert [frame.get("content") for frame in seen[:3]] == ["out-1", "out-2", "out-3"]
        assert code == 1000
    # The very frame the publishing node built reaches the other node's clients.
    assert seen_a == seen_b


async def test_concurrent_publishers_on_different_nodes_get_one_gap_free_order(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = await start_nodes(start_server, redis_server)
    publishers, per_publisher = 4, 15
    total = 2 * publishers * per_publisher
    async with a.client() as on_a, b.client() as on_b:
        workflow_id = await create_workflow(on_a)
        async with a.open_ws(workflow_id) as ws_a, b.open_ws(workflow_id) as ws_b:
            await receive_json(ws_a)
            await receive_json(ws_b)
            seqs: dict[str, int] = {}

            async def produce(http: httpx.AsyncClient, name: str) -> None:
                for n in range(per_publisher):
                    event = {"type": "synthesis", "content": f"{name}-{n}"}
                    response = await publish(http, workflow_id, event)
                    assert response.status_code == 202, response.text
                    seqs[f"{name}-{n}"] = response.json()["first_seq"]

            async with trio.open_nursery() as nursery:
                for index in range(publishers):
                    nursery.start_soon(produce, on_a, f"a{index}")
                    nursery.start_soon(produce, on_b, f"b{index}")
            # Every acknowledged event got its own seq, and together they leave no gap.
            assert sorted(seqs.values()) == list(range(1, total + 1))
            for ws in (ws_a, ws_b):
                frames = [await receive_json(ws) for _ in range(total)]
                assert [frame["seq"] for frame in frames] == list(range(1, total + 1))
                # Each event under the seq its publisher was told.
                assert {frame["content"]: frame["seq"] for frame in frames} == seqs
            # Each publisher's own events keep the order it sent them in.
            for name in {key.split("-")[0] for key in seqs}:
                mine = [seqs[f"{name}-{n}"] for n in range(per_publisher)]
                assert mine == sorted(mine)


async def test_workflows_look_the_same_from_every_node(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = await start_nodes(start_server, redis_server)
    async with a.client() as on_a, b.client() as on_b:
        workflow_id = await create_workflow(
            on_a, workflow_id="shared-1", task="t", metadata={"k": 1}
        )
        taken = await on_b.post("/api/v1/workflows", json={"workflow_id": "shared-1"})
        assert taken.status_code == 409
        assert taken.json()["error"] == "workflow_exists"
        spawned = {"type": "agent_spawned", "agent_id": "a1", "agent_type": "r", "spawn_time": 1}
        await publish(on_b, workflow_id, [spawned, output(1)])
        from_a = (await on_a.get(f"/api/v1/workflows/{workflow_id}")).json()
        from_b = (await on_b.get(f"/api/v1/workflows/{workflow_id}")).json()
        assert from_a == from_b
        assert from_a["status"] == "running"
        assert from_a["metadata"] == {"k": 1}
        assert [(agent["agent_id"], agent["outputs"]) for agent in from_a["agents"]] == [("a1", 1)]
        listed = (await on_a.get("/api/v1/workflows?status=running")).json()
        assert [w["workflow_id"] for w in listed["workflows"]] == [workflow_id]
        events_b = (await on_b.get(f"/api/v1/workflows/{workflow_id}/events?after=1")).json()
        assert [event["seq"] for event in events_b["events"]] == [2]
        assert events_b["last_seq"] == 2
        # Cancelled on one node, terminal on all.
        assert (await on_b.delete(f"/api/v1/workflows/{workflow_id}")).status_code == 202
        refused = await publish(on_a, workflow_id, output(2))
        assert refused.status_code == 409
        assert (await on_a.delete(f"/api/v1/workflows/{workflow_id}")).status_code == 409
        assert (await on_a.get(f"/api/v1/workflows/{workflow_id}")).json()["status"] == "cancelled"
        missing = await on_a.get("/api/v1/workflows/nowhere")
        assert missing.status_code == 404


async def test_a_client_resumes_on_another_node_without_loss_or_duplicates(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = await start_nodes(start_server, redis_server)
    async with a.client() as on_a:
        workflow_id = await create_workflow(on_a)
        async with a.open_ws(workflow_id) as ws:
            await receive_json(ws)
            await publish(on_a, workflow_id, [output(n) for n in range(5)])
            seen = [await receive_json(ws) for _ in range(3)]
        # Gone after seq 3; more is published meanwhile.
        await publish(on_a, workflow_id, [output(n) for n in range(5, 8)])
        last = seen[-1]["seq"]
        async with b.open_ws(workflow_id, f"after={last}") as again:
            connected = await receive_json(again)
            assert connected["recovered"] is True
            assert connected["last_seq"] == 8
            rest = [await receive_json(again) for _ in range(5)]
    assert [frame["seq"] for frame in seen + rest] == list(range(1, 9))


async def test_a_resume_ahead_of_the_nodes_copy_waits_for_it_to_catch_up(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    # B holds a copy; events then published on A reach B's copy through the
    # feed a moment later. A client resuming on B from A's newest seq must get
    # neither a duplicate nor "recovered: false".
    a, b = await start_nodes(start_server, redis_server)
    async with a.client() as on_a:
        workflow_id = await create_workflow(on_a)
        async with b.open_ws(workflow_id) as warm:
            await receive_json(warm)
            for n in range(20):
                last = (await publish(on_a, workflow_id, output(n))).json()["last_seq"]
                async with b.open_ws(workflow_id, f"after={last}") as resumed:
                    connected = await receive_json(resumed)
                    assert connected["recovered"] is True
                    assert connected["last_seq"] >= last
                    await publish(on_a, workflow_id, output(100 + n))
                    assert (await receive_json(resumed))["seq"] == last + 1
                    last += 1


async def test_system_stream_and_broadcasts_reach_every_node(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = await start_nodes(start_server, redis_server)
    async with a.client() as on_a, b.client() as on_b:
        system_url = f"{b.ws}/api/v1/ws/system/events"
        async with open_websocket_url(system_url) as system:
            assert (await receive_json(system))["workflow_id"] is None
            workflow_id = await create_workflow(on_a)
            created = await receive_json(system)
            assert (created["type"], created["workflow_id"]) == ("workflow_created", workflow_id)
            async with a.open_ws(workflow_id) as ws_a:
                await receive_json(ws_a)
                await publish(on_a, workflow_id, output(1))
                event = await receive_json(system)
                assert (event["workflow_id"], event["seq"]) == (workflow_id, 1)
                assert (await receive_json(ws_a))["seq"] == 1
                sent = await on_b.post("/api/v1/broadcast", json={"type": "maintenance"})
                assert sent.status_code == 202
                # From node B to the workflow subscriber on node A, and once on B.
                assert (await receive_json(ws_a))["type"] == "maintenance"
                assert (await receive_json(system))["type"] == "maintenance"
                await publish(on_b, workflow_id, output(2))
                assert (await receive_json(system))["seq"] == 2  # no second maintenance frame


async def test_redis_outage_fails_fast_keeps_clients_and_loses_nothing(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    node, other = await start_nodes(start_server, redis_server)
    async with node.client() as http:
        workflow_id = await create_workflow(http)
        async with node.open_ws(workflow_id) as ws:
            await receive_json(ws)
            await publish(http, workflow_id, [output(n) for n in range(3)])
            redis_server.stop()
            with trio.fail_after(5):
                refused = await publish(http, workflow_id, output(3))
            assert refused.status_code == 503
            assert refused.json()["error"] == "broker_unavailable"
            assert refused.headers["retry-after"] == "1"
            created = await http.post("/api/v1/workflows")
            assert (created.status_code, created.json()["error"]) == (503, "broker_unavailable")
            # A node that holds no copy of the workflow cannot load one: its
            # handshake is refused with the same answer, before the upgrade.
            sock, answer = await raw_websocket(other.http, f"/api/v1/ws/workflows/{workflow_id}")
            sock.close()
            assert answer.startswith(b"HTTP/1.1 503")
            assert b"retry-after: 1" in answer.lower()
            health = await http.get("/healthz")
            assert health.status_code == 503
            assert health.json()["broker"]["connected"] is False
            # The connected client is still served meanwhile.
            await ws.send_message("ping")
            received = [await receive_json(ws) for _ in range(3)]
            assert [frame["seq"] for frame in received] == [1, 2, 3]
            assert await ws.get_message() == "pong"
            redis_server.start()

            async def healthy() -> bool:
                return (await http.get("/healthz")).status_code == 200

            with trio.fail_after(10):
                while not await healthy():
                    await trio.sleep(0.05)
            accepted = await publish(http, workflow_id, output(4))
            assert accepted.json()["first_seq"] == 4  # nothing acknowledged was lost
            assert (await receive_json(ws))["seq"] == 4
        events = (await http.get(f"/api/v1/workflows/{workflow_id}/events")).json()["events"]
        assert [event["seq"] for event in events] == [1, 2, 3, 4]


async def test_finished_workflows_are_forgotten_on_every_node_after_retention(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = await start_nodes(start_server, redis_server, retention_seconds=0.3)
    async with a.client() as on_a, b.client() as on_b:
        workflow_id = await create_workflow(on_a)
        keep = await create_workflow(on_a)
        await publish(on_b, workflow_id, {"type": "completed"})  # B holds a copy too
        # Redis's own clock runs the TTL (retention 0.3 s), so the test waits for it.
        with trio.fail_after(10):
            while (await on_a.get(f"/api/v1/workflows/{workflow_id}")).status_code != 404:
                await trio.sleep(0.05)
        assert (await on_b.get(f"/api/v1/workflows/{workflow_id}")).status_code == 404
        listed = (await on_b.get("/api/v1/workflows")).json()
        assert [w["workflow_id"] for w in listed["workflows"]] == [keep]
        assert (await on_b.get(f"/api/v1/workflows/{keep}")).status_code == 200


async def read_into(ws: WebSocketConnection, seen: list[int]) -> None:
    """Append every frame's seq to ``seen`` until the connection ends."""
    while True:
        seen.append((await receive_json(ws))["seq"])


async def test_node_death_mid_stream_loses_nothing(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    env = {"FELIX_BROKER": redis_server.url}
    doomed, doomed_url, _ = await start_serve(nursery, **env)
    survivor, survivor_url, _ = await start_serve(nursery, **env)
    async with httpx.AsyncClient(base_url=survivor_url) as http:
        workflow_id = await create_workflow(http)
        stop_publishing = trio.Event()
        published = 0

        async def produce() -> None:
            nonlocal published
            while not stop_publishing.is_set():
                response = await publish(http, workflow_id, output(published))
                assert response.status_code == 202
                published = response.json()["last_seq"]
                await trio.sleep(0.002)

        seen: list[int] = []
        ws_base = doomed_url.replace("http://", "ws://")
        async with trio.open_nursery() as inner:
            url = f"{ws_base}/api/v1/ws/workflows/{workflow_id}?after=0"
            async with open_websocket_url(url) as ws:
                await receive_json(ws)
                inner.start_soon(produce)
                while len(seen) < 20:
                    seen.append((await receive_json(ws))["seq"])
                doomed.send_signal(signal.SIGKILL)  # no goodbye: the socket just dies
                with pytest.raises(ConnectionClosed), trio.fail_after(10):
                    await read_into(ws, seen)
            # The client comes back through the load balancer: another node.
            again = survivor_url.replace("http://", "ws://")
            resume = f"{again}/api/v1/ws/workflows/{workflow_id}?after={seen[-1]}"
            async with open_websocket_url(resume) as ws:
                connected = await receive_json(ws)
                assert connected["recovered"] is True
                while seen[-1] < connected["last_seq"] + 10:
                    seen.append((await receive_json(ws))["seq"])
            stop_publishing.set()
        assert seen == list(range(1, len(seen) + 1))
    survivor.send_signal(signal.SIGTERM)
    with trio.fail_after(10):
        assert await survivor.wait() == 0
    await doomed.wait()


async def test_serve_refuses_to_start_without_redis() -> None:
    with trio.fail_after(20):
        result = await trio.run_process(
            [*FELIX, "serve", "--port", "0", "--broker", "redis://:hunter2-pw@127.0.0.1:9/0"],
            capture_stderr=True,
            check=False,
        )
    log = result.stderr.decode()
    assert result.returncode == 1
    assert "cannot start: cannot reach Redis at 127.0.0.1:9" in log
    assert "hunter2" not in log


async def test_open_hub_raises_when_redis_cannot_be_reached() -> None:
    settings = felix.Settings(broker="redis://127.0.0.1:9/0", broker_timeout=1)
    with pytest.raises(BrokerUnavailable, match=r"cannot reach Redis at 127\.0\.0\.1:9"):
        async with felix.open_hub(settings):
            pass  # pragma: no cover


async def test_embedded_hubs_share_workflows(redis_server: RedisServer) -> None:
    settings = felix.Settings(broker=redis_server.url)
    async with felix.open_hub(settings) as one, felix.open_hub(settings) as two:
        workflow = await one.create_workflow(task="embedded")
        async with two.subscribe(workflow.workflow_id, after=0) as subscription:
            await one.send_workflow_event(workflow.workflow_id, "synthesis", {"content": "hi"})
            await one.send_workflow_event(workflow.workflow_id, "completed")
            frames = []
            while batch := await subscription.receive_batch():
                frames += [json.loads(frame.text) for frame in batch]
        assert [frame["type"] for frame in frames] == ["connected", "synthesis", "completed"]
        assert (await two.get_workflow(workflow.workflow_id)).status == "completed"


async def test_copies_nobody_watches_are_dropped_and_loaded_again(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = await start_nodes(start_server, redis_server, broker_idle_seconds=0.2)
    async with a.client() as on_a, b.client() as on_b:
        workflow_id = await create_workflow(on_a)
        await publish(on_b, workflow_id, output(1))
        # Node memory is bounded: unwatched copies go (Redis's clock is not
        # trio's, so the test waits for the real 0.2 s).
        with trio.fail_after(10):
            while a.hub.statistics()["workflows"] or b.hub.statistics()["workflows"]:
                await trio.sleep(0.05)
        assert (await publish(on_b, workflow_id, output(2))).json()["first_seq"] == 2
        async with a.open_ws(workflow_id, "after=0") as ws:
            assert (await receive_json(ws))["recovered"] is True
            assert [(await receive_json(ws))["seq"] for _ in range(2)] == [1, 2]
            await trio.sleep(0.4)  # past the idle time: a watched copy stays
            await publish(on_b, workflow_id, output(3))
            assert (await receive_json(ws))["seq"] == 3
        assert a.hub.statistics()["workflows"] == 1
