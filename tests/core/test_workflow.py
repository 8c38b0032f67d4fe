"""WorkflowState: seq, the status machine, all-or-nothing batches, history ring, replay, view."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from felix._core import events as events_module
from felix._core.events import Event, format_timestamp, validate_event
from felix._core.workflow import Replay, WorkflowState
from felix._errors import EventTooLarge, FelixError, InvalidEvent, WorkflowConflict

NOW = datetime(2026, 11, 26, 17, 33, 8, 123456, tzinfo=UTC)
NOW_TEXT = "2026-11-26T17:33:08.123456Z"
CREATED = "2026-11-26T17:00:00.000000Z"
WF = "wf_3f9a1c2b7d4e"

Pair = tuple[str, dict[str, Any]]

#: The keys of the contract's workflow object (GET /api/v1/workflows/{id}).
VIEW_KEYS = {
    "workflow_id",
    "status",
    "task",
    "metadata",
    "created_at",
    "updated_at",
    "last_seq",
    "subscribers",
    "agents",
    "synthesis",
    "result",
    "error",
}


def ev(event_type: str, **fields: Any) -> Pair:
    """A producer event as validate_event hands it to the state."""
    return validate_event({"type": event_type, **fields})


def spawn(agent_id: str, agent_type: str = "research", spawn_time: float = 0.1) -> Pair:
    return ev("agent_spawned", agent_id=agent_id, agent_type=agent_type, spawn_time=spawn_time)


def output(agent_id: str, content: str = "out", confidence: float = 0.5) -> Pair:
    return ev("agent_output", agent_id=agent_id, content=content, confidence=confidence)


def status(value: str) -> Pair:
    return ev("workflow_status", status=value)


def make_state(**kwargs: Any) -> WorkflowState:
    return WorkflowState(workflow_id=WF, created_at=CREATED, **kwargs)


def filler(n: int) -> list[Pair]:
    return [ev("synthesis", content=f"s{i}") for i in range(n)]


def seqs(events: list[Event]) -> list[int]:
    return [event.seq for event in events]


def snapshot(state: WorkflowState) -> dict[str, Any]:
    """Everything a refused batch must leave as it was."""
    return {
        "status": state.status,
        "last_seq": state.last_seq,
        "updated_at": state.updated_at,
        "history": list(state.history),
        "agents": copy.deepcopy(state.agents),
        "synthesis": copy.deepcopy(state.synthesis),
        "result": copy.deepcopy(state.result),
        "error": copy.deepcopy(state.error),
        "view": copy.deepcopy(state.view(subscribers=0)),
    }


# --- seq --------------------------------------------------------------------------


def test_new_state_is_pending_and_empty() -> None:
    state = make_state(task="research", metadata={"k": "v"})
    assert state.status == "pending"
    assert not state.terminal
    assert state.last_seq == 0
    assert state.updated_at == CREATED
    assert list(state.history) == []
    assert state.view(subscribers=0) == {
        "workflow_id": WF,
        "status": "pending",
        "task": "research",
        "metadata": {"k": "v"},
        "created_at": CREATED,
        "updated_at": CREATED,
        "last_seq": 0,
        "subscribers": 0,
        "agents": [],
        "synthesis": None,
        "result": None,
        "error": None,
    }


def test_seq_starts_at_one_without_gaps_across_publishes_and_batches() -> None:
    state = make_state()
    first = state.publish([spawn("a")], NOW)
    second = state.publish([output("a"), output("a"), ev("synthesis", content="s")], NOW)
    third = state.publish([ev("error", message="warn")], NOW + timedelta(seconds=1))

    assert seqs(first) == [1]
    assert seqs(second) == [2, 3, 4]
    assert seqs(third) == [5]
    assert state.last_seq == 5
    assert seqs(list(state.history)) == [1, 2, 3, 4, 5]
    for event in [*first, *second, *third]:
        parsed = json.loads(event.frame.text)
        assert parsed["seq"] == event.seq
        assert parsed["workflow_id"] == WF
    assert {e.timestamp for e in second} == {NOW_TEXT}
    assert third[0].timestamp == format_timestamp(NOW + timedelta(seconds=1))
    assert state.updated_at == third[0].timestamp


def test_empty_batch_changes_nothing() -> None:
    state = make_state()
    before = snapshot(state)
    assert state.publish([], NOW) == []
    assert snapshot(state) == before


def test_publish_returns_the_objects_it_keeps_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real_encode = events_module.encode_utf8

    def counting_encode(obj: Any) -> tuple[str, bytes]:
        calls.append(obj)
        return real_encode(obj)

    monkeypatch.setattr(events_module, "encode_utf8", counting_encode)
    state = make_state()

    published = state.publish([spawn("a"), output("a", "résumé 研究"), ev("completed")], NOW)

    assert len(calls) == 3
    history = list(state.history)
    assert len(history) == 3
    for mine, kept in zip(published, history, strict=True):
        assert mine is kept
        assert mine.frame is kept.frame
    replayed = state.replay(0).events
    after = state.events_after(0, 10)
    for index, event in enumerate(published):
        assert replayed[index] is event
        assert replayed[index].frame is event.frame
        assert after[index] is event
    state.view(subscribers=3)
    assert len(calls) == 3  # reading never encodes again


def test_frame_is_the_flat_contract_object() -> None:
    state = make_state()
    [event] = state.publish([output("research-1", "ü", 0.82)], NOW)
    assert json.loads(event.frame.text) == {
        "type": "agent_output",
        "workflow_id": WF,
        "seq": 1,
        "timestamp": NOW_TEXT,
        "agent_id": "research-1",
        "content": "ü",
        "confidence": 0.82,
    }
    assert event.frame.size == len(event.frame.text.encode("utf-8"))


# --- status machine ---------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        spawn("a"),
        output("a"),
        ev("synthesis", content="s"),
        ev("error", message="warn"),
        ev("error", message="warn", fatal=False),
        status("running"),
    ],
)
def test_first_event_of_pending_workflow_makes_it_running(first: Pair) -> None:
    state = make_state()
    state.publish([first], NOW)
    assert state.status == "running"
    assert not state.terminal


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (status("running"), "running"),
        (status("completed"), "completed"),
        (status("failed"), "failed"),
        (status("cancelled"), "cancelled"),
        (ev("completed"), "completed"),
        (ev("completed", result={"answer": 42}), "completed"),
        (ev("error", message="boom", fatal=True), "failed"),
        (ev("error", message="warn", fatal=False), "running"),
        (ev("error", message="warn"), "running"),
        (output("a"), "running"),
    ],
)
def test_status_of_running_workflow_after_event(event: Pair, expected: str) -> None:
    state = make_state()
    state.publish([status("running")], NOW)
    state.publish([event], NOW)
    assert state.status == expected
    assert state.terminal == (expected in {"completed", "failed", "cancelled"})


def test_pending_workflow_can_be_cancelled() -> None:
    # DELETE of a workflow nobody published to yet.
    state = make_state()
    state.publish([status("cancelled")], NOW)
    assert state.status == "cancelled"
    assert state.terminal


def test_running_back_to_pending_is_refused() -> None:
    state = make_state()
    state.publish([status("running")], NOW)
    before = snapshot(state)
    with pytest.raises(WorkflowConflict) as exc:
        state.publish([status("pending")], NOW)
    assert exc.value.http_status == 409
    assert exc.value.code == "workflow_conflict"
    assert exc.value.details["index"] == 0
    assert "pending" in exc.value.message
    assert "running" in exc.value.message
    assert snapshot(state) == before


def terminal_by(kind: str) -> list[Pair]:
    return {
        "completed": [ev("completed", result=1)],
        "fatal-error": [ev("error", message="boom", fatal=True)],
        "status-completed": [status("completed")],
        "status-failed": [status("failed")],
        "status-cancelled": [status("cancelled")],
    }[kind]


TERMINAL_WAYS = [
    "completed",
    "fatal-error",
    "status-completed",
    "status-failed",
    "status-cancelled",
]
ANY_EVENT = [
    status("running"),
    status("pending"),
    status("completed"),
    spawn("a"),
    output("a"),
    ev("synthesis", content="s"),
    ev("error", message="e"),
    ev("error", message="e", fatal=True),
    ev("completed"),
]


@pytest.mark.parametrize("way", TERMINAL_WAYS)
@pytest.mark.parametrize("late", ANY_EVENT)
def test_any_event_after_terminal_is_refused(way: str, late: Pair) -> None:
    state = make_state()
    state.publish([spawn("a"), *terminal_by(way)], NOW)
    assert state.terminal
    before = snapshot(state)

    with pytest.raises(WorkflowConflict) as exc:
        state.publish([late], NOW + timedelta(seconds=5))

    assert exc.value.http_status == 409
    assert exc.value.details["index"] == 0
    assert state.status in exc.value.message
    assert snapshot(state) == before


# --- all-or-nothing batches -------------------------------------------------------


def _running_with_agent(**kwargs: Any) -> WorkflowState:
    state = make_state(**kwargs)
    state.publish([spawn("a", "research", 0.5), output("a", "first", 0.3)], NOW)
    return state


BIG = "x" * 2000


@pytest.mark.parametrize(
    ("settings", "batch", "error", "index"),
    [
        pytest.param(
            {},
            [output("a"), ev("completed"), output("a")],
            WorkflowConflict,
            2,
            id="after-completed",
        ),
        pytest.param(
            {},
            [spawn("b"), ev("error", message="x", fatal=True), ev("synthesis", content="s")],
            WorkflowConflict,
            2,
            id="after-fatal-error",
        ),
        pytest.param(
            {}, [status("cancelled"), status("running")], WorkflowConflict, 1, id="after-cancelled"
        ),
        pytest.param(
            {},
            [output("a"), output("a"), status("pending")],
            WorkflowConflict,
            2,
            id="back-to-pending",
        ),
        pytest.param(
            {"max_event_bytes": 1024},
            [output("a"), spawn("b"), ev("synthesis", content=BIG)],
            EventTooLarge,
            2,
            id="oversized",
        ),
        pytest.param(
            {"max_event_bytes": 1024},
            [ev("synthesis", content=BIG), output("a")],
            EventTooLarge,
            0,
            id="oversized-first",
        ),
        pytest.param(
            {"max_agents": 3},
            [output("a"), spawn("b"), output("b"), spawn("c"), output("c"), spawn("d")],
            InvalidEvent,
            5,
            id="too-many-agents-spawn",
        ),
        pytest.param(
            {"max_agents": 2},
            [spawn("b"), output("b"), output("a"), output("z")],
            InvalidEvent,
            3,
            id="too-many-agents-output",
        ),
    ],
)
def test_bad_event_at_index_k_leaves_state_untouched(
    settings: dict[str, Any], batch: list[Pair], error: type[FelixError], index: int
) -> None:
    state = _running_with_agent(**settings)
    before = snapshot(state)

    with pytest.raises(error) as exc:
        state.publish(batch, NOW + timedelta(seconds=5))

    assert type(exc.value) is error
    assert exc.value.details["index"] == index
    assert exc.value.to_json()["index"] == index
    assert snapshot(state) == before
    # The workflow still takes a good batch, with seq continuing without a gap.
    assert seqs(state.publish([output("a")], NOW)) == [3]


def test_refused_first_batch_leaves_workflow_pending() -> None:
    state = make_state(max_event_bytes=512)
    before = snapshot(state)
    with pytest.raises(EventTooLarge) as exc:
        state.publish([spawn("a"), ev("synthesis", content=BIG)], NOW)
    assert exc.value.details["index"] == 1
    assert exc.value.http_status == 413
    assert snapshot(state) == before
    assert state.status == "pending"


def test_too_many_agents_message_and_status() -> None:
    state = make_state(max_agents=1)
    state.publish([spawn("a")], NOW)
    with pytest.raises(InvalidEvent) as exc:
        state.publish([output("b")], NOW)
    assert exc.value.http_status == 422
    assert "agent_output" in exc.value.message
    assert "1 agents" in exc.value.message
    # Known agents are not counted again.
    state.publish([output("a"), spawn("a")], NOW)
    assert [agent["agent_id"] for agent in state.view(0)["agents"]] == ["a"]


def test_event_size_limit_is_inclusive() -> None:
    fields = {"content": "ü" * 300}
    size = Event.build("synthesis", WF, 1, NOW_TEXT, fields).frame.size

    exact = make_state(max_event_bytes=size)
    [event] = exact.publish([ev("synthesis", **fields)], NOW)
    assert event.frame.size == size

    under = make_state(max_event_bytes=size - 1)
    with pytest.raises(EventTooLarge) as exc:
        under.publish([ev("synthesis", **fields)], NOW)
    assert str(size) in exc.value.message
    assert under.last_seq == 0


# --- history ring and replay ------------------------------------------------------


def test_history_ring_drops_the_oldest() -> None:
    state = make_state(history_size=3)
    state.publish(filler(2), NOW)
    state.publish(filler(3), NOW)
    assert seqs(list(state.history)) == [3, 4, 5]
    assert state.last_seq == 5
    state.publish(filler(10), NOW)
    assert seqs(list(state.history)) == [13, 14, 15]


def test_replay_without_after_is_not_a_resume() -> None:
    state = make_state()
    state.publish(filler(3), NOW)
    assert state.replay(None) == Replay(recovered=None, events=[])


@pytest.mark.parametrize(
    ("after", "recovered", "expected"),
    [
        (0, True, [1, 2, 3, 4, 5]),
        (1, True, [2, 3, 4, 5]),
        (3, True, [4, 5]),
        (4, True, [5]),
        (5, True, []),
        (6, False, [1, 2, 3, 4, 5]),
        (1000, False, [1, 2, 3, 4, 5]),
    ],
)
def test_replay_everything_retained(after: int, recovered: bool, expected: list[int]) -> None:
    state = make_state(history_size=10)
    state.publish(filler(5), NOW)
    replay = state.replay(after)
    assert replay.recovered is recovered
    assert seqs(replay.events) == expected


@pytest.mark.parametrize(
    ("after", "recovered", "expected"),
    [
        (0, False, [6, 7, 8]),
        (4, False, [6, 7, 8]),
        (5, True, [6, 7, 8]),  # nothing after 5 was lost
        (6, True, [7, 8]),
        (7, True, [8]),
        (8, True, []),
        (9, False, [6, 7, 8]),
    ],
)
def test_replay_after_the_ring_dropped_events(
    after: int, recovered: bool, expected: list[int]
) -> None:
    state = make_state(history_size=3)
    state.publish(filler(8), NOW)
    replay = state.replay(after)
    assert replay.recovered is recovered
    assert seqs(replay.events) == expected


@pytest.mark.parametrize(("after", "recovered"), [(0, True), (1, False)])
def test_replay_of_a_workflow_without_events(after: int, recovered: bool) -> None:
    replay = make_state().replay(after)
    assert replay.recovered is recovered
    assert replay.events == []


def test_replay_returns_a_copy_of_the_history() -> None:
    state = make_state()
    state.publish(filler(2), NOW)
    state.replay(0).events.clear()
    assert state.last_seq == 2
    assert len(state.history) == 2


@pytest.mark.parametrize(
    ("after", "limit", "expected"),
    [
        (0, 100, [1, 2, 3, 4, 5]),
        (0, 2, [1, 2]),
        (2, 2, [3, 4]),
        (3, 100, [4, 5]),
        (4, 1, [5]),
        (5, 100, []),
        (50, 100, []),
        (0, 0, []),
    ],
)
def test_events_after(after: int, limit: int, expected: list[int]) -> None:
    state = make_state()
    state.publish(filler(5), NOW)
    assert seqs(state.events_after(after, limit)) == expected


@pytest.mark.parametrize(
    ("after", "limit", "expected"),
    [(0, 100, [6, 7, 8]), (5, 2, [6, 7]), (6, 100, [7, 8]), (8, 100, [])],
)
def test_events_after_with_dropped_history(after: int, limit: int, expected: list[int]) -> None:
    state = make_state(history_size=3)
    state.publish(filler(8), NOW)
    assert seqs(state.events_after(after, limit)) == expected


def test_events_after_on_empty_history() -> None:
    assert make_state().events_after(0, 10) == []


# --- derived view -----------------------------------------------------------------


def test_view_holds_the_state_events_built() -> None:
    state = make_state(task="find things", metadata={"team": "blue"})
    later = NOW + timedelta(seconds=2)
    state.publish(
        [
            spawn("research-1", "research", 0.1),
            spawn("critic-1", "critic", 0.25),
            output("research-1", "first", 0.4),
            output("research-1", "second", 0.82),
            ev("synthesis", content="draft", confidence=0.5, final=False),
            ev("error", message="tool timed out", fatal=False, tool="search"),
        ],
        NOW,
    )
    state.publish(
        [
            output("late-1", "no spawn seen", 0.9),
            ev("synthesis", content="final answer", agents_synthesized=2, final=True),
            ev("error", message="second warning"),
            ev("completed", result={"answer": [42, "é"]}),
        ],
        later,
    )

    view = state.view(subscribers=4)

    assert set(view) == VIEW_KEYS
    assert view["workflow_id"] == WF
    assert view["status"] == "completed"
    assert view["task"] == "find things"
    assert view["metadata"] == {"team": "blue"}
    assert view["created_at"] == CREATED
    assert view["updated_at"] == format_timestamp(later)
    assert view["last_seq"] == 10
    assert view["subscribers"] == 4

    agents = {agent["agent_id"]: agent for agent in view["agents"]}
    assert [agent["agent_id"] for agent in view["agents"]] == ["research-1", "critic-1", "late-1"]
    research = agents["research-1"]
    assert research["agent_type"] == "research"
    assert research["spawn_time"] == 0.1
    assert research["outputs"] == 2
    assert research["confidence"] == 0.82
    assert research["last_output"] == "second"
    critic = agents["critic-1"]
    assert (critic["agent_type"], critic["spawn_time"], critic["outputs"]) == ("critic", 0.25, 0)
    assert critic["confidence"] is None
    late = agents["late-1"]
    assert (late["agent_type"], late["spawn_time"], late["outputs"]) == (None, None, 1)
    assert late["confidence"] == 0.9
    for agent in view["agents"]:
        assert {"agent_id", "agent_type", "spawn_time", "outputs", "confidence"} <= set(agent)

    assert view["synthesis"]["content"] == "final answer"
    assert view["synthesis"]["agents_synthesized"] == 2
    assert view["synthesis"]["final"] is True
    assert view["synthesis"]["seq"] == 8
    assert view["result"] == {"answer": [42, "é"]}
    assert view["error"]["message"] == "second warning"
    assert view["error"]["seq"] == 9
    json.dumps(view, allow_nan=False)  # the view is JSON as it stands


def test_view_error_from_fatal_error_and_result_absent() -> None:
    state = make_state()
    state.publish([ev("error", message="crashed", fatal=True, code="E1")], NOW)
    view = state.view(subscribers=0)
    assert set(view) == VIEW_KEYS
    assert view["status"] == "failed"
    assert view["error"]["message"] == "crashed"
    assert view["error"]["fatal"] is True
    assert view["error"]["code"] == "E1"
    assert view["result"] is None
    assert view["synthesis"] is None


def test_completed_without_result_gives_null_result() -> None:
    state = make_state()
    state.publish([ev("completed")], NOW)
    view = state.view(subscribers=0)
    assert view["status"] == "completed"
    assert view["result"] is None


def test_view_agents_are_copies() -> None:
    state = make_state()
    state.publish([spawn("a")], NOW)
    state.view(subscribers=0)["agents"][0]["outputs"] = 99
    assert state.view(subscribers=0)["agents"][0]["outputs"] == 0
