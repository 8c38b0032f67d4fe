"""The sans-IO event layer: validation, strict JSON decoding, encode-once framing.

Every refusal must be :class:`InvalidEvent` (422) or :class:`EventTooLarge` (413) with a
message naming the field and the rule, never another exception (which would be a 500).
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from felix._core import events as events_module
from felix._core.events import (
    ENVELOPE_FIELDS,
    STATUSES,
    TERMINAL_STATUSES,
    WORKFLOW_EVENT_TYPES,
    Event,
    decode_json,
    format_timestamp,
    validate_broadcast,
    validate_event,
)
from felix._core.workflow import WorkflowState
from felix._errors import EventTooLarge, FelixError, InvalidEvent

NOW = datetime(2026, 11, 26, 17, 33, 8, 123456, tzinfo=UTC)
NOW_TEXT = "2026-11-26T17:33:08.123456Z"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")

#: The smallest valid event of each type in the contract's table.
MINIMAL: dict[str, dict[str, Any]] = {
    "workflow_status": {"status": "running"},
    "agent_spawned": {"agent_id": "research-1", "agent_type": "research", "spawn_time": 0.1},
    "agent_output": {"agent_id": "research-1", "content": "found it", "confidence": 0.82},
    "synthesis": {"content": "summary"},
    "error": {"message": "tool timed out"},
    "completed": {},
}


def assert_invalid(exc: pytest.ExceptionInfo[InvalidEvent], *fragments: str) -> None:
    """The error is a 422 whose message holds every fragment."""
    assert type(exc.value) is InvalidEvent
    assert exc.value.http_status == 422
    assert exc.value.code == "invalid"
    for fragment in fragments:
        assert fragment in exc.value.message, (fragment, exc.value.message)
    assert exc.value.to_json()["message"] == exc.value.message


def test_contract_table_is_the_one_validated() -> None:
    assert set(MINIMAL) == WORKFLOW_EVENT_TYPES
    assert STATUSES == ("pending", "running", "completed", "failed", "cancelled")
    assert frozenset({"completed", "failed", "cancelled"}) == TERMINAL_STATUSES
    assert frozenset({"type", "workflow_id", "seq", "timestamp"}) == ENVELOPE_FIELDS


# --- validate_event: accepted ------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "fields"),
    [
        *[("workflow_status", {"status": status}) for status in STATUSES],
        ("agent_spawned", MINIMAL["agent_spawned"]),
        ("agent_spawned", {"agent_id": "a", "agent_type": "t", "spawn_time": 0}),
        ("agent_spawned", {"agent_id": "a", "agent_type": "t", "spawn_time": -3.5}),
        ("agent_output", MINIMAL["agent_output"]),
        ("agent_output", {"agent_id": "a", "content": "", "confidence": 0}),
        ("agent_output", {"agent_id": "a", "content": "x", "confidence": 1}),
        ("agent_output", {"agent_id": "a", "content": "x", "confidence": 0.0}),
        ("agent_output", {"agent_id": "a", "content": "x", "confidence": 1.0}),
        ("synthesis", MINIMAL["synthesis"]),
        ("synthesis", {"content": "s", "confidence": 0.5, "agents_synthesized": 3, "final": True}),
        ("synthesis", {"content": "s", "agents_synthesized": ["a", "b"], "final": False}),
        ("synthesis", {"content": "s", "agents_synthesized": 0}),
        ("synthesis", {"content": "s", "agents_synthesized": []}),
        ("error", MINIMAL["error"]),
        ("error", {"message": "boom", "fatal": True}),
        ("error", {"message": "boom", "fatal": False}),
        ("completed", {}),
        ("completed", {"result": None}),
        ("completed", {"result": {"answer": [1, 2.5, "three", None, True]}}),
        ("completed", {"result": "plain"}),
    ],
)
def test_valid_event_is_accepted_with_extra_fields_kept(
    event_type: str, fields: dict[str, Any]
) -> None:
    extra = {"trace": {"nested": [1, "é"]}, "note": "kept", "flag": None}
    obj = {"type": event_type, **fields, **extra}
    snapshot = json.loads(json.dumps(obj))

    got_type, got_fields = validate_event(obj)

    assert got_type == event_type
    assert got_fields == {**fields, **extra}
    assert "type" not in got_fields
    assert obj == snapshot  # the input is not modified


# --- validate_event: refused -------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "field"),
    [
        ("workflow_status", "status"),
        ("agent_spawned", "agent_id"),
        ("agent_spawned", "agent_type"),
        ("agent_spawned", "spawn_time"),
        ("agent_output", "agent_id"),
        ("agent_output", "content"),
        ("agent_output", "confidence"),
        ("synthesis", "content"),
        ("error", "message"),
    ],
)
def test_missing_required_field_is_named(event_type: str, field: str) -> None:
    obj = {"type": event_type, **MINIMAL[event_type]}
    del obj[field]
    with pytest.raises(InvalidEvent) as exc:
        validate_event(obj)
    assert_invalid(exc, event_type, f"'{field}'", "required")


NUMBER = "must be a number"
UNIT = "must be between 0 and 1"
STRING = "must be a non-empty string"
TEXT = "must be a string"
BOOLEAN = "must be true or false"


@pytest.mark.parametrize(
    ("event_type", "field", "value", "rule"),
    [
        ("workflow_status", "status", "done", "must be one of"),
        ("workflow_status", "status", "RUNNING", "must be one of"),
        ("workflow_status", "status", "", "must be one of"),
        ("workflow_status", "status", 1, "must be one of"),
        ("workflow_status", "status", None, "must be one of"),
        ("workflow_status", "status", ["running"], "must be one of"),
        ("agent_spawned", "agent_id", "", STRING),
        ("agent_spawned", "agent_id", 7, STRING),
        ("agent_spawned", "agent_id", None, STRING),
        ("agent_spawned", "agent_type", "", STRING),
        ("agent_spawned", "agent_type", ["research"], STRING),
        ("agent_spawned", "spawn_time", "0.1", NUMBER),
        ("agent_spawned", "spawn_time", True, NUMBER),
        ("agent_spawned", "spawn_time", False, NUMBER),
        ("agent_spawned", "spawn_time", None, NUMBER),
        ("agent_spawned", "spawn_time", math.nan, NUMBER),
        ("agent_spawned", "spawn_time", math.inf, NUMBER),
        ("agent_spawned", "spawn_time", -math.inf, NUMBER),
        ("agent_output", "agent_id", "", STRING),
        ("agent_output", "agent_id", 1, STRING),
        ("agent_output", "content", 5, TEXT),
        ("agent_output", "content", None, TEXT),
        ("agent_output", "content", {"text": "x"}, TEXT),
        ("agent_output", "confidence", "0.8", NUMBER),
        ("agent_output", "confidence", True, NUMBER),
        ("agent_output", "confidence", None, NUMBER),
        ("agent_output", "confidence", math.nan, NUMBER),
        ("agent_output", "confidence", math.inf, NUMBER),
        ("agent_output", "confidence", 1.5, UNIT),
        ("agent_output", "confidence", 1.0000001, UNIT),
        ("agent_output", "confidence", -0.1, UNIT),
        ("agent_output", "confidence", 2, UNIT),
        ("agent_output", "confidence", -1, UNIT),
        ("synthesis", "content", 1, TEXT),
        ("synthesis", "content", None, TEXT),
        ("synthesis", "confidence", 1.01, UNIT),
        ("synthesis", "confidence", -0.5, UNIT),
        ("synthesis", "confidence", "high", NUMBER),
        ("synthesis", "confidence", False, NUMBER),
        ("synthesis", "confidence", math.nan, NUMBER),
        ("synthesis", "confidence", None, NUMBER),
        ("synthesis", "final", "yes", BOOLEAN),
        ("synthesis", "final", 1, BOOLEAN),
        ("synthesis", "final", None, BOOLEAN),
        ("synthesis", "agents_synthesized", -1, "a count or a list of agent ids"),
        ("synthesis", "agents_synthesized", True, "a count or a list of agent ids"),
        ("synthesis", "agents_synthesized", 2.5, "a count or a list of agent ids"),
        ("synthesis", "agents_synthesized", "a,b", "a count or a list of agent ids"),
        ("synthesis", "agents_synthesized", ["a", 1], "a count or a list of agent ids"),
        ("error", "message", 1, TEXT),
        ("error", "message", None, TEXT),
        ("error", "fatal", "true", BOOLEAN),
        ("error", "fatal", 1, BOOLEAN),
        ("error", "fatal", None, BOOLEAN),
    ],
)
def test_wrong_field_value_names_field_and_rule(
    event_type: str, field: str, value: Any, rule: str
) -> None:
    obj = {"type": event_type, **MINIMAL[event_type], field: value}
    with pytest.raises(InvalidEvent) as exc:
        validate_event(obj)
    assert_invalid(exc, event_type, f"'{field}'", rule)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(1.5, id="1.5"),
        pytest.param(10.0**300, id="1e300-float"),
        pytest.param(10**400, id="10**400-int"),
        pytest.param(-(10**400), id="-10**400-int"),
    ],
)
def test_confidence_out_of_range_is_refused_however_large(value: float) -> None:
    # Python ints are unbounded: a JSON literal of 400 digits is an int, and a
    # contract number all the same. Refusing it must still be a 422.
    obj = {"type": "agent_output", "agent_id": "a", "content": "x", "confidence": value}
    with pytest.raises(InvalidEvent) as exc:
        validate_event(obj)
    assert_invalid(exc, "'confidence'")


def test_huge_integer_spawn_time_is_accepted_or_refused_as_invalid() -> None:
    obj = {"type": "agent_spawned", "agent_id": "a", "agent_type": "t", "spawn_time": 10**400}
    refused: InvalidEvent | None = None
    try:
        _, fields = validate_event(obj)
    except InvalidEvent as error:
        refused = error
    if refused is None:
        assert fields["spawn_time"] == 10**400
    else:
        assert refused.http_status == 422
        assert "'spawn_time'" in refused.message


@pytest.mark.parametrize(
    ("obj", "fragments"),
    [
        ({"status": "running"}, ("'type'", "required")),
        ({"type": None, "status": "running"}, ("'type'", "string")),
        ({"type": 5}, ("'type'", "string")),
        ({"type": "agent_exploded"}, ("'type'", "unknown event type 'agent_exploded'")),
        ({"type": "Completed"}, ("'type'", "unknown event type")),
        ({"type": ""}, ("'type'", "unknown event type")),
        # Types only the server sends are not a producer's to publish.
        ({"type": "connected"}, ("'type'", "unknown event type 'connected'")),
        ({"type": "pong"}, ("'type'", "unknown event type")),
        ({"type": "command_error", "message": "x"}, ("'type'", "unknown event type")),
    ],
)
def test_missing_or_unknown_type_is_refused(
    obj: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidEvent) as exc:
        validate_event(obj)
    assert_invalid(exc, *fragments)


def test_unknown_type_message_lists_the_allowed_types() -> None:
    with pytest.raises(InvalidEvent) as exc:
        validate_event({"type": "nope"})
    for event_type in WORKFLOW_EVENT_TYPES:
        assert event_type in exc.value.message


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        ([], "an array"),
        ([{"type": "completed"}], "an array"),
        ("completed", "a string"),
        (1, "a number"),
        (1.5, "a number"),
        (True, "a boolean"),
        (None, "null"),
    ],
)
def test_non_object_event_is_refused(obj: Any, kind: str) -> None:
    with pytest.raises(InvalidEvent) as exc:
        validate_event(obj)
    assert_invalid(exc, "must be a JSON object", kind)


@pytest.mark.parametrize("event_type", sorted(WORKFLOW_EVENT_TYPES))
@pytest.mark.parametrize(
    ("field", "value"),
    [("workflow_id", "wf_other"), ("seq", 99), ("timestamp", NOW_TEXT), ("seq", None)],
)
def test_envelope_field_from_producer_is_refused(event_type: str, field: str, value: Any) -> None:
    obj = {"type": event_type, **MINIMAL[event_type], field: value}
    with pytest.raises(InvalidEvent) as exc:
        validate_event(obj)
    assert_invalid(exc, f"'{field}'", "envelope", "set by the server")


# --- decode_json -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b'{"type":"synthesis","content":"r\xc3\xa9sum\xc3\xa9"}',
            {"type": "synthesis", "content": "résumé"},
        ),
        ('{"a": [1, 2.5, null, true]}', {"a": [1, 2.5, None, True]}),
        (b"[]", []),
        (b'  {"a": {"a": 1}}  ', {"a": {"a": 1}}),  # the same key in different objects is fine
    ],
)
def test_decode_json_accepts_strict_json(data: bytes | str, expected: Any) -> None:
    assert decode_json(data) == expected


@pytest.mark.parametrize(
    "data",
    [b"", b"   ", b"{", b'{"a":}', b'{"a":1,}', b"not json", b"{'a': 1}", '{"a" 1}', b'{"a":1}x'],
)
def test_decode_json_malformed(data: bytes | str) -> None:
    with pytest.raises(InvalidEvent) as exc:
        decode_json(data)
    assert_invalid(exc, "malformed JSON", "line", "column")


@pytest.mark.parametrize(
    "data", [b'{"content":"\xff"}', b"\xc3\x28", b'{"a":"\xed\xa0\x80"}', b"\x80"]
)
def test_decode_json_invalid_utf8(data: bytes) -> None:
    with pytest.raises(InvalidEvent) as exc:
        decode_json(data)
    assert_invalid(exc, "not valid UTF-8", "byte")


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (b'{"type":"completed","type":"error"}', "'type'"),
        (b'{"a":1,"b":2,"a":1}', "'a'"),
        (b'{"outer":{"x":1,"x":2}}', "'x'"),
        (b'[{"k":1},{"k":1,"k":1}]', "'k'"),
    ],
)
def test_decode_json_duplicate_keys(data: bytes, key: str) -> None:
    with pytest.raises(InvalidEvent) as exc:
        decode_json(data)
    assert_invalid(exc, "duplicate key", key)


@pytest.mark.parametrize(
    ("data", "literal"),
    [
        (b'{"confidence": NaN}', "NaN"),
        (b'{"confidence": Infinity}', "Infinity"),
        (b'{"confidence": -Infinity}', "-Infinity"),
        (b"[NaN]", "NaN"),
    ],
)
def test_decode_json_nan_and_infinity_literals(data: bytes, literal: str) -> None:
    with pytest.raises(InvalidEvent) as exc:
        decode_json(data)
    assert_invalid(exc, f"{literal} is not valid JSON")


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000,
        "[" * 100_000 + "]" * 100_000,
        b'{"a":' * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    ],
)
def test_decode_json_deep_nesting(data: bytes | str) -> None:
    with pytest.raises(InvalidEvent) as exc:
        decode_json(data)
    assert_invalid(exc, "nested too deeply")


def _ingest(body: bytes) -> list[Event]:
    """What the REST route does with one event body: decode, validate, publish."""
    state = WorkflowState(workflow_id="wf_3f9a1c2b7d4e", created_at=NOW_TEXT)
    return state.publish([validate_event(decode_json(body))], NOW)


@pytest.mark.parametrize(
    "body",
    [
        # 1e400 is JSON by the grammar but overflows to inf, which cannot be encoded back.
        pytest.param(b'{"type":"completed","result":1e400}', id="float-overflow-result"),
        pytest.param(
            b'{"type":"synthesis","content":"s","score":-1e400}', id="float-overflow-extra"
        ),
        # A lone surrogate escape decodes to a str that has no UTF-8 encoding.
        pytest.param(b'{"type":"synthesis","content":"\\ud800"}', id="lone-surrogate-value"),
        pytest.param(b'{"type":"completed","\\udc00":1}', id="lone-surrogate-key"),
    ],
)
def test_body_that_cannot_become_a_frame_is_refused_as_invalid(body: bytes) -> None:
    # decode_json/validate_event accept these, so publishing must not be what fails
    # with a non-Felix error (a 500 and an exception inside the workflow's actor).
    with pytest.raises(InvalidEvent) as exc:
        _ingest(body)
    assert exc.value.http_status == 422


def test_integer_literal_over_python_digit_limit_is_accepted_or_invalid() -> None:
    # CPython refuses int literals over 4300 digits with ValueError, not JSONDecodeError.
    body = b'{"type":"completed","result":' + b"1" * 5000 + b"}"
    refused: FelixError | None = None
    try:
        events = _ingest(body)
    except FelixError as error:
        refused = error
    if refused is None:
        assert events[0].fields["result"] == int("1" * 5000)
    else:
        assert isinstance(refused, InvalidEvent)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"result": math.nan}, id="nan-result"),
        pytest.param({"result": [math.inf]}, id="nested-inf-result"),
        pytest.param({"x": -math.inf}, id="-inf-extra"),
    ],
)
def test_non_finite_extra_field_from_embedding_api_is_invalid(fields: dict[str, Any]) -> None:
    # hub.send_workflow_event passes Python values straight to validate_event.
    state = WorkflowState(workflow_id="wf_3f9a1c2b7d4e", created_at=NOW_TEXT)
    with pytest.raises(InvalidEvent):
        state.publish([validate_event({"type": "completed", **fields})], NOW)
    assert state.last_seq == 0
    assert state.status == "pending"


# --- Event.build: encode once, flat envelope ---------------------------------------


def test_event_build_encodes_a_flat_object_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real_encode = events_module.encode_utf8

    def counting_encode(obj: Any) -> tuple[str, bytes]:
        calls.append(obj)
        return real_encode(obj)

    monkeypatch.setattr(events_module, "encode_utf8", counting_encode)
    fields = {
        "agent_id": "research-1",
        "content": 'résumé — 研究 🚀 "quoted" \\ \n',
        "confidence": 0.82,
        "extra": {"nested": ["ü"]},
    }

    event = Event.build("agent_output", "wf_3f9a1c2b7d4e", 7, NOW_TEXT, fields)

    assert len(calls) == 1
    parsed = json.loads(event.frame.text)
    assert parsed == {
        "type": "agent_output",
        "workflow_id": "wf_3f9a1c2b7d4e",
        "seq": 7,
        "timestamp": NOW_TEXT,
        **fields,
    }
    assert parsed == event.to_json()
    # The wire bytes are the whole frame: header, then the same UTF-8 payload.
    payload = event.frame.text.encode()
    assert event.frame.wire.endswith(payload)
    assert event.frame.wire[0] == 0x81
    assert len(event.frame.wire) - len(payload) in (2, 4, 10)
    assert "fields" not in parsed
    assert "data" not in parsed
    assert event.frame.type == event.type == "agent_output"
    assert event.frame.size == len(event.frame.text.encode("utf-8"))
    assert event.frame.size > len(event.frame.text)  # non-ASCII counted in bytes
    assert (event.workflow_id, event.seq, event.timestamp) == ("wf_3f9a1c2b7d4e", 7, NOW_TEXT)
    assert event.fields == fields
    assert len(calls) == 1  # reading the event encodes nothing more


def test_event_frame_is_one_text_line_of_compact_json() -> None:
    event = Event.build("completed", "wf_1", 1, NOW_TEXT, {"result": {"a": [1, 2]}})
    assert "\n" not in event.frame.text
    assert event.frame.text.startswith("{")
    assert json.loads(event.frame.text)["result"] == {"a": [1, 2]}


# --- validate_broadcast ------------------------------------------------------------


def test_broadcast_is_stamped_by_the_server_and_encoded() -> None:
    frame = validate_broadcast({"type": "maintenance", "message": "redémarrage à 18h"}, NOW, 65536)

    parsed = json.loads(frame.text)
    assert parsed == {"type": "maintenance", "message": "redémarrage à 18h", "timestamp": NOW_TEXT}
    assert "seq" not in parsed
    assert "workflow_id" not in parsed
    assert frame.type == "maintenance"
    assert frame.size == len(frame.text.encode("utf-8"))
    assert frame.size > len(frame.text)


def test_broadcast_timestamp_comes_from_now_converted_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    moment = datetime(2026, 11, 26, 18, 33, 8, 123456, tzinfo=paris)
    frame = validate_broadcast({"type": "tick"}, moment, 65536)
    assert json.loads(frame.text)["timestamp"] == NOW_TEXT


@pytest.mark.parametrize(
    "event_type", sorted(WORKFLOW_EVENT_TYPES | {"connected", "pong", "command_error"})
)
def test_broadcast_reserved_type_is_refused(event_type: str) -> None:
    with pytest.raises(InvalidEvent) as exc:
        validate_broadcast({"type": event_type, "message": "m"}, NOW, 65536)
    assert_invalid(exc, "'type'", f"'{event_type}'", "reserved")


@pytest.mark.parametrize(
    ("field", "value"), [("workflow_id", "wf_1"), ("seq", 1), ("timestamp", NOW_TEXT)]
)
def test_broadcast_envelope_field_is_refused(field: str, value: Any) -> None:
    with pytest.raises(InvalidEvent) as exc:
        validate_broadcast({"type": "notice", field: value}, NOW, 65536)
    assert_invalid(exc, f"'{field}'", "set by the server")


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"type": None},
        {"type": 3},
        {"type": ""},
        {"type": "1abc"},
        {"type": "a b"},
        {"type": "x" * 65},
    ],
)
def test_broadcast_bad_type_name_is_refused(obj: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent) as exc:
        validate_broadcast(obj, NOW, 65536)
    assert_invalid(exc, "'type'")


@pytest.mark.parametrize("obj", [[], "notice", 1, None, True])
def test_broadcast_non_object_is_refused(obj: Any) -> None:
    with pytest.raises(InvalidEvent) as exc:
        validate_broadcast(obj, NOW, 65536)
    assert_invalid(exc, "must be a JSON object")


def test_broadcast_size_limit_is_inclusive_and_gives_413() -> None:
    obj = {"type": "notice", "message": "ü" * 100}
    size = validate_broadcast(obj, NOW, 1_000_000).size
    assert size > 200  # the limit is in UTF-8 bytes, not characters

    assert validate_broadcast(obj, NOW, size).size == size
    with pytest.raises(EventTooLarge) as exc:
        validate_broadcast(obj, NOW, size - 1)
    assert exc.value.http_status == 413
    assert exc.value.code == "too_large"
    assert str(size) in exc.value.message
    assert str(size - 1) in exc.value.message


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({"type": "notice", "value": math.inf}, id="inf"),
        pytest.param({"type": "notice", "value": math.nan}, id="nan"),
        pytest.param({"type": "notice", "message": "\ud800"}, id="lone-surrogate"),
    ],
)
def test_broadcast_that_cannot_be_encoded_is_invalid(obj: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent):
        validate_broadcast(obj, NOW, 65536)


# --- format_timestamp --------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (NOW, NOW_TEXT),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000000Z"),
        (
            datetime(
                2026, 11, 27, 2, 3, 8, 123456, tzinfo=timezone(timedelta(hours=8, minutes=30))
            ),
            NOW_TEXT,
        ),
        (
            datetime(2026, 12, 31, 20, 0, 0, 1, tzinfo=timezone(timedelta(hours=-5))),
            "2027-01-01T01:00:00.000001Z",
        ),
    ],
)
def test_format_timestamp_is_rfc3339_utc_with_z_and_microseconds(
    moment: datetime, expected: str
) -> None:
    text = format_timestamp(moment)
    assert text == expected
    assert RFC3339_UTC.match(text)
    assert datetime.fromisoformat(text) == moment


def test_validation_follows_the_one_event_table() -> None:
    # A valid event of every type passes; leaving out any required field of the
    # table, or giving any field a value of the wrong kind, is refused by name.
    from felix._core.events import EVENT_TYPES, WORKFLOW_EVENT_TYPES, Kind

    good = {
        Kind.NAME: "a1",
        Kind.TEXT: "",
        Kind.NUMBER: 1.5,
        Kind.UNIT: 0.5,
        Kind.BOOLEAN: True,
        Kind.STATUS: "running",
        Kind.AGENTS: ["a1"],
        Kind.ANY: {"any": [1]},
    }
    assert frozenset(EVENT_TYPES) == WORKFLOW_EVENT_TYPES
    for event_type, specs in EVENT_TYPES.items():
        event = {"type": event_type, **{spec.name: good[spec.kind] for spec in specs}}
        assert validate_event(event)[0] == event_type
        for spec in specs:
            if spec.required:
                missing = {key: value for key, value in event.items() if key != spec.name}
                with pytest.raises(InvalidEvent, match=f"field '{spec.name}' is required"):
                    validate_event(missing)
            if spec.kind is not Kind.ANY:
                with pytest.raises(InvalidEvent, match=f"field '{spec.name}'"):
                    validate_event({**event, spec.name: {"wrong": "kind"}})
