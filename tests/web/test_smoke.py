from __future__ import annotations

import httpx

from tests.conftest import Server, create_workflow, publish, receive_json


async def test_publish_reaches_subscriber(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    async with server.open_ws(workflow_id) as ws:
        connected = await receive_json(ws)
        assert connected["type"] == "connected"
        response = await publish(
            client, workflow_id, {"type": "workflow_status", "status": "running"}
        )
        assert response.status_code == 202
        event = await receive_json(ws)
        assert event["seq"] == 1
