"""The hub used from a plain Trio program, without the web layer."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

import felix
import felix._runtime.actor


async def test_the_contract_example_runs_without_a_server() -> None:
    async with felix.open_hub() as hub:
        wf = await hub.create_workflow(task="research")
        async with hub.subscribe(wf.workflow_id, after=0) as stream:
            spawned = await hub.send_workflow_event(
                wf.workflow_id,
                "agent_spawned",
                {"agent_id": "a1", "agent_type": "research", "spawn_time": 0.1},
            )
            assert spawned.seq == 1
            event = await hub.broadcast_to_workflow(
                wf.workflow_id, {"type": "synthesis", "content": "so far"}
            )
            assert event.seq == 2
            assert await hub.broadcast_to_all({"type": "notice", "text": "hi"}) == 1
            await hub.cancel(wf.workflow_id)
            frames = [json.loads(text) async for text in stream]
        assert [frame["type"] for frame in frames] == [
            "connected",
            "agent_spawned",
            "synthesis",
            "notice",
            "workflow_status",
        ]
        assert (stream.close_code, stream.close_reason) == (1000, "workflow cancelled")
        assert (await hub.get_workflow(wf.workflow_id)).status == "cancelled"
        assert hub.connections() == []


async def test_connections_metadata() -> None:
    async with felix.open_hub() as hub:
        wf = await hub.create_workflow()
        async with hub.subscribe(wf.workflow_id, remote="10.0.0.1:5000") as stream:
            [info] = hub.connections()
            assert info.workflow_id == wf.workflow_id
            assert info.remote == "10.0.0.1:5000"
            assert info.messages_sent == 0
            await stream.receive_batch()
            assert hub.connections()[0].messages_sent == 1
            assert (await hub.get_workflow(wf.workflow_id)).subscribers == 1
        assert hub.connections() == []


async def test_finished_workflows_are_forgotten_after_retention(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with felix.open_hub(felix.Settings(retention_seconds=60)) as hub:
        wf = await hub.create_workflow()
        running = await hub.create_workflow()
        await hub.send_workflow_event(wf.workflow_id, "completed")
        await trio.sleep(59)
        assert (await hub.get_workflow(wf.workflow_id)).status == "completed"
        await trio.sleep(2)
        with pytest.raises(felix.WorkflowNotFound):
            await hub.get_workflow(wf.workflow_id)
        with pytest.raises(felix.WorkflowNotFound):
            await hub.send_workflow_event(wf.workflow_id, "completed")
        # Unfinished workflows have no retention clock.
        assert (await hub.get_workflow(running.workflow_id)).status == "pending"
        assert [w.workflow_id for w in (await hub.list_workflows())[0]] == [running.workflow_id]


async def test_max_workflows() -> None:
    async with felix.open_hub(felix.Settings(max_workflows=2)) as hub:
        await hub.create_workflow()
        await hub.create_workflow()
        with pytest.raises(felix.CapacityError):
            await hub.create_workflow()


async def test_full_inbox_times_out_with_503(autojump_clock: trio.testing.MockClock) -> None:
    # An actor that is never started stands for one too busy to keep up.
    actor = felix._runtime.actor.WorkflowActor(
        state=felix.WorkflowState(workflow_id="busy", created_at="2026-11-26T00:00:00.000000Z"),
        retention_seconds=60,
        publish_timeout=2,
        max_subscribers=10,
        on_frames=lambda frames: None,
        on_exit=lambda actor: None,
        inbox_size=1,
    )
    batch = [("synthesis", {"content": "x"})]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor.publish, batch)  # fills the one slot
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        with pytest.raises(felix.InboxFull) as info:
            await actor.publish(batch)
        assert trio.current_time() - start == pytest.approx(2)
        assert info.value.http_status == 503
        assert info.value.retry_after >= 1
        nursery.cancel_scope.cancel()


async def test_a_publisher_cancelled_before_it_publishes_publishes_nothing() -> None:
    async with felix.open_hub() as hub:
        wf = await hub.create_workflow()
        with trio.CancelScope() as scope:
            scope.cancel()
            await hub.send_workflow_event(wf.workflow_id, "synthesis", {"content": "never"})
        assert scope.cancelled_caught
        # Let the actor take whatever might have been queued.
        await trio.testing.wait_all_tasks_blocked()
        assert await hub.get_events(wf.workflow_id) == []
