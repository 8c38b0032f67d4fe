"""The JSON nesting limit: checked where JSON comes in, and nothing accepted breaks a read.

Sans-IO, plain sync tests. The red-team finding this answers: metadata nested
979 deep was accepted, and from then on every list of workflows answered 500
(the encoder ran out of stack), until the workflow was forgotten.
"""

from __future__ import annotations

import functools
import json
import sys
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from felix._core.events import (
    MAX_JSON_DEPTH,
    check_depth,
    decode_json,
    encode,
    nests_deeper,
    validate_broadcast,
    validate_event,
)
from felix._core.workflow import WorkflowState
from felix._errors import InvalidEvent
from felix.settings import Settings, SettingsError

NOW = datetime(2026, 11, 26, 17, 33, 8, 123456, tzinfo=UTC)
WF = "wf_3f9a1c2b7d4e"


def depth(value: Any) -> int:
    """The reference: nesting of arrays and objects, the top level counting 1."""
    if isinstance(value, list):
        return 1 + max((depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(item) for item in value.values()), default=0)
    return 0


def nested(levels: int, leaf: Any = 1) -> Any:
    """``levels`` alternating arrays and objects around ``leaf``."""
    value = leaf
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


# --- the walk ---------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [0, 1, 2, 63, 64, 65, 66, 200])
def test_the_walk_is_exact_at_the_limit(levels: int) -> None:
    assert nests_deeper(nested(levels), 64) is (levels > 64)
    assert nests_deeper([0, {"a": 1}, nested(levels)], 65) is (levels > 64)
    assert nests_deeper(("tuple", nested(levels)), 65) is (levels > 64)


def test_the_walk_does_not_recurse() -> None:
    value: Any = 1
    for _ in range(100_000):  # far past Python's recursion limit
        value = [value]
    assert nests_deeper(value, 64)
    assert not nests_deeper(value, 100_000)


@pytest.mark.parametrize(
    "text",
    [
        '["' + "[" * 500 + '"]',  # brackets in a string are not structure
        '{"a":"' + "{[" * 500 + '"}',
        '["\\"' + "[" * 500 + '"]',  # an escaped quote does not end the string
        '["\\\\", ' + ", ".join(['"["'] * 100) + "]",  # an escaped backslash ends there
    ],
)
def test_brackets_inside_strings_do_not_count(text: str) -> None:
    assert decode_json(text, max_depth=2) == json.loads(text)
    assert decode_json(text.encode(), max_depth=2) == json.loads(text)


def test_hostile_bodies_are_refused_fast() -> None:
    # A body limit's worth of the worst shapes: nesting far past what
    # Python's parser survives, unclosed nesting, and a wide flat array.
    deep = ["[" * 1_000_000, '{"a":' * 200_000, "[" * 900 + "]" * 900]
    for text in deep:
        started = time.perf_counter()
        with pytest.raises(InvalidEvent, match="nested too deeply"):
            decode_json(text)
        assert time.perf_counter() - started < 5.0
    # The walk's worst shape, many tiny containers, costs it about twice what
    # parsing costs (best of three each, against the noise of a shared machine).
    wide = "[" + "[]," * 300_000 + "[]]"
    parsed = decode_json(wide)
    assert len(parsed) == 300_001
    walk = min(timeit.repeat(lambda: nests_deeper(parsed, 64), number=1, repeat=3))
    parse = min(timeit.repeat(lambda: json.loads(wide), number=1, repeat=3))
    assert walk < 4 * parse


def test_a_python_object_with_a_cycle_is_refused_not_walked_forever() -> None:
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    state = WorkflowState(workflow_id=WF, created_at="x")
    with pytest.raises(InvalidEvent, match="cannot be encoded"):
        state.publish([("completed", {"result": cycle})], NOW)


def test_depth_error_names_the_limit_and_the_setting() -> None:
    with pytest.raises(InvalidEvent) as exc:
        check_depth([[[1]]], 2)
    assert exc.value.http_status == 422
    assert "nested too deeply" in exc.value.message
    assert "more than 2 levels" in exc.value.message
    assert "FELIX_MAX_JSON_DEPTH" in exc.value.message


# --- where JSON comes in ------------------------------------------------------------------


def test_the_red_team_body_is_refused_at_parse_time() -> None:
    body = '{"metadata":{"a":' + "[" * 977 + "]" * 977 + "}}"
    with pytest.raises(InvalidEvent) as exc:
        decode_json(body.encode())
    assert f"more than {MAX_JSON_DEPTH} levels" in exc.value.message


def test_decode_json_takes_the_configured_limit() -> None:
    assert decode_json(json.dumps(nested(64))) == nested(64)
    with pytest.raises(InvalidEvent, match="more than 64 levels"):
        decode_json(json.dumps(nested(65)))
    assert decode_json("[[1]]", max_depth=2) == [[1]]
    with pytest.raises(InvalidEvent, match="more than 2 levels"):
        decode_json("[[[1]]]", max_depth=2)


def test_python_objects_get_the_same_limit_when_encoded() -> None:
    # The embedding API takes dicts, not JSON text: the bound holds there too,
    # and names the event of the batch at fault.
    state = WorkflowState(workflow_id=WF, created_at="x", max_json_depth=8)
    fine = validate_event({"type": "completed", "result": nested(7)})
    deep = validate_event({"type": "completed", "result": nested(8)})
    synthesis = validate_event({"type": "synthesis", "content": "c"})
    with pytest.raises(InvalidEvent) as exc:
        state.publish([synthesis, deep], NOW)
    assert exc.value.details["index"] == 1
    assert "the event is nested too deeply" in exc.value.message
    assert state.last_seq == 0
    assert [event.seq for event in state.publish([synthesis, fine], NOW)] == [1, 2]


def test_broadcasts_get_the_limit() -> None:
    validate_broadcast({"type": "notice", "x": nested(3)}, NOW, 65536, max_depth=4)
    with pytest.raises(InvalidEvent, match="broadcast is nested too deeply"):
        validate_broadcast({"type": "notice", "x": nested(4)}, NOW, 65536, max_depth=4)


@pytest.mark.parametrize("value", [0, 257, -1])
def test_the_setting_is_bounded(value: int) -> None:
    with pytest.raises(SettingsError, match="max_json_depth"):
        Settings(max_json_depth=value)


def test_the_ceiling_leaves_the_encoder_room() -> None:
    # The deepest document the setting allows, wrapped as a read wraps it,
    # encodes with most of the interpreter's stack already in use.
    value = nested(256)
    assert with_headroom(300, lambda: encode([{"m": value}]))


# --- no accepted input can break a later read ----------------------------------------------


def with_headroom(frames: int, call: Callable[[], str]) -> str:
    """Run ``call`` with only ``frames`` levels of recursion left on the stack.

    A web framework's handler runs well down the stack (Hypercorn, Trio,
    Quart); encoding a response must not need the whole of it.
    """
    used = 0
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        used, frame = used + 1, frame.f_back
    return _descend(sys.getrecursionlimit() - used - frames, call)


def _descend(frames: int, call: Callable[[], str]) -> str:
    if frames <= 0:
        return call()
    return _descend(frames - 1, call)


LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet='[]{}"\\ab\u00e9', max_size=8),
)


@st.composite
def deep_json(draw: st.DrawFn) -> Any:
    """JSON values nested 0 to 80 levels (or 200 to 300), with strings full of brackets."""
    value: Any = draw(LEAVES)
    for _ in range(draw(st.integers(0, 80) | st.integers(200, 300))):
        siblings = draw(st.lists(LEAVES, max_size=2))
        if draw(st.booleans()):
            position = draw(st.integers(0, len(siblings)))
            value = [*siblings[:position], value, *siblings[position:]]
        else:
            keys = draw(st.lists(st.text(max_size=4), min_size=1, max_size=3, unique=True))
            value = {**dict(zip(keys[1:], siblings, strict=False)), keys[0]: value}
    return value


def bodies(value: Any) -> list[tuple[str, int]]:
    """Bodies a client could send around ``value``, with how deep each wraps it."""
    return [
        (json.dumps({"metadata": {"m": value}}), 2),
        (json.dumps({"type": "completed", "result": value}), 1),
        (json.dumps({"type": "synthesis", "content": "c", "extra": value}), 1),
        (json.dumps([{"type": "error", "message": "m", "detail": value}]), 2),
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deep_json())
def test_no_accepted_input_makes_a_later_read_fail(value: Any) -> None:
    state = WorkflowState(workflow_id=WF, created_at="x", history_size=100)
    for body, wrapping in bodies(value):
        if depth(value) + wrapping > MAX_JSON_DEPTH:
            with pytest.raises(InvalidEvent, match="nested too deeply"):
                decode_json(body)
            continue
        parsed = decode_json(body)
        if "metadata" in parsed:
            state.metadata = parsed["metadata"]
        else:
            events = parsed if isinstance(parsed, list) else [parsed]
            if not state.terminal:
                state.publish([validate_event(event) for event in events], NOW)
    # Every read a client can make, encoded by the one encoder with 150
    # levels of stack left: none may fail on what was accepted.
    reads = [
        {"workflows": [state.view(subscribers=0)], "total": 1},
        state.view(subscribers=0),
        {"events": [event.to_json() for event in state.events_after(0, 100)]},
    ]
    for read in reads:
        text = with_headroom(150, functools.partial(encode, read))
        assert json.loads(text) == read
