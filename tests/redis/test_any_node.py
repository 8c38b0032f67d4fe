"""Every REST route answers alike on the node that did not create the workflow.

Behind a load balancer a client's requests land on any node. Two ``felix serve``
processes share a private Redis; the workflow is created on node A, and every
route that names it is then called on node B, whose hub has never loaded it.
A route that read only its own node's actors answered 404 there (the token
route did, before the hub had one read API).
"""

from __future__ import annotations

import signal

import httpx
import trio
from trio_websocket import open_websocket_url

from tests.conftest import receive_json
from tests.redis.conftest import RedisServer
from tests.test_cli import start_serve

KEY = "any-node-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


def output(n: int) -> dict[str, object]:
    return {"type": "agent_output", "agent_id": "a1", "content": f"out-{n}", "confidence": 0.5}


async def test_every_route_works_on_the_node_that_did_not_create_the_workflow(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    env = {"FELIX_BROKER": redis_server.url, "FELIX_API_KEY": KEY}
    node_a, url_a, _ = await start_serve(nursery, **env)
    node_b, url_b, _ = await start_serve(nursery, **env)
    try:
        async with (
            httpx.AsyncClient(base_url=url_a, headers=AUTH) as on_a,
            httpx.AsyncClient(base_url=url_b, headers=AUTH) as on_b,
        ):
            created = await on_a.post("/api/v1/workflows", json={"task": "t", "metadata": {"k": 1}})
            assert created.status_code == 201
            workflow_id = created.json()["workflow_id"]
            path = f"/api/v1/workflows/{workflow_id}"

            # Reads first, while node B holds no copy of the workflow.
            minted = await on_b.post(f"{path}/tokens", json={"ttl_seconds": 60})
            assert minted.status_code == 201, minted.text
            token = minted.json()["token"]
            viewed = await on_b.get(path)
            assert viewed.status_code == 200
            assert viewed.json()["metadata"] == {"k": 1}
            events = await on_b.get(f"{path}/events")
            assert events.status_code == 200
            assert events.json()["events"] == []
            listed = await on_b.get("/api/v1/workflows")
            assert [w["workflow_id"] for w in listed.json()["workflows"]] == [workflow_id]

            # The token minted on B opens the WebSocket on A.
            ws_a = url_a.replace("http://", "ws://")
            async with open_websocket_url(
                f"{ws_a}/api/v1/ws/workflows/{workflow_id}?token={token}"
            ) as ws:
                connected = await receive_json(ws)
                assert connected["type"] == "connected"
                published = await on_b.post(f"{path}/events", json=output(1))
                assert published.status_code == 202
                assert (await receive_json(ws))["seq"] == 1

            cancelled = await on_b.delete(path)
            assert cancelled.status_code == 202
            assert (await on_a.get(path)).json()["status"] == "cancelled"
    finally:
        # A failed assertion must not leave the nodes running after the test.
        for node in (node_a, node_b):
            if node.returncode is None:
                node.send_signal(signal.SIGTERM)
    for node in (node_a, node_b):
        with trio.fail_after(10):
            assert await node.wait() == 0
