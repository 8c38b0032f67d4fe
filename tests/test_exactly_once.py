"""Exactly once, in order, across kicks and reconnects: property-based.

Random interleavings of publishes, batches, subscribes, slow-consumer kicks,
disconnects and reconnects with ``after=``, run against a real hub. Every
client must see each seq at most once, in increasing order, and with no gap
unless the server announced ``recovered: false`` on that connection.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import attrs
import hypothesis.strategies as st
import trio
from hypothesis import HealthCheck, given, settings

import felix

CLIENTS = 3

operation = st.one_of(
    st.tuples(st.just("publish"), st.integers(1, 12)),
    st.tuples(st.just("connect"), st.integers(0, CLIENTS - 1), st.booleans()),
    st.tuples(st.just("read"), st.integers(0, CLIENTS - 1), st.integers(1, 20)),
    st.tuples(st.just("disconnect"), st.integers(0, CLIENTS - 1)),
    st.tuples(st.just("kick"), st.integers(0, CLIENTS - 1)),
)


@attrs.define
class Client:
    last_seq: int = 0
    seen: list[int] = attrs.Factory(list)
    stack: contextlib.AsyncExitStack | None = None
    stream: felix.Subscription | None = None
    #: Below this seq a jump is allowed: the server said it could not recover.
    allowed_gap: bool = False

    def take(self, frames: list[felix.Frame]) -> None:
        for frame in frames:
            message = json.loads(frame.text)
            if message["type"] == "connected":
                self.allowed_gap = message.get("recovered") is False
                continue
            seq = message["seq"]
            assert seq > self.last_seq, f"seq {seq} after {self.last_seq}: duplicate or reorder"
            if seq != self.last_seq + 1:
                assert self.allowed_gap, f"gap {self.last_seq} -> {seq} with recovered true"
            self.allowed_gap = False
            self.last_seq = seq
            self.seen.append(seq)


async def read_available(client: Client, limit: int) -> None:
    """Take what is buffered without waiting; close the client if its stream ended."""
    assert client.stream is not None
    taken = 0
    while taken < limit:
        with trio.CancelScope() as scope:
            scope.cancel()  # never park: only what is already buffered
            batch = await client.stream.receive_batch()
        if scope.cancelled_caught:
            return
        if not batch:
            await close(client)
            return
        client.take(batch)
        taken += len(batch)


async def close(client: Client) -> None:
    if client.stack is not None:
        await client.stack.aclose()
    client.stack = client.stream = None


async def run(operations: list[tuple[Any, ...]]) -> None:
    hub_settings = felix.Settings(history_size=8, subscriber_buffer_frames=6)
    async with felix.open_hub(hub_settings) as hub:
        wf = await hub.create_workflow()
        clients = [Client() for _ in range(CLIENTS)]
        published = 0
        for op in operations:
            kind = op[0]
            if kind == "publish":
                count = op[1]
                batch = [{"type": "synthesis", "content": str(i)} for i in range(count)]
                await hub.publish(wf.workflow_id, batch)
                published += count
            elif kind == "connect":
                client = clients[op[1]]
                if client.stack is None:
                    client.stack = contextlib.AsyncExitStack()
                    # Resume from the last seq seen, or start fresh (live only).
                    after = client.last_seq if op[2] or client.seen else None
                    client.stream = await client.stack.enter_async_context(
                        hub.subscribe(wf.workflow_id, after=after)
                    )
                    if after is None:
                        client.last_seq = (await hub.get_workflow(wf.workflow_id)).last_seq
            elif kind == "read" and clients[op[1]].stream is not None:
                await read_available(clients[op[1]], op[2])
            elif kind == "disconnect":
                await close(clients[op[1]])
            elif kind == "kick" and clients[op[1]].stream is not None:
                stream = clients[op[1]].stream
                assert stream is not None
                stream.kick(4008, "slow consumer")
        # Every client that is still connected, drained, ends where the workflow is.
        for client in clients:
            if client.stream is not None and client.stream.active:
                await read_available(client, 10_000)
                assert client.last_seq == published
            await close(client)
        assert hub.connections() == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, max_size=40))
def test_every_client_sees_each_seq_at_most_once_in_order(
    operations: list[tuple[Any, ...]],
) -> None:
    trio.run(run, operations)
