"""The idempotency key table, sans-IO: plain synchronous tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from felix._core.idempotency import Applied, Claim, KeyTable, body_digest, check_key
from felix._core.workflow import WorkflowState
from felix._errors import IdempotencyKeyReused, InvalidEvent

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def test_keys_are_checked() -> None:
    assert check_key("a") == "a"
    assert check_key("A-z_0.9:x" * 14) == "A-z_0.9:x" * 14  # 126 characters
    for bad in ["", "x" * 129, "has space", "é", "a/b", 7, None]:
        with pytest.raises(InvalidEvent, match="1-128 characters"):
            check_key(bad)


def test_the_digest_ignores_key_order_and_one_event_is_a_batch_of_one() -> None:
    event = {"type": "synthesis", "content": "x", "final": True}
    same = {"final": True, "content": "x", "type": "synthesis"}
    assert body_digest([event]) == body_digest([same])
    assert body_digest([event]) != body_digest([{**event, "content": "y"}])
    assert Claim.of("k", [event]).digest == body_digest([event])


def test_a_repeat_gets_the_first_answer_and_another_body_is_refused() -> None:
    table = KeyTable(limit=10)
    applied = Applied("d1", 2, 4, 5)
    table.remember("k", applied)
    assert table.recall("k", "d1") == applied
    assert table.recall("other", "d1") is None
    with pytest.raises(IdempotencyKeyReused) as refused:
        table.recall("k", "d2")
    assert (refused.value.http_status, refused.value.code) == (422, "idempotency_key_reused")


def test_the_table_keeps_the_most_recent_keys_only() -> None:
    table = KeyTable(limit=3)
    for n in range(5):
        table.remember(f"k{n}", Applied("d", 1, n + 1, n + 1))
    assert len(table) == 3
    assert table.recall("k0", "d") is None  # forgotten: the oldest go first
    assert table.recall("k4", "d") == Applied("d", 1, 5, 5)


def test_the_stored_form_round_trips() -> None:
    for applied in [Applied("ab" * 16, 3, 7, 9), Applied("cd" * 16, 0, None, None)]:
        assert Applied.decode(applied.encode()) == applied


def test_a_workflow_state_owns_its_table() -> None:
    state = WorkflowState(workflow_id="wf", created_at="2026-11-26T00:00:00.000000Z")
    events = state.publish([("synthesis", {"content": "x"})], NOW)
    state.keys.remember("k", Applied.of("d", events))
    assert state.keys.recall("k", "d") == Applied("d", 1, 1, 1)
    other = WorkflowState(workflow_id="wf2", created_at="2026-11-26T00:00:00.000000Z")
    assert other.keys.recall("k", "d") is None
