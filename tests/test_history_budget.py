"""The server-wide history budget (FELIX_HISTORY_BUDGET_BYTES).

The accountant alone (plain sync tests and a property test against a model
that scans every history), then through a hub: finished workflows give up
their history first, a resume that needed evicted events gets
``recovered: false``, and a workflow that is forgotten gives its bytes back.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import felix
from felix._core.events import Event, format_timestamp
from felix._core.history import History, event_cost
from felix._runtime.budget import HistoryAccountant

START = datetime(2026, 11, 26, tzinfo=UTC)


class Clock:
    """Timestamps that only go forward, one microsecond per event."""

    def __init__(self) -> None:
        self.ticks = 0

    def next(self) -> str:
        self.ticks += 1
        return format_timestamp(START + timedelta(microseconds=self.ticks))


def event(workflow_id: str, seq: int, timestamp: str, size: int = 100) -> Event:
    return Event.build("synthesis", workflow_id, seq, timestamp, {"content": "x" * size})


def cost(size: int = 100) -> int:
    return event_cost(event("wf", 1, format_timestamp(START), size))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def fill(history: History, clock: Clock, count: int, size: int = 100) -> None:
    seq = history[-1].seq if len(history) else 0
    for index in range(count):
        history.extend([event("wf", seq + index + 1, clock.next(), size)])


def seqs(history: History) -> list[int]:
    return [event.seq for event in history]


# --- the accountant alone ---------------------------------------------------------------


def test_within_the_budget_nothing_is_evicted(clock: Clock) -> None:
    budget = HistoryAccountant(limit=10 * cost())
    first, second = History(budget=budget), History(budget=budget)
    fill(first, clock, 5)
    fill(second, clock, 5)
    assert budget.total == 10 * cost() == first.nbytes + second.nbytes
    assert budget.evicted == 0


def test_past_the_budget_the_oldest_events_server_wide_go_first(clock: Clock) -> None:
    budget = HistoryAccountant(limit=6 * cost())
    a, b = History(budget=budget), History(budget=budget)
    fill(a, clock, 3)  # a: t1 t2 t3
    fill(b, clock, 3)  # b: t4 t5 t6
    fill(a, clock, 2)  # a: t7 t8 -> the two oldest (a's t1, t2) go
    assert seqs(a) == [3, 4, 5]
    assert seqs(b) == [1, 2, 3]
    fill(b, clock, 1)  # the oldest is now a's seq 3
    assert seqs(a) == [4, 5]
    assert budget.total == 6 * cost() == a.nbytes + b.nbytes
    assert budget.evicted == 3


def test_finished_workflows_give_up_their_history_before_running_ones(clock: Clock) -> None:
    budget = HistoryAccountant(limit=6 * cost())
    running, finished = History(budget=budget), History(budget=budget)
    fill(running, clock, 2)  # the oldest events of all
    fill(finished, clock, 3)
    finished.extend([event("wf", 4, clock.next())], finished=True)
    fill(running, clock, 2)
    # Two over: they come from the finished workflow, though the running one's are older.
    assert seqs(finished) == [3, 4]
    assert seqs(running) == [1, 2, 3, 4]
    fill(running, clock, 3)
    assert seqs(finished) == []
    assert seqs(running) == [2, 3, 4, 5, 6, 7]  # only then the running one's oldest


def test_a_closed_history_gives_its_bytes_back(clock: Clock) -> None:
    budget = HistoryAccountant(limit=100 * cost())
    history = History(budget=budget)
    fill(history, clock, 4)
    history.close()
    assert budget.total == 0
    fill(history, clock, 1)  # a closed history takes nothing
    assert budget.total == 0
    assert len(history) == 0


def test_heaps_stay_bounded_as_workflows_come_and_go(clock: Clock) -> None:
    budget = HistoryAccountant(limit=1 << 40)
    for _ in range(2000):
        history = History(budget=budget)
        fill(history, clock, 1)
        history.extend([event("wf", 2, clock.next())], finished=True)
        history.close()
    live = History(budget=budget)
    fill(live, clock, 1)
    assert len(budget._running) + len(budget._finished) < 200
    assert budget.total == live.nbytes


def test_statistics(clock: Clock) -> None:
    budget = HistoryAccountant(limit=2 * cost())
    fill(History(budget=budget), clock, 3)
    assert budget.statistics() == {
        "history_bytes": 2 * cost(),
        "history_budget_bytes": 2 * cost(),
        "history_evicted": 1,
    }


# --- the accountant against a model --------------------------------------------------------

OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["publish", "publish", "publish", "finish", "close"]),
        st.integers(0, 4),  # which workflow
        st.integers(1, 4),  # events in the batch
        st.sampled_from([10, 100, 1000]),  # their size
    ),
    max_size=60,
)


def model_evict(model: dict[int, list[tuple[str, int]]], finished: set[int], limit: int) -> None:
    """The policy spelled out: scan everything for the oldest event, finished first."""
    while sum(c for events in model.values() for _, c in events) > limit:
        for candidates in (finished, set(model) - finished):
            kept = [index for index in candidates if model[index]]
            if kept:
                oldest = min(kept, key=lambda index: model[index][0][0])
                model[oldest].pop(0)
                break


@settings(max_examples=200, deadline=None)
@given(
    OPERATIONS,
    st.integers(0, 20_000),
    st.integers(1, 10),
    st.integers(500, 50_000),
)
def test_the_accountant_matches_the_policy(
    operations: list[tuple[str, int, int, int]], limit: int, max_events: int, max_bytes: int
) -> None:
    clock = Clock()
    budget = HistoryAccountant(limit=limit)
    histories = [
        History(max_events=max_events, max_bytes=max_bytes, budget=budget) for _ in range(5)
    ]
    model: dict[int, list[tuple[str, int]]] = {index: [] for index in range(5)}
    finished: set[int] = set()
    seq = [0] * 5
    for operation, index, count, size in operations:
        history = histories[index]
        if history.closed:
            continue
        if operation == "close":
            history.close()
            del model[index]
            finished.discard(index)
            continue
        batch = []
        for _ in range(count if operation == "publish" else 0):
            seq[index] += 1
            batch.append(event(f"wf{index}", seq[index], clock.next(), size))
        history.extend(batch, finished=operation == "finish")
        if operation == "finish":
            finished.add(index)
        # The model: the history's own bounds first, then the budget's policy.
        kept = model[index] + [(e.timestamp, event_cost(e)) for e in batch]
        while kept and (len(kept) > max_events or sum(c for _, c in kept) > max_bytes):
            kept.pop(0)
        model[index] = kept
        model_evict(model, finished, limit)
        for where, events in model.items():
            assert [e.timestamp for e in histories[where]] == [t for t, _ in events]
        open_bytes = sum(h.nbytes for h in histories if not h.closed)
        assert budget.total == open_bytes <= limit


# --- through a hub ---------------------------------------------------------------------------


def big(n: int) -> dict[str, Any]:
    return {"type": "agent_output", "agent_id": "a1", "content": "x" * 1000, "confidence": n / 100}


async def test_a_hub_keeps_all_histories_within_the_budget() -> None:
    settings = felix.Settings(history_budget_bytes=30_000)
    async with felix.open_hub(settings) as hub:
        done = await hub.create_workflow()
        live = await hub.create_workflow()
        for n in range(8):
            await hub.publish(live.workflow_id, [big(n)])  # the oldest events
        for n in range(8):
            await hub.publish(done.workflow_id, [big(n)])
        await hub.send_workflow_event(done.workflow_id, "completed")
        assert hub.history_budget.evicted == 0  # all of it fits so far
        for n in range(8, 16):
            await hub.publish(live.workflow_id, [big(n)])
        budget = hub.history_budget
        assert 25_000 < budget.total <= 30_000
        # The finished workflow gave up its oldest events; the running one
        # kept everything, its older events included.
        live_events = await hub.get_events(live.workflow_id)
        assert [e.seq for e in live_events] == list(range(1, 17))
        done_events = await hub.get_events(done.workflow_id)
        assert done_events[-1].seq == 9
        assert done_events[0].seq > 4
        assert budget.evicted == done_events[0].seq - 1
        stats = hub.statistics()
        assert stats["history_bytes"] == budget.total
        assert stats["history_budget_bytes"] == 30_000
        assert stats["history_evicted"] > 0


async def test_a_resume_that_needed_evicted_events_is_not_recovered() -> None:
    settings = felix.Settings(history_budget_bytes=12_000)
    async with felix.open_hub(settings) as hub:
        wf = await hub.create_workflow()
        for n in range(20):
            await hub.publish(wf.workflow_id, [big(n)])
        kept = [e.seq for e in await hub.get_events(wf.workflow_id)]
        assert kept[-1] == 20
        assert kept[0] > 2
        async with hub.subscribe(wf.workflow_id, after=1) as stream:
            frames = [json.loads(frame.text) for frame in await stream.receive_batch()]
        assert frames[0]["type"] == "connected"
        assert frames[0]["recovered"] is False
        assert [frame["seq"] for frame in frames[1:]] == kept
        async with hub.subscribe(wf.workflow_id, after=kept[0] - 1) as stream:
            frames = [json.loads(frame.text) for frame in await stream.receive_batch()]
        assert frames[0]["recovered"] is True


async def test_a_forgotten_workflow_gives_its_bytes_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with felix.open_hub(felix.Settings(retention_seconds=10)) as hub:
        wf = await hub.create_workflow()
        await hub.publish(wf.workflow_id, [big(1), big(2)])
        await hub.send_workflow_event(wf.workflow_id, "completed")
        assert hub.history_budget.total > 2000
        await trio.sleep(11)
        with pytest.raises(felix.WorkflowNotFound):
            await hub.get_workflow(wf.workflow_id)
        assert hub.history_budget.total == 0
