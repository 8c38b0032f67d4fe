"""The history budget with the Redis broker: it bounds each node's own copies.

Redis keeps every workflow's stream (trimmed to FELIX_HISTORY_SIZE events);
a node's local copies are what FELIX_HISTORY_BUDGET_BYTES bounds. A client
resuming on a node whose copy dropped events for the budget still gets them,
from Redis, with ``recovered: true``.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import StartServer, create_workflow, publish, receive_json, wait_until
from tests.redis.conftest import RedisServer

BUDGET = 12_000


def output(n: int) -> dict[str, Any]:
    return {
        "type": "agent_output",
        "agent_id": "a1",
        "content": f"{n:04}" + "x" * 1500,
        "confidence": 0.5,
    }


async def test_a_nodes_copies_stay_within_its_budget_and_resumes_read_redis(
    start_server: StartServer, redis_server: RedisServer
) -> None:
    a = await start_server(broker=redis_server.url)
    b = await start_server(
        broker=redis_server.url, history_budget_bytes=BUDGET, broker_idle_seconds=0.5
    )
    budget = b.hub.history_budget
    async with a.client() as on_a:
        workflow_id = await create_workflow(on_a)
        for n in range(20):
            assert (await publish(on_a, workflow_id, output(n))).status_code == 202
        async with b.open_ws(workflow_id) as warm:
            connected = await receive_json(warm)
            assert connected["last_seq"] == 20
            # B loaded its copy from Redis: only what fits in B's budget stays.
            assert 0 < budget.total <= BUDGET
            assert budget.evicted > 0
            held = sum(actor.state.history.nbytes for actor in b.hub._actors.values())
            assert budget.total == held
            async with b.open_ws(workflow_id, "after=0") as resumed:
                connected = await receive_json(resumed)
                assert connected["recovered"] is True
                replayed = [(await receive_json(resumed))["seq"] for _ in range(20)]
                assert replayed == list(range(1, 21))
                assert (await publish(on_a, workflow_id, output(20))).status_code == 202
                assert (await receive_json(resumed))["seq"] == 21
            assert budget.total <= BUDGET
        # Nobody watches B's copy any more: it retires and gives its bytes back.
        await wait_until(lambda: budget.total == 0, timeout=10)
        assert not b.hub._actors
