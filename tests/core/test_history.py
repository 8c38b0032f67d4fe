"""History bounded in bytes, each retained event held once. Sans-IO, plain sync tests."""

from __future__ import annotations

import gc
import json
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from felix._core.events import Event, validate_event
from felix._core.history import EVENT_OVERHEAD, History, event_cost
from felix._core.workflow import WorkflowState

NOW = datetime(2026, 11, 26, 17, 33, 8, 123456, tzinfo=UTC)
WF = "wf_3f9a1c2b7d4e"


def output(content: str = "out") -> tuple[str, dict[str, Any]]:
    return validate_event(
        {"type": "agent_output", "agent_id": "a1", "content": content, "confidence": 0.5}
    )


def make_state(**kwargs: Any) -> WorkflowState:
    return WorkflowState(workflow_id=WF, created_at="2026-11-26T17:00:00.000000Z", **kwargs)


@attrs.define
class Recorder:
    """A budget that only records what histories report."""

    calls: list[tuple[int, bool]] = attrs.Factory(list)

    def changed(self, history: History, delta: int) -> None:
        self.calls.append((delta, history.finished))


# --- bounds ---------------------------------------------------------------------------


def test_the_byte_bound_drops_the_oldest() -> None:
    state = make_state(history_size=1000)
    [first] = state.publish([output("x" * 1000)], NOW)
    cost = event_cost(first)
    state = make_state(history_size=1000, history_bytes=3 * cost)
    for _ in range(5):
        state.publish([output("x" * 1000)], NOW)
    assert [event.seq for event in state.history] == [3, 4, 5]
    assert state.history.nbytes == 3 * cost
    assert state.last_seq == 5


def test_the_count_bound_still_holds_with_room_in_bytes() -> None:
    state = make_state(history_size=2)
    state.publish([output(), output(), output()], NOW)
    assert [event.seq for event in state.history] == [2, 3]
    assert state.history.nbytes == sum(event_cost(event) for event in state.history)


def test_an_event_larger_than_the_byte_bound_is_not_kept() -> None:
    state = make_state(history_bytes=100)
    state.publish([output("x" * 200)], NOW)
    assert len(state.history) == 0
    assert state.history.nbytes == 0
    assert state.last_seq == 1
    assert state.agents["a1"]["outputs"] == 1  # the state it built stays


def test_event_cost_is_the_wire_bytes_plus_the_overhead() -> None:
    [event] = make_state().publish([output("ü" * 10)], NOW)
    assert event_cost(event) == len(event.frame.wire) + EVENT_OVERHEAD
    assert len(event.frame.wire) == event.frame.size + 4  # header: 126 to 65535 bytes


# --- resume after byte eviction: the contract's recovered: false --------------------------


@pytest.mark.parametrize(
    ("after", "recovered", "expected"),
    [(0, False, [4, 5]), (2, False, [4, 5]), (3, True, [4, 5]), (4, True, [5]), (5, True, [])],
)
def test_replay_after_byte_eviction(after: int, recovered: bool, expected: list[int]) -> None:
    probe = make_state().publish([output("x" * 500)], NOW)[0]
    state = make_state(history_bytes=2 * event_cost(probe))
    for _ in range(5):
        state.publish([output("x" * 500)], NOW)
    replay = state.replay(after)
    assert replay.recovered is recovered
    assert [event.seq for event in replay.events] == expected


@pytest.mark.parametrize(("after", "recovered"), [(0, False), (2, False), (3, True)])
def test_replay_when_everything_was_evicted(after: int, recovered: bool) -> None:
    state = make_state(history_bytes=10)
    state.publish([output(), output(), output()], NOW)
    assert len(state.history) == 0
    replay = state.replay(after)
    assert replay.recovered is recovered
    assert replay.events == []


# --- held once ------------------------------------------------------------------------


def test_a_retained_event_keeps_only_its_frame() -> None:
    state = make_state()
    [event] = state.publish([output("résumé")], NOW)
    assert event._fields is None  # the parsed fields were let go
    # ... yet everything still reads the same, parsed back from the frame.
    assert event.fields == {"agent_id": "a1", "content": "résumé", "confidence": 0.5}
    assert event.to_json() == json.loads(event.frame.text)
    assert event.to_json()["seq"] == 1
    assert event._fields is None  # reading does not bring them back
    assert event == Event.from_text(event.frame.text)


def test_events_of_a_preview_are_not_retained() -> None:
    # A broker's node previews a batch before committing it; its fields are
    # still needed then, and nothing may be charged to the budget.
    recorder = Recorder()
    state = make_state(history_budget=recorder)
    events = state.check([output()], NOW)
    trial = state.preview(events)
    assert trial.last_seq == 1
    assert len(trial.history) == 0
    assert events[0]._fields is not None
    assert recorder.calls == []
    state.apply(events)
    assert recorder.calls == [(event_cost(events[0]), False)]


def test_each_retained_event_is_held_once() -> None:
    """tracemalloc: a retained 60 KB event costs its wire bytes and a little more.

    Before, each one held its fields, its text and its wire bytes: about three
    copies (180 KB for a 60 KB event).
    """
    state = make_state(history_size=10_000, history_bytes=1 << 40)
    state.publish([output("warm")], NOW)
    count, size = 200, 60_000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(count):
            state.publish([output("x" * size)], NOW + timedelta(microseconds=index))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    retained = list(state.history)[1:]
    wire = sum(len(event.frame.wire) for event in retained)
    charged = sum(event_cost(event) for event in retained)
    # One more content string is held by the derived state (the agent's last output).
    assert grown < wire + count * EVENT_OVERHEAD + 2 * size
    assert grown < 1.1 * wire
    assert grown <= charged + 2 * size


def test_small_events_cost_what_they_are_charged() -> None:
    """The overhead figure in EVENT_OVERHEAD (and the docs) is what a small event costs."""
    state = make_state(history_size=10_000, history_bytes=1 << 40)
    state.publish([output("warm")], NOW)
    count = 2000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(count):
            state.publish([output("x" * 100)], NOW + timedelta(microseconds=index))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    wire = sum(len(event.frame.wire) for event in list(state.history)[1:])
    overhead = (grown - wire) / count
    assert 100 < overhead <= EVENT_OVERHEAD


# --- reporting to a budget ---------------------------------------------------------------


def test_every_change_is_reported_to_the_budget() -> None:
    recorder = Recorder()
    state = make_state(history_size=2, history_budget=recorder)
    [one] = state.publish([output()], NOW)
    cost = event_cost(one)
    state.publish([output(), output()], NOW)  # one in, two in, the first out
    state.publish([validate_event({"type": "completed"})], NOW)
    completed = state.history[-1]
    state.history.close()
    state.history.close()  # idempotent
    assert recorder.calls == [
        (cost, False),
        (cost, False),
        (event_cost(completed) - cost, True),
        (-(cost + event_cost(completed)), True),
    ]
    assert state.history.nbytes == 0
    assert len(state.history) == 0


def test_evict_oldest_does_not_report() -> None:
    recorder = Recorder()
    state = make_state(history_budget=recorder)
    state.publish([output(), output()], NOW)
    recorder.calls.clear()
    first = state.history[0]
    assert state.history.evict_oldest() == event_cost(first)
    assert [event.seq for event in state.history] == [2]
    assert state.history.evict_oldest() > 0
    assert state.history.evict_oldest() == 0
    assert recorder.calls == []
    assert state.history.nbytes == 0
