"""Idempotent publishes across nodes: the key is checked inside Redis's atomic commit.

Real nodes on a private redis-server (see conftest.py): a repeat on another
node is answered, not applied; the gap the delivery page used to document
(Redis dies after applying a commit, before the node hears the reply) is
closed by retrying with the same key on any node; and a property test drives
random retries, lost replies, abandoned requests and node switches.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import hypothesis.strategies as st
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from trio_websocket import open_websocket_url

import felix
from felix._broker.redis import RedisBroker
from felix._errors import BrokerUnavailable, IdempotencyInProgress
from tests.conftest import StartServer, create_workflow, receive_json
from tests.redis.conftest import RedisServer
from tests.redis.test_cluster import output, start_nodes


async def post(http: httpx.AsyncClient, workflow_id: str, body: Any, key: str) -> httpx.Response:
    return await http.post(
        f"/api/v1/workflows/{workflow_id}/events", json=body, headers={"Idempotency-Key": key}
    )


async def contents(http: httpx.AsyncClient, workflow_id: str) -> list[str]:
    response = await http.get(f"/api/v1/workflows/{workflow_id}/events")
    return [event["content"] for event in response.json()["events"]]


async def test_a_repeat_on_another_node_is_answered_not_applied(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = await start_nodes(start_server, redis_server, idempotency_keys=3)
    async with a.client() as on_a, b.client() as on_b:
        workflow_id = await create_workflow(on_a)
        first = await post(on_a, workflow_id, [output(0), output(1)], "k0")
        again = await post(on_b, workflow_id, [output(0), output(1)], "k0")
        assert again.status_code == 202
        assert again.json() == first.json() == {"accepted": 2, "first_seq": 1, "last_seq": 2}
        assert again.headers["idempotent-replayed"] == "true"
        reused = await post(on_b, workflow_id, output(9), "k0")
        assert (reused.status_code, reused.json()["error"]) == (422, "idempotency_key_reused")
        assert await contents(on_b, workflow_id) == ["out-0", "out-1"]
        # The table in Redis keeps the most recent FELIX_IDEMPOTENCY_KEYS.
        for n in range(1, 5):
            await post(on_b if n % 2 else on_a, workflow_id, output(n + 1), f"k{n}")
        assert isinstance(a.hub.broker, RedisBroker)
        table = f"felix:wf:{workflow_id}:keys"
        assert sorted(await a.hub.broker._redis.hkeys(table)) == ["k2", "k3", "k4"]
        # A finished workflow's keys expire with it.
        await post(on_a, workflow_id, {"type": "completed"}, "end")
        assert await a.hub.broker._redis.pttl(table) > 0


def die_mid_commit(broker: RedisBroker, redis: RedisServer) -> None:
    """Make ``broker``'s next commit reach Redis, then lose Redis before the reply."""
    script = broker._commit

    def commit(**kwargs: Any) -> Awaitable[Any]:
        async def run() -> Any:
            await script(**kwargs)
            broker._commit = script
            redis.stop()
            raise ConnectionError("Redis went away before its reply was read")

        return run()

    broker._commit = commit  # type: ignore[assignment]


async def healthy(http: httpx.AsyncClient) -> None:
    with trio.fail_after(15):
        while (await http.get("/healthz")).status_code != 200:
            await trio.sleep(0.05)


async def test_redis_dying_mid_commit_then_a_retry_elsewhere_applies_once(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = await start_nodes(start_server, redis_server)
    async with a.client() as on_a, b.client() as on_b:
        workflow_id = await create_workflow(on_a)
        await post(on_a, workflow_id, output(0), "before")
        assert isinstance(a.hub.broker, RedisBroker)
        die_mid_commit(a.hub.broker, redis_server)
        lost = await post(on_a, workflow_id, output(1), "the-one")
        # The producer is told nothing was acknowledged, and retries.
        assert (lost.status_code, lost.json()["error"]) == (503, "broker_unavailable")
        redis_server.start()  # append-only file: the commit Redis applied is still there
        await healthy(on_a)
        await healthy(on_b)
        retried = await post(on_b, workflow_id, output(1), "the-one")
        assert retried.status_code == 202
        assert retried.json() == {"accepted": 1, "first_seq": 2, "last_seq": 2}
        assert retried.headers["idempotent-replayed"] == "true"
        # The node whose copy missed the reply answers the same.
        assert (await post(on_a, workflow_id, output(1), "the-one")).json() == retried.json()
        assert await contents(on_a, workflow_id) == ["out-0", "out-1"]
        assert await contents(on_b, workflow_id) == ["out-0", "out-1"]


# --- property: random retries, lost replies, abandoned requests, node switches ---------

#: What happens to one attempt at sending the producer's current message, and where.
attempt = st.tuples(st.sampled_from(["ok", "lost", "abandon"]), st.integers(0, 1))


def lossy(broker: RedisBroker) -> Callable[[bool], None]:
    """Wrap ``broker.commit``; the returned call arms (or disarms) losing its next reply."""
    real = broker.commit
    lose = [False]

    async def commit(*args: Any, **kwargs: Any) -> Any:
        outcome = await real(*args, **kwargs)
        if lose[0]:
            lose[0] = False
            raise BrokerUnavailable("the reply was lost")
        return outcome

    broker.commit = commit  # type: ignore[method-assign]
    return lambda armed: lose.__setitem__(0, armed)


async def send_until_answered(hub: felix.Hub, workflow_id: str, n: int) -> felix.PublishResult:
    """Publish message ``n`` with its key, waiting out a copy still being applied."""
    with trio.fail_after(10):
        while True:
            try:
                return await hub.publish(workflow_id, [output(n)], idempotency_key=f"m{n}")
            except IdempotencyInProgress:
                await trio.sleep(0.01)  # an abandoned attempt is still in the inbox


async def produce(url: str, attempts: list[tuple[str, int]]) -> None:
    config = felix.Settings(broker=url)
    async with felix.open_hub(config) as one, felix.open_hub(config) as two:
        hubs = [one, two]
        loses = []
        for hub in hubs:
            assert isinstance(hub.broker, RedisBroker)
            loses.append(lossy(hub.broker))
        workflow_id = (await one.create_workflow()).workflow_id
        sent = 0  # messages acknowledged so far; the producer is sending message ``sent``
        for fate, node in attempts:
            hub = hubs[node]
            if fate == "ok":
                result = await send_until_answered(hub, workflow_id, sent)
                assert (result.first_seq, result.last_seq) == (sent + 1, sent + 1)
                sent += 1
            elif fate == "lost":
                loses[node](True)
                try:
                    result = await send_until_answered(hub, workflow_id, sent)
                except BrokerUnavailable:
                    pass  # no answer: the producer will retry the same message
                else:
                    # An abandoned attempt queued before it took the loss, or was
                    # applied already: this attempt was answered.
                    assert (result.first_seq, result.last_seq) == (sent + 1, sent + 1)
                    sent += 1
                loses[node](False)
            else:
                # The producer gives up on the connection before the answer.
                with contextlib.suppress(IdempotencyInProgress):
                    await hub.submit(workflow_id, [output(sent)], idempotency_key=f"m{sent}")
        # The producer retries its last unanswered message until it is answered.
        await send_until_answered(one, workflow_id, sent)
        await trio.testing.wait_all_tasks_blocked()
        events = await two.get_events(workflow_id)
        assert [event.seq for event in events] == list(range(1, sent + 2))
        assert [event.fields["content"] for event in events] == [
            f"out-{n}" for n in range(sent + 1)
        ]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(attempt, max_size=12))
def test_retries_drops_and_node_switches_never_duplicate_or_lose(
    redis_server: RedisServer, attempts: list[tuple[str, int]]
) -> None:
    trio.run(produce, redis_server.url, attempts)


async def test_the_producer_stream_on_another_node_answers_a_repeat(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a, b = await start_nodes(start_server, redis_server)
    async with a.client() as on_a:
        workflow_id = await create_workflow(on_a)
        first = await post(on_a, workflow_id, output(0), "k")
        async with open_websocket_url(f"{b.ws}/api/v1/ws/publish") as ws:
            assert (await receive_json(ws))["type"] == "connected"
            for ref, key in [(1, "k"), (2, "k2")]:
                frame = {"ref": ref, "workflow_id": workflow_id, "event": output(ref - 1)}
                await ws.send_message(json.dumps({**frame, "idempotency_key": key}))
            replayed, applied = await receive_json(ws), await receive_json(ws)
        assert replayed == {"type": "ack", "ref": 1, **first.json(), "idempotent_replayed": True}
        assert (applied["type"], applied["first_seq"]) == ("ack", 2)
        assert await contents(on_a, workflow_id) == ["out-0", "out-1"]
