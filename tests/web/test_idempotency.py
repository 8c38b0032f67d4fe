"""Idempotent publishes over REST: ``Idempotency-Key``, on one node (no broker)."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from tests.conftest import Server, StartServer, create_workflow, wait_until

EVENT = {"type": "agent_output", "agent_id": "a1", "content": "x", "confidence": 0.5}


async def post(
    http: httpx.AsyncClient, workflow_id: str, body: Any, key: str | None
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await http.post(f"/api/v1/workflows/{workflow_id}/events", json=body, headers=headers)


async def seqs(http: httpx.AsyncClient, workflow_id: str) -> list[int]:
    response = await http.get(f"/api/v1/workflows/{workflow_id}/events")
    return [event["seq"] for event in response.json()["events"]]


def stall(server: Server, workflow_id: str) -> tuple[Any, trio.MemoryReceiveChannel[Any]]:
    """Make a workflow's actor stop taking commands: its inbox (one slot) is ours now."""
    actor = server.hub._actors[workflow_id]
    real = actor._send
    actor._send, taken = trio.open_memory_channel[Any](1)
    return real, taken


async def release(server: Server, workflow_id: str, real: Any, taken: Any) -> None:
    """Hand what the stalled inbox holds to the actor, and give it its inbox back."""
    actor = server.hub._actors[workflow_id]
    actor._send = real
    while True:
        try:
            command = taken.receive_nowait()
        except trio.WouldBlock:
            return
        await real.send(command)


async def test_a_repeat_applies_nothing_and_gets_the_first_answer(
    client: httpx.AsyncClient,
) -> None:
    workflow_id = await create_workflow(client)
    first = await post(client, workflow_id, [EVENT, EVENT], "batch-1")
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    await post(client, workflow_id, EVENT, None)  # seq 3, no key
    again = await post(client, workflow_id, [EVENT, EVENT], "batch-1")
    assert again.status_code == 202
    assert again.json() == first.json() == {"accepted": 2, "first_seq": 1, "last_seq": 2}
    assert again.headers["idempotent-replayed"] == "true"
    assert await seqs(client, workflow_id) == [1, 2, 3]
    # One event and a batch of just it are the same body.
    single = await post(client, workflow_id, EVENT, "one")
    assert (await post(client, workflow_id, [EVENT], "one")).json() == single.json()


async def test_the_same_key_with_another_body_is_422(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    assert (await post(client, workflow_id, EVENT, "k")).status_code == 202
    reused = await post(client, workflow_id, {**EVENT, "content": "other"}, "k")
    assert reused.status_code == 422
    assert reused.json()["error"] == "idempotency_key_reused"
    assert await seqs(client, workflow_id) == [1]


async def test_malformed_keys_are_422(client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    for key in ["", "x" * 129, "has space", "a/b", "ключ"]:
        headers = [(b"Idempotency-Key", key.encode())]
        response = await client.post(
            f"/api/v1/workflows/{workflow_id}/events", json=EVENT, headers=headers
        )
        assert response.status_code == 422, key
        assert response.json()["error"] == "invalid"
        assert "idempotency key" in response.json()["message"]
    assert await seqs(client, workflow_id) == []


async def test_keys_belong_to_one_workflow(client: httpx.AsyncClient) -> None:
    one = await create_workflow(client)
    two = await create_workflow(client)
    await post(client, one, EVENT, "k")
    await post(client, one, EVENT, None)
    response = await post(client, two, EVENT, "k")
    assert "idempotent-replayed" not in response.headers
    assert response.json()["first_seq"] == 1


async def test_a_repeat_of_the_last_event_of_a_finished_workflow_is_answered(
    client: httpx.AsyncClient,
) -> None:
    workflow_id = await create_workflow(client)
    done = await post(client, workflow_id, {"type": "completed"}, "the-end")
    again = await post(client, workflow_id, {"type": "completed"}, "the-end")
    assert again.status_code == 202
    assert again.json() == done.json()
    assert again.headers["idempotent-replayed"] == "true"
    # A new key, or none, is refused as before.
    assert (await post(client, workflow_id, EVENT, "new")).status_code == 409
    assert (await post(client, workflow_id, EVENT, None)).status_code == 409


async def test_a_repeat_while_the_first_is_being_applied_is_409(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    real, taken = stall(server, workflow_id)
    answers: list[httpx.Response] = []

    async def first() -> None:
        answers.append(await post(client, workflow_id, EVENT, "slow"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        # The first POST crosses a real socket: wait for it to reach the inbox.
        await wait_until(lambda: taken.statistics().current_buffer_used == 1)
        repeat = await post(client, workflow_id, EVENT, "slow")
        assert repeat.status_code == 409
        assert repeat.json()["error"] == "idempotency_in_progress"
        await release(server, workflow_id, real, taken)
    assert answers[0].status_code == 202
    replayed = await post(client, workflow_id, EVENT, "slow")
    assert replayed.json() == answers[0].json()
    assert replayed.headers["idempotent-replayed"] == "true"


async def test_only_the_most_recent_keys_are_kept(start_server: StartServer) -> None:
    server = await start_server(idempotency_keys=2)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        for key in ["a", "b", "c"]:
            await post(client, workflow_id, EVENT, key)
        kept = await post(client, workflow_id, EVENT, "c")
        assert kept.headers["idempotent-replayed"] == "true"
        forgotten = await post(client, workflow_id, EVENT, "a")
        assert "idempotent-replayed" not in forgotten.headers  # beyond the bound: applied again
        assert forgotten.json()["first_seq"] == 4


async def test_openapi_describes_the_key_and_the_producer_stream(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    publish = document["paths"]["/api/v1/workflows/{workflow_id}/events"]["post"]
    assert {"name": "Idempotency-Key", "in": "header"}.items() <= publish["parameters"][0].items()
    assert "idempotent-replayed" in publish["responses"]["202"]["headers"]
    stream = document["x-websockets"]["/api/v1/ws/publish"]
    assert stream["operationId"] == "publishStream"
    assert set(document["x-websockets"]) == {
        "/api/v1/ws/workflows/{workflow_id}",
        "/api/v1/ws/system/events",
        "/api/v1/ws/publish",
    }
