"""The producer stream, ``WS /api/v1/ws/publish``, over real sockets."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

import felix
from felix.web.edge.producer import _Fences
from tests.conftest import Server, StartServer, create_workflow, receive_json, wait_until
from tests.web.test_idempotency import release, stall

EVENT = {"type": "agent_output", "agent_id": "a1", "content": "x", "confidence": 0.5}
PATH = "/api/v1/ws/publish"
KEY = "key-one-0123456789abcdef"


def open_producer(server: Server, query: str = "") -> Any:
    return open_websocket_url(f"{server.ws}{PATH}{'?' + query if query else ''}")


async def start(ws: WebSocketConnection) -> dict[str, Any]:
    connected = await receive_json(ws)
    assert connected["type"] == "connected"
    assert connected["workflow_id"] is None
    return connected


async def send(ws: WebSocketConnection, **frame: Any) -> None:
    await ws.send_message(json.dumps(frame))


async def events_of(http: httpx.AsyncClient, workflow_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/api/v1/workflows/{workflow_id}/events")
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def output(n: int) -> dict[str, Any]:
    return {**EVENT, "content": str(n)}


async def test_a_frame_is_acked_with_the_rest_answer(server: Server) -> None:
    async with server.client() as http:
        workflow_id = await create_workflow(http)
        async with open_producer(server) as ws:
            connected = await start(ws)
            assert connected["window"] == server.settings.producer_window
            await send(ws, ref="a", workflow_id=workflow_id, events=[output(0), output(1)])
            await send(ws, ref=7, workflow_id=workflow_id, event=output(2))
            assert await receive_json(ws) == {
                "type": "ack", "ref": "a", "accepted": 2, "first_seq": 1, "last_seq": 2,
            }  # fmt: skip
            assert await receive_json(ws) == {
                "type": "ack", "ref": 7, "accepted": 1, "first_seq": 3, "last_seq": 3,
            }  # fmt: skip
        assert [e["content"] for e in await events_of(http, workflow_id)] == ["0", "1", "2"]


async def test_thousands_of_pipelined_frames_are_applied_and_answered_in_order(
    start_server: StartServer,
) -> None:
    server = await start_server(producer_window=256, inbox_size=16)
    frames = 3000
    async with server.client() as http:
        workflows = [await create_workflow(http) for _ in range(3)]
        async with open_producer(server) as ws:
            await start(ws)

            async def produce() -> None:
                # Never waits for an answer: everything is in flight at once.
                for n in range(frames):
                    await send(ws, ref=n, workflow_id=workflows[n % 3], event=output(n))

            answers: list[dict[str, Any]] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                for _ in range(frames):
                    answers.append(await receive_json(ws))
        assert [answer["ref"] for answer in answers] == list(range(frames))
        assert {answer["type"] for answer in answers} == {"ack"}
        for index, workflow_id in enumerate(workflows):
            mine = [answer for answer in answers if answer["ref"] % 3 == index]
            assert [answer["first_seq"] for answer in mine] == list(range(1, len(mine) + 1))
            events = await events_of(http, workflow_id)
            assert [int(event["content"]) for event in events] == [a["ref"] for a in mine]


async def nack(ws: WebSocketConnection, text: str | bytes) -> dict[str, Any]:
    await ws.send_message(text)
    answer = await receive_json(ws)
    assert answer["type"] == "nack", answer
    assert set(answer) >= {"ref", "error", "message"}
    return answer


async def test_every_refusal_is_a_nack_and_the_stream_goes_on(start_server: StartServer) -> None:
    server = await start_server(max_batch_events=3, max_event_bytes=300)
    async with server.client() as http:
        workflow_id = await create_workflow(http)
        finished = await create_workflow(http)
        await http.post(f"/api/v1/workflows/{finished}/events", json={"type": "completed"})
        async with open_producer(server) as ws:
            await start(ws)

            def frame(**fields: Any) -> str:
                return json.dumps({"ref": "r", "workflow_id": workflow_id, **fields})

            texts: list[str | bytes] = ["[1]", "3", "not json", '"text"', b"\x00binary"]
            for text in texts:
                refused = await nack(ws, text)
                assert (refused["ref"], refused["error"]) == (None, "invalid_event"), text
            bad_ref = await nack(ws, json.dumps({"ref": [1], "workflow_id": workflow_id}))
            assert (bad_ref["ref"], bad_ref["error"]) == (None, "invalid")
            expected = {
                frame(event=EVENT, workflow_id="no such/id"): "invalid",
                frame(event=EVENT, workflow_id="wf_unknown"): "workflow_not_found",
                frame(): "invalid",
                frame(events=[], event=EVENT): "invalid",
                frame(events=[]): "invalid",
                frame(events={"type": "x"}): "invalid",
                frame(events=[EVENT] * 4): "too_large",
                frame(event={**EVENT, "content": "x" * 400}): "too_large",
                frame(event={"type": "nope"}): "invalid",
                frame(event=EVENT, workflow_id=finished): "workflow_conflict",
                frame(event=EVENT, idempotency_key="bad key"): "invalid",
            }
            for text, code in expected.items():
                refused = await nack(ws, text)
                assert (refused["ref"], refused["error"]) == ("r", code), refused
            second_bad = await nack(ws, frame(events=[EVENT, {"type": "synthesis"}]))
            assert (second_bad["error"], second_bad["index"]) == ("invalid", 1)
            await send(ws, ref="k", workflow_id=workflow_id, event=EVENT, idempotency_key="k1")
            assert (await receive_json(ws))["type"] == "ack"
            reused = await nack(ws, frame(event=output(9), idempotency_key="k1"))
            assert reused["error"] == "idempotency_key_reused"
            await send(ws, ref="last", workflow_id=workflow_id, event=EVENT)
            assert await receive_json(ws) == {
                "type": "ack", "ref": "last", "accepted": 1, "first_seq": 2, "last_seq": 2,
            }  # fmt: skip


async def test_a_repeated_key_is_answered_without_being_applied(server: Server) -> None:
    async with server.client() as http:
        workflow_id = await create_workflow(http)
        rest = await http.post(
            f"/api/v1/workflows/{workflow_id}/events", json=EVENT, headers={"Idempotency-Key": "k"}
        )
        async with open_producer(server) as ws:
            await start(ws)
            await send(ws, ref=1, workflow_id=workflow_id, events=[EVENT], idempotency_key="k")
            replayed = await receive_json(ws)
        assert replayed == {"type": "ack", "ref": 1, **rest.json(), "idempotent_replayed": True}
        assert len(await events_of(http, workflow_id)) == 1


async def test_a_full_inbox_is_a_nack_with_retry_after_and_fences_its_workflow(
    start_server: StartServer,
) -> None:
    server = await start_server(publish_timeout=0.3)
    async with server.client() as http:
        busy = await create_workflow(http)
        other = await create_workflow(http)
        real, taken = stall(server, busy)
        async with open_producer(server) as ws:
            await start(ws)
            await send(ws, ref=1, workflow_id=busy, event=output(1))  # takes the one slot
            await send(ws, ref=2, workflow_id=busy, event=output(2))  # waits, then refused
            await send(ws, ref=3, workflow_id=busy, event=output(3))  # fenced: not behind 2
            await send(ws, ref=4, workflow_id=other, event=output(4))  # another workflow: fine
            await wait_until(lambda: server.hub._actors[other].state.last_seq == 1)
            await release(server, busy, real, taken)
            answers = [await receive_json(ws) for _ in range(4)]
        assert [(a["ref"], a["type"]) for a in answers] == [
            (1, "ack"), (2, "nack"), (3, "nack"), (4, "ack"),
        ]  # fmt: skip
        for refused in answers[1:3]:
            assert refused["error"] == "inbox_full"
            assert refused["retry_after"] >= 1
        assert "ref 2" in answers[2]["message"]
        assert [e["content"] for e in await events_of(http, busy)] == ["1"]


async def test_a_fence_lasts_retry_after_seconds(autojump_clock: trio.testing.MockClock) -> None:
    fences = _Fences()
    fences.check("wf")  # nothing fenced
    fences.refuse("wf", 2, felix.InboxFull("busy"))
    fences.refuse("wf2", 3, felix.InvalidEvent("not retryable: no fence"))
    fences.check("wf2")
    with pytest.raises(felix.FelixError) as refused:
        fences.check("wf")
    assert refused.value.to_json()["error"] == "inbox_full"
    assert refused.value.retry_after == 1  # type: ignore[attr-defined]
    await trio.sleep(1)
    fences.check("wf")


async def test_a_producer_that_leaves_mid_stream_gets_whole_frames_applied_in_order(
    server: Server,
) -> None:
    async with server.client() as http:
        workflow_id = await create_workflow(http)
        async with open_producer(server) as ws:
            await start(ws)
            for n in range(500):
                # Two events a frame: a frame applied in part would show.
                await send(ws, ref=n, workflow_id=workflow_id, events=[output(n), output(n)])
            # Leaves without reading a single answer.
        await trio.testing.wait_all_tasks_blocked()
        events = await events_of(http, workflow_id)
        contents = [int(event["content"]) for event in events]
        applied = len(contents) // 2
        assert contents == [n for n in range(applied) for _ in range(2)]
        assert [event["seq"] for event in events] == list(range(1, len(events) + 1))


async def test_a_frame_over_the_body_limit_closes_1009(start_server: StartServer) -> None:
    server = await start_server(max_body_bytes=1000)
    async with server.client() as http:
        workflow_id = await create_workflow(http)
    async with open_producer(server) as ws:
        await start(ws)
        await send(ws, ref=1, workflow_id=workflow_id, event={**EVENT, "content": "x" * 2000})
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason is not None
    assert closed.value.reason.code == 1009


async def test_only_the_api_key_opens_the_stream(start_server: StartServer) -> None:
    server = await start_server(api_keys=(KEY,))
    async with server.client(api_key=KEY) as http:
        workflow_id = await create_workflow(http)
        token = (await http.post(f"/api/v1/workflows/{workflow_id}/tokens")).json()["token"]
    for query in ["", f"token={token}", "api_key=wrong"]:
        with pytest.raises(ConnectionRejected) as refused:
            async with open_producer(server, query):
                pass
        assert refused.value.status_code == 401, query
    async with open_producer(server, f"api_key={KEY}") as ws:
        await start(ws)


async def test_shutdown_answers_what_was_read_then_closes_1001(server: Server) -> None:
    async with server.client() as http:
        workflow_id = await create_workflow(http)
    async with open_producer(server) as ws:
        await start(ws)
        await send(ws, ref=1, workflow_id=workflow_id, event=EVENT)
        assert (await receive_json(ws))["type"] == "ack"
        await server.hub.shutdown(grace=0)
        with pytest.raises(ConnectionClosed) as closed:
            await receive_json(ws)
    assert closed.value.reason is not None
    assert (closed.value.reason.code, closed.value.reason.reason) == (1001, "server shutting down")


async def test_each_frame_counts_against_the_publish_rate_limit(
    start_server: StartServer,
) -> None:
    server = await start_server(rate_publish=0.001, rate_publish_burst=2)
    async with server.client() as http:
        workflow_id = await create_workflow(http)
    async with open_producer(server) as ws:
        await start(ws)
        for n in range(4):
            await send(ws, ref=n, workflow_id=workflow_id, event=output(n))
        answers = [await receive_json(ws) for _ in range(4)]
    assert [answer["type"] for answer in answers] == ["ack", "ack", "nack", "nack"]
    assert {answer["error"] for answer in answers[2:]} == {"rate_limited"}
    assert all(answer["retry_after"] >= 1 for answer in answers[2:])


async def test_the_window_holds_a_bounded_number_of_bytes(start_server: StartServer) -> None:
    server = await start_server(producer_window_bytes=1100)
    async with server.client() as http:
        stalled = await create_workflow(http)
        other = await create_workflow(http)
        real, taken = stall(server, stalled)
        async with open_producer(server) as ws:
            await start(ws)
            big = {**EVENT, "content": "x" * 400}  # a frame of about 520 bytes
            await send(ws, ref=0, workflow_id=stalled, event=big)  # unanswered for now
            await send(ws, ref=1, workflow_id=other, event=big)  # applied, answered after 0
            await send(ws, ref=2, workflow_id=other, event=big)  # over the budget: not read
            await wait_until(lambda: server.hub._actors[other].state.last_seq == 1)
            await trio.testing.wait_all_tasks_blocked()
            assert server.hub._actors[other].state.last_seq == 1
            await release(server, stalled, real, taken)
            answers = [await receive_json(ws) for _ in range(3)]
        assert [(a["ref"], a["type"]) for a in answers] == [(0, "ack"), (1, "ack"), (2, "ack")]
        assert server.hub._actors[other].state.last_seq == 2
    async with open_producer(server) as ws:
        await start(ws)
        await send(ws, ref="r" * 257, workflow_id=other, event=EVENT)
        refused = await receive_json(ws)
    assert (refused["ref"], refused["error"]) == (None, "invalid")


async def test_a_frame_may_be_as_large_as_a_rest_body(server: Server) -> None:
    # The producer stream takes what POST …/events takes (FELIX_MAX_BODY_BYTES,
    # 1 MiB), not FELIX_MAX_CLIENT_FRAME_BYTES (64 KiB), which still bounds the
    # subscribers' WebSockets.
    assert server.settings.max_client_frame_bytes < 300_000 < server.settings.max_body_bytes
    async with server.client() as http:
        workflow_id = await create_workflow(http)
    batch = [{**EVENT, "content": "x" * 50_000} for _ in range(6)]
    async with open_producer(server) as ws:
        await start(ws)
        await send(ws, ref=1, workflow_id=workflow_id, events=batch)
        answer = await receive_json(ws)
    assert (answer["type"], answer["accepted"]) == ("ack", 6)
    subscriber = f"{server.ws}/api/v1/ws/workflows/{workflow_id}"
    async with open_websocket_url(subscriber) as ws:
        await receive_json(ws)  # connected
        await ws.send_message("x" * 100_000)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason is not None
    assert closed.value.reason.code == 1009
