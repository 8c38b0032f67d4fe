"""Publishes already queued when a workflow's actor wakes share one fan-out.

Each event stays its own frame with its own ``seq``; what is shared is the
write to each subscriber's socket. These tests use the hub without the web
layer and a recording writer in place of the socket, because the point is
how many writes the actor makes; ``tests/web/test_ws.py`` covers the same
path over real sockets.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import trio
import trio.testing

import felix
import felix._runtime.actor
from felix._runtime.subscription import Subscription


@attrs.define
class RecordingWriter:
    """Takes every byte at once, as a socket with room does, and keeps each write."""

    writes: list[bytes] = attrs.Factory(list)

    def try_send(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        return len(data)


def frames_of(data: bytes) -> list[dict[str, Any]]:
    """Split unmasked server text frames (the writer's bytes) into their JSON."""
    out = []
    while data:
        length = data[1] & 0x7F
        start = 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        out.append(json.loads(data[start : start + length]))
        data = data[start + length :]
    return out


async def direct_subscriber(stream: Subscription) -> RecordingWriter:
    """Take the ``connected`` frame, then let live frames go to a recording writer."""
    [connected] = await stream.receive_batch()
    assert json.loads(connected.text)["type"] == "connected"
    writer = RecordingWriter()
    stream.direct = writer
    return writer


async def publish_together(hub: felix.Hub, workflow_id: str, count: int) -> list[int]:
    """Start ``count`` publishes in one scheduling round; return each one's seq."""
    seqs: list[int] = [0] * count

    async def one(index: int) -> None:
        event = await hub.broadcast_to_workflow(
            workflow_id, {"type": "synthesis", "content": f"part {index}"}
        )
        seqs[index] = event.seq

    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(one, index)
    return seqs


async def test_queued_publishes_reach_a_subscriber_in_one_write() -> None:
    async with felix.open_hub() as hub:
        wf = await hub.create_workflow()
        async with hub.subscribe(wf.workflow_id) as stream:
            writer = await direct_subscriber(stream)
            seqs = await publish_together(hub, wf.workflow_id, 8)
            # One publish wakes the actor; the other seven are queued by then.
            assert len(writer.writes) == 1
            frames = frames_of(writer.writes[0])
            assert [frame["seq"] for frame in frames] == list(range(1, 9))
            assert sorted(seqs) == list(range(1, 9))
            # Every publisher got its own event's seq back.
            assert {frame["content"]: frame["seq"] for frame in frames} == {
                f"part {index}": seq for index, seq in enumerate(seqs)
            }
            assert stream.messages_sent == 9


async def test_a_fan_out_carries_at_most_the_coalescing_bound() -> None:
    count = 3 * felix._runtime.actor.COALESCE_FRAMES
    async with felix.open_hub() as hub:
        wf = await hub.create_workflow()
        async with hub.subscribe(wf.workflow_id) as stream:
            writer = await direct_subscriber(stream)
            await publish_together(hub, wf.workflow_id, count)
            sizes = [len(frames_of(write)) for write in writer.writes]
            assert sum(sizes) == count
            assert max(sizes) == felix._runtime.actor.COALESCE_FRAMES
            seen = [frame["seq"] for write in writer.writes for frame in frames_of(write)]
            assert seen == list(range(1, count + 1))


async def test_a_subscriber_joining_between_queued_publishes_gets_each_event_once() -> None:
    async with felix.open_hub() as hub:
        wf = await hub.create_workflow()
        async with hub.subscribe(wf.workflow_id) as first:
            writer = await direct_subscriber(first)
            late_frames: list[dict[str, Any]] = []

            async def join_late() -> None:
                async with hub.subscribe(wf.workflow_id, after=0) as late:
                    while len(late_frames) < 1 + 6:
                        late_frames.extend(json.loads(f.text) for f in await late.receive_batch())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish_together, hub, wf.workflow_id, 3)
                nursery.start_soon(join_late)
                nursery.start_soon(publish_together, hub, wf.workflow_id, 3)
            assert [f["seq"] for w in writer.writes for f in frames_of(w)] == list(range(1, 7))
            assert late_frames[0]["type"] == "connected"
            # Whatever the late subscriber got as replay, it got live after it, once.
            assert [frame["seq"] for frame in late_frames[1:]] == list(range(1, 7))


async def test_a_refused_publish_among_queued_ones_leaves_the_others_delivered() -> None:
    async with felix.open_hub() as hub:
        wf = await hub.create_workflow()
        async with hub.subscribe(wf.workflow_id) as stream:
            writer = await direct_subscriber(stream)
            outcomes: dict[str, str] = {}

            async def publish(name: str, event: dict[str, Any]) -> None:
                try:
                    await hub.broadcast_to_workflow(wf.workflow_id, event)
                except felix.FelixError as error:
                    outcomes[name] = error.code
                else:
                    outcomes[name] = "ok"

            async with trio.open_nursery() as nursery:
                nursery.start_soon(publish, "before", {"type": "synthesis", "content": "a"})
                nursery.start_soon(
                    publish, "end", {"type": "workflow_status", "status": "cancelled"}
                )
                nursery.start_soon(publish, "after", {"type": "synthesis", "content": "b"})
            ok = [name for name, outcome in outcomes.items() if outcome == "ok"]
            delivered = [f for w in writer.writes for f in frames_of(w)]
            # Whichever order the three were queued in, nothing follows the end,
            # every accepted event was delivered once, and the stream closed 1000.
            assert delivered[-1] == {**delivered[-1], "type": "workflow_status"}
            assert len(delivered) == len(ok)
            assert [frame["seq"] for frame in delivered] == list(range(1, len(ok) + 1))
            assert "end" in ok
            assert set(outcomes.values()) <= {"ok", "workflow_conflict"}
            assert await stream.receive_batch() == []
            assert stream.close_code == 1000


async def test_a_reply_wakes_every_waiter_and_a_wait_can_be_cancelled() -> None:
    reply = felix._runtime.actor._Reply()
    got: list[Any] = []
    with trio.move_on_after(0.01) as waited:
        await reply.wait()
    assert waited.cancelled_caught  # nothing was answered: the wait was cut off cleanly
    async with trio.open_nursery() as nursery:

        async def wait() -> None:
            got.append(await reply.wait())

        nursery.start_soon(wait)
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert not reply.done
        reply.set("answer")
    assert got == ["answer", "answer"]
    assert await reply.wait() == "answer"  # answered: at once
