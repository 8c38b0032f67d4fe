"""The core's bounds over real sockets: JSON depth, cut messages, history in bytes.

Each test reproduces a finding of issue 15's red-team pass against a real
server on port 0 and checks the refusal a client reads, or that the
server's later answers stay whole.
"""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import StartServer, create_workflow, publish, receive_json

MESSAGE_LIMIT = 400


def nested(levels: int) -> str:
    """``levels`` arrays inside one another, as JSON text."""
    return "[" * levels + "]" * levels


async def test_deep_metadata_is_refused_and_the_list_stays_readable(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with server.client() as http:
        # The red team's body: accepted before, and every list then answered 500.
        body = '{"metadata":{"a":' + nested(977) + "}}"
        response = await http.post(
            "/api/v1/workflows", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        assert response.json()["error"] == "invalid"
        assert "more than 64 levels" in response.json()["message"]
        assert "FELIX_MAX_JSON_DEPTH" in response.json()["message"]
        # As deep as the limit allows: accepted, and every read still answers.
        body = '{"metadata":{"a":' + nested(62) + "}}"
        response = await http.post(
            "/api/v1/workflows", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 201, response.text
        workflow_id = response.json()["workflow_id"]
        listed = await http.get("/api/v1/workflows")
        assert listed.status_code == 200
        assert listed.json()["total"] == 1
        assert (await http.get(f"/api/v1/workflows/{workflow_id}")).status_code == 200


async def test_deep_events_are_refused_and_events_stay_readable(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with server.client() as http:
        workflow_id = await create_workflow(http)
        url = f"/api/v1/workflows/{workflow_id}/events"
        headers = {"content-type": "application/json"}
        deep = '{"type":"completed","result":' + nested(977) + "}"
        response = await http.post(url, content=deep, headers=headers)
        assert response.status_code == 422
        assert "nested too deeply" in response.json()["message"]
        batch = '[{"type":"synthesis","content":"c","x":' + nested(63) + "}]"  # 65 deep
        assert (await http.post(url, content=batch, headers=headers)).status_code == 422
        single = '{"type":"completed","result":' + nested(63) + "}"  # 64 deep
        response = await http.post(url, content=single, headers=headers)
        assert response.status_code == 202, response.text
        events = await http.get(url)
        assert events.status_code == 200
        assert events.json()["events"][0]["result"] == json.loads(nested(63))
        assert (await http.get(f"/api/v1/workflows/{workflow_id}")).status_code == 200


async def test_the_depth_limit_is_a_setting(start_server: StartServer) -> None:
    server = await start_server(max_json_depth=3)
    async with server.client() as http:
        workflow_id = await create_workflow(http, metadata={"a": {"b": 1}})
        response = await http.post("/api/v1/workflows", json={"metadata": {"a": {"b": [1]}}})
        assert response.status_code == 422
        assert "more than 3 levels" in response.json()["message"]
        response = await publish(http, workflow_id, {"type": "completed", "result": [[[1]]]})
        assert response.status_code == 422
        response = await http.post("/api/v1/broadcast", json={"type": "n", "x": [[[1]]]})
        assert response.status_code == 422


async def test_deep_websocket_commands_get_a_command_error(start_server: StartServer) -> None:
    server = await start_server()
    async with server.client() as http:
        workflow_id = await create_workflow(http)
    async with server.open_ws(workflow_id) as ws:
        assert (await receive_json(ws))["type"] == "connected"
        await ws.send_message('{"type":"ping","x":' + nested(5000) + "}")
        reply = await receive_json(ws)
        assert reply["type"] == "command_error"
        assert "nested too deeply" in reply["message"]
        await ws.send_message('{"type":"ping"}')
        assert (await receive_json(ws))["type"] == "pong"


async def test_a_huge_type_or_status_is_not_echoed_whole(start_server: StartServer) -> None:
    server = await start_server()
    async with server.client() as http:
        workflow_id = await create_workflow(http)
        huge = "x" * 1_000_000
        bodies: list[Any] = [
            {"type": huge},
            {"type": "workflow_status", "status": huge},
            [{"type": "synthesis", "content": "c"}, {"type": huge}],
        ]
        for body in bodies:
            response = await publish(http, workflow_id, body)
            assert response.status_code == 422
            assert len(response.content) < MESSAGE_LIMIT, response.content[:500]
            assert "\u2026" in response.json()["message"]
        response = await http.get("/api/v1/workflows", params={"status": huge[:8000]})
        assert response.status_code == 422
        assert len(response.content) < MESSAGE_LIMIT


async def test_a_resume_past_the_byte_bound_is_not_recovered(start_server: StartServer) -> None:
    server = await start_server(history_bytes=20_000)
    event = {"type": "agent_output", "agent_id": "a", "content": "x" * 3000, "confidence": 0.5}
    async with server.client() as http:
        workflow_id = await create_workflow(http)
        for _ in range(10):
            assert (await publish(http, workflow_id, event)).status_code == 202
        events = (await http.get(f"/api/v1/workflows/{workflow_id}/events")).json()["events"]
        kept = [e["seq"] for e in events]
    assert kept == list(range(11 - len(kept), 11))
    assert 3 <= len(kept) <= 6  # 20,000 bytes of 3 KB events
    async with server.open_ws(workflow_id, "after=0") as ws:
        connected = await receive_json(ws)
        assert connected["recovered"] is False
        assert [(await receive_json(ws))["seq"] for _ in kept] == kept
    async with server.open_ws(workflow_id, f"after={kept[0] - 1}") as ws:
        assert (await receive_json(ws))["recovered"] is True
        await ws.aclose()
