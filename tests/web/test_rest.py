"""Every REST row of the contract, over a real socket against a real server."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import Server, StartServer, create_workflow, publish

RUNNING = {"type": "workflow_status", "status": "running"}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) >= {"error", "message"}
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


async def test_create_generates_an_id(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/workflows", json={"task": "t", "metadata": {"team": "a"}})
    assert response.status_code == 201
    body = response.json()
    assert re.fullmatch(r"wf_[0-9a-f]{12}", body["workflow_id"])
    assert body["status"] == "pending"
    assert body["task"] == "t"
    assert body["metadata"] == {"team": "a"}
    assert body["last_seq"] == 0
    assert body["created_at"].endswith("Z")


async def test_create_with_empty_body(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/workflows")
    assert response.status_code == 201


async def test_create_with_taken_id_is_409(client: httpx.AsyncClient) -> None:
    await create_workflow(client, workflow_id="job-1")
    body = error_of(await client.post("/api/v1/workflows", json={"workflow_id": "job-1"}), 409)
    assert "job-1" in body["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"workflow_id": "has space"}, "workflow_id"),
        ({"workflow_id": "x" * 65}, "workflow_id"),
        ({"workflow_id": 7}, "workflow_id"),
        ({"task": 3}, "task"),
        ({"metadata": [1]}, "metadata"),
        ({"colour": "red"}, "colour"),
        ([1, 2], "object"),
    ],
)
async def test_create_invalid_is_422(client: httpx.AsyncClient, body: Any, needle: str) -> None:
    error = error_of(await client.post("/api/v1/workflows", json=body), 422)
    assert needle in error["message"]


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/workflows", content=b'{"task": ', headers={"content-type": "application/json"}
    )
    assert "malformed JSON" in error_of(response, 422)["message"]


async def test_list_filters_and_pages(client: httpx.AsyncClient) -> None:
    ids = [await create_workflow(client) for _ in range(3)]
    await publish(client, ids[1], RUNNING)
    everything = (await client.get("/api/v1/workflows")).json()
    assert [w["workflow_id"] for w in everything["workflows"]] == ids
    assert everything["total"] == 3
    running = (await client.get("/api/v1/workflows", params={"status": "running"})).json()
    assert [w["workflow_id"] for w in running["workflows"]] == [ids[1]]
    assert running["total"] == 1
    page = (await client.get("/api/v1/workflows", params={"limit": 1, "offset": 1})).json()
    assert [w["workflow_id"] for w in page["workflows"]] == [ids[1]]
    assert page["total"] == 3


@pytest.mark.parametrize(
    "params", [{"status": "sleeping"}, {"limit": "0"}, {"limit": "x"}, {"offset": "-1"}]
)
async def test_list_bad_query_is_422(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    error_of(await client.get("/api/v1/workflows", params=params), 422)


async def test_get_unknown_is_404(client: httpx.AsyncClient) -> None:
    body = error_of(await client.get("/api/v1/workflows/nope"), 404)
    assert body["error"] == "workflow_not_found"


async def test_get_carries_the_state_events_built(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client, task="research")
    events = [
        RUNNING,
        {"type": "agent_spawned", "agent_id": "a1", "agent_type": "research", "spawn_time": 0.25},
        {"type": "agent_output", "agent_id": "a1", "content": "found it", "confidence": 0.8},
        {"type": "synthesis", "content": "draft", "confidence": 0.7},
        {"type": "error", "message": "tool timed out"},
        {"type": "synthesis", "content": "final", "final": True},
        {"type": "completed", "result": {"answer": 42}},
    ]
    assert (await publish(client, workflow_id, events)).status_code == 202
    view = (await client.get(f"/api/v1/workflows/{workflow_id}")).json()
    assert view["status"] == "completed"
    assert view["last_seq"] == 7
    assert view["subscribers"] == 0
    [agent] = view["agents"]
    assert agent["agent_id"] == "a1"
    assert agent["agent_type"] == "research"
    assert agent["spawn_time"] == 0.25
    assert agent["outputs"] == 1
    assert agent["confidence"] == 0.8
    assert view["synthesis"]["content"] == "final"
    assert view["result"] == {"answer": 42}
    assert view["error"]["message"] == "tool timed out"


async def test_publish_one_and_a_batch(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    one = await publish(client, workflow_id, RUNNING)
    assert one.status_code == 202
    assert one.json() == {"accepted": 1, "first_seq": 1, "last_seq": 1}
    batch = [{"type": "synthesis", "content": str(i)} for i in range(3)]
    many = await publish(client, workflow_id, batch)
    assert many.json() == {"accepted": 3, "first_seq": 2, "last_seq": 4}


async def test_batch_is_all_or_nothing(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    batch = [
        RUNNING,
        {"type": "synthesis", "content": "ok"},
        {"type": "agent_output", "agent_id": "a", "content": "x", "confidence": 1.5},
    ]
    body = error_of(await publish(client, workflow_id, batch), 422)
    assert body["index"] == 2
    assert "confidence" in body["message"]
    view = (await client.get(f"/api/v1/workflows/{workflow_id}")).json()
    assert view["last_seq"] == 0
    assert view["status"] == "pending"


async def test_batch_with_events_after_the_terminal_one_is_409(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    batch = [{"type": "completed"}, {"type": "synthesis", "content": "late"}]
    body = error_of(await publish(client, workflow_id, batch), 409)
    assert body["index"] == 1
    assert (await client.get(f"/api/v1/workflows/{workflow_id}")).json()["last_seq"] == 0


async def test_envelope_fields_are_refused(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    body = error_of(await publish(client, workflow_id, {**RUNNING, "seq": 9}), 422)
    assert "'seq'" in body["message"]


async def test_empty_batch_is_422(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    error_of(await publish(client, workflow_id, []), 422)


async def test_publish_to_unknown_is_404(client: httpx.AsyncClient) -> None:
    error_of(await publish(client, "nope", RUNNING), 404)


async def test_publish_after_terminal_is_409(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, {"type": "completed"})
    body = error_of(await publish(client, workflow_id, RUNNING), 409)
    assert "completed" in body["message"]


async def test_oversized_event_is_413(start_server: StartServer) -> None:
    server = await start_server(max_event_bytes=1000)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        big = {"type": "synthesis", "content": "x" * 1000}
        body = error_of(await publish(client, workflow_id, [RUNNING, big]), 413)
        assert body["index"] == 1


async def test_oversized_batch_and_body_are_413(start_server: StartServer) -> None:
    server = await start_server(max_batch_events=3, max_body_bytes=2000)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        error_of(await publish(client, workflow_id, [RUNNING] * 4), 413)
        huge = {"type": "synthesis", "content": "y" * 5000}
        error_of(await publish(client, workflow_id, huge), 413)
        assert (await client.get(f"/api/v1/workflows/{workflow_id}")).json()["last_seq"] == 0


async def test_list_events_after(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, [{"type": "synthesis", "content": str(i)} for i in range(5)])
    response = await client.get(
        f"/api/v1/workflows/{workflow_id}/events", params={"after": 2, "limit": 2}
    )
    assert response.status_code == 200
    assert [event["seq"] for event in response.json()["events"]] == [3, 4]
    error_of(await client.get("/api/v1/workflows/nope/events"), 404)


async def test_delete_cancels(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    response = await client.delete(f"/api/v1/workflows/{workflow_id}")
    assert response.status_code == 202
    view = (await client.get(f"/api/v1/workflows/{workflow_id}")).json()
    assert view["status"] == "cancelled"
    events = (await client.get(f"/api/v1/workflows/{workflow_id}/events")).json()["events"]
    assert events[-1]["type"] == "workflow_status"
    assert events[-1]["status"] == "cancelled"
    error_of(await client.delete(f"/api/v1/workflows/{workflow_id}"), 409)
    error_of(await client.delete("/api/v1/workflows/nope"), 404)


async def test_broadcast_validation(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/v1/broadcast", json={"type": "maintenance"})).status_code == 202
    for reserved in ("agent_output", "connected"):
        error_of(await client.post("/api/v1/broadcast", json={"type": reserved}), 422)
    error_of(await client.post("/api/v1/broadcast", json=["x"]), 422)


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    error_of(await client.get("/api/v1/nothing"), 404)
    error_of(await client.put("/api/v1/workflows"), 405)


async def test_connections_listing_is_empty_without_clients(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/connections")
    assert response.json() == {"connections": [], "total": 0}


class TestAuthentication:
    KEY = "s3cret-key"

    @pytest.fixture
    async def keyed(self, start_server: StartServer) -> Server:
        return await start_server(api_keys=(self.KEY, "next-key"))

    async def test_missing_and_wrong_keys_are_401(self, keyed: Server) -> None:
        async with keyed.client() as client:
            missing = error_of(await client.get("/api/v1/workflows"), 401)
            wrong = error_of(
                await client.get("/api/v1/workflows", headers={"X-API-Key": "nope"}), 401
            )
            assert missing == wrong

    async def test_401_comes_before_404(self, keyed: Server) -> None:
        async with keyed.client() as client:
            error_of(await client.get("/api/v1/workflows/unknown"), 401)
            error_of(await client.post("/api/v1/workflows/unknown/events", json=RUNNING), 401)

    @pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
    async def test_either_header_and_every_key_work(self, keyed: Server, header: str) -> None:
        for key in (self.KEY, "next-key"):
            value = f"Bearer {key}" if header == "Authorization" else key
            async with keyed.client(headers={header: value}) as client:
                assert (await client.post("/api/v1/workflows")).status_code == 201

    async def test_healthz_is_open(self, keyed: Server) -> None:
        async with keyed.client() as client:
            assert (await client.get("/healthz")).json() == {
                "status": "ok",
                "accepting": True,
                "broker": {"kind": "memory"},
            }


def complete(answer: bytes) -> bool:
    """Whether ``answer`` holds a whole HTTP response with a Content-Length."""
    head, found, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    return bool(found and length and len(body) >= int(length[1]))


async def test_chunked_body_over_the_limit_is_413(start_server: StartServer) -> None:
    server = await start_server(max_body_bytes=1000)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
    # Over a plain socket: the server may answer before the body is all sent,
    # which is the point, and an HTTP client library would complain about
    # the body it could not finish sending.
    host, port = server.http.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            f"POST /api/v1/workflows/{workflow_id}/events HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        with contextlib.suppress(trio.BrokenResourceError):
            for _ in range(10):
                await stream.send_all(b"1f4\r\n" + b" " * 500 + b"\r\n")
        answer = b""
        with trio.fail_after(5):
            while not complete(answer) and (chunk := await stream.receive_some()):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    body = answer.partition(b"\r\n\r\n")[2]
    assert json.loads(body)["error"] == "too_large"


async def test_cancel_conflict_has_no_index(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, {"type": "completed"})
    body = error_of(await client.delete(f"/api/v1/workflows/{workflow_id}"), 409)
    assert "index" not in body


async def test_healthz_is_503_while_draining(server: Server, client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    await server.hub.shutdown(grace=0)
    response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "shutting_down",
        "accepting": False,
        "broker": {"kind": "memory"},
    }
    error_of(await client.post("/api/v1/workflows"), 503)


async def test_stats(client: httpx.AsyncClient) -> None:
    await create_workflow(client)
    stats = (await client.get("/api/v1/stats")).json()
    assert stats["workflows"] == 1
    assert stats["workflows_by_status"]["pending"] == 1
    assert stats["connections"] == 0
    assert stats["tasks"] > 0
    assert stats["rss_bytes"] > 0


async def test_the_list_can_start_with_the_newest(server: Server) -> None:
    async with server.client() as http:
        ids = [await create_workflow(http) for _ in range(3)]
        oldest = (await http.get("/api/v1/workflows")).json()
        newest = (await http.get("/api/v1/workflows?order=newest&limit=2&offset=0")).json()
        second_page = (await http.get("/api/v1/workflows?order=newest&offset=2")).json()
        refused = await http.get("/api/v1/workflows?order=sideways")
    assert [w["workflow_id"] for w in oldest["workflows"]] == ids
    assert oldest["order"] == "oldest"
    assert [w["workflow_id"] for w in newest["workflows"]] == ids[::-1][:2]
    assert (newest["order"], newest["total"]) == ("newest", 3)
    assert [w["workflow_id"] for w in second_page["workflows"]] == ids[:1]
    assert refused.status_code == 422
    assert "order" in refused.json()["message"]
