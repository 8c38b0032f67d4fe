"""The hub and actors against the Broker interface itself, with a broker made for the test.

Cases a real Redis cannot be made to produce on demand: a node that loses
every commit race.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

import felix
from felix._broker import Commit, FeedSink, Stored
from felix._core.events import Event, Frame
from felix._core.idempotency import Applied, Claim
from felix._core.workflow import WorkflowState
from felix._runtime.actor import InboxFull

_STORED = (
    "workflow_id",
    "created_at",
    "updated_at",
    "status",
    "last_seq",
    "task",
    "metadata",
    "agents",
    "synthesis",
    "result",
    "error",
)


class AlwaysBehind:
    """A broker where another node has always just published: every commit conflicts."""

    kind = "test"
    connected = True

    def __init__(self) -> None:
        self.stored: dict[str, Stored] = {}
        self.commits = 0

    def health(self) -> dict[str, Any]:
        return {"kind": self.kind, "connected": True}

    async def create(self, state: WorkflowState, max_workflows: int, notice: Frame) -> None:
        self.stored[state.workflow_id] = Stored({name: getattr(state, name) for name in _STORED})

    async def load(self, workflow_id: str) -> Stored | None:
        await trio.sleep(0.01)  # a round trip
        return self.stored.get(workflow_id)

    async def view(self, workflow_id: str) -> Stored | None:
        return self.stored.get(workflow_id)

    async def commit(
        self,
        before: WorkflowState,
        after: WorkflowState,
        events: list[Event],
        retention_seconds: float | None,
        claim: Claim | None = None,
    ) -> Commit:
        await trio.sleep(0.01)
        self.commits += 1
        return Commit(committed=False, current_seq=before.last_seq + 1)

    async def events_after(self, workflow_id: str, after: int, limit: int) -> list[Event] | None:
        return []

    async def recall(self, workflow_id: str, key: str) -> Applied | None:
        return None

    async def list(self) -> list[Stored]:
        return list(self.stored.values())

    async def broadcast(self, frame: Frame) -> None:
        pass

    async def run(
        self, sink: FeedSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await trio.sleep_forever()


async def test_a_node_that_keeps_losing_commit_races_gives_up_with_503(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = AlwaysBehind()
    settings = felix.Settings(publish_timeout=2.0)
    async with felix.open_hub(settings, broker=broker) as hub:
        workflow = await hub.create_workflow()
        started = trio.current_time()
        with (
            trio.fail_after(10),  # without a limit the retries would never end
            pytest.raises(InboxFull, match="other nodes kept publishing") as info,
        ):
            await hub.send_workflow_event(workflow.workflow_id, "synthesis", {"content": "x"})
        assert info.value.http_status == 503
        assert info.value.retry_after == 1
        # It retried (each retry catches up first), and no longer than the timeout allows.
        assert broker.commits > 10
        assert trio.current_time() - started == pytest.approx(2.0, abs=0.1)
