"""Event types, validation and encode-once framing. Sans-IO: no trio here.

An event is validated once, given its envelope once and serialised once; the
resulting :class:`Frame` (text plus its UTF-8 size) is the very object every
subscriber's buffer holds, so fan-out never touches JSON again.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from felix._errors import EventTooLarge, InvalidEvent, cut, quote

__all__ = [
    "ENVELOPE_FIELDS",
    "EVENT_TYPES",
    "MAX_JSON_DEPTH",
    "STATUSES",
    "TERMINAL_STATUSES",
    "WORKFLOW_EVENT_TYPES",
    "Event",
    "FieldSpec",
    "Frame",
    "Kind",
    "check_depth",
    "decode_json",
    "encode",
    "format_timestamp",
    "make_frame",
    "nests_deeper",
    "sse_message",
    "validate_broadcast",
    "validate_event",
]

STATUSES: Final = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL_STATUSES: Final = frozenset({"completed", "failed", "cancelled"})


class Kind(enum.Enum):
    """What a producer event's field must hold (the contract's table of types)."""

    #: A non-empty string (an id or a name).
    NAME = "name"
    #: Any string (content, a message).
    TEXT = "text"
    #: A finite number.
    NUMBER = "number"
    #: A number from 0 to 1 (a confidence).
    UNIT = "unit"
    BOOLEAN = "boolean"
    #: One of :data:`STATUSES`.
    STATUS = "status"
    #: A count (integer >= 0) or a list of agent ids; null is allowed.
    AGENTS = "agents"
    #: Any JSON value.
    ANY = "any"


@attrs.frozen
class FieldSpec:
    """One field of a producer event type: its name, what it holds, whether required."""

    name: str
    kind: Kind
    required: bool = True


#: The one table of producer event types and their fields, in the contract's
#: order. Validation (:func:`validate_event`) and the OpenAPI document's event
#: schemas are both made from it; extra fields are always kept.
EVENT_TYPES: Final[dict[str, tuple[FieldSpec, ...]]] = {
    "workflow_status": (FieldSpec("status", Kind.STATUS),),
    "agent_spawned": (
        FieldSpec("agent_id", Kind.NAME),
        FieldSpec("agent_type", Kind.NAME),
        FieldSpec("spawn_time", Kind.NUMBER),
    ),
    "agent_output": (
        FieldSpec("agent_id", Kind.NAME),
        FieldSpec("content", Kind.TEXT),
        FieldSpec("confidence", Kind.UNIT),
    ),
    "synthesis": (
        FieldSpec("content", Kind.TEXT),
        FieldSpec("confidence", Kind.UNIT, required=False),
        FieldSpec("final", Kind.BOOLEAN, required=False),
        FieldSpec("agents_synthesized", Kind.AGENTS, required=False),
    ),
    "error": (FieldSpec("message", Kind.TEXT), FieldSpec("fatal", Kind.BOOLEAN, required=False)),
    "completed": (FieldSpec("result", Kind.ANY, required=False),),
}
WORKFLOW_EVENT_TYPES: Final = frozenset(EVENT_TYPES)
ENVELOPE_FIELDS: Final = frozenset({"type", "workflow_id", "seq", "timestamp"})
#: Types only the server sends; a producer may not publish or broadcast them.
SERVER_TYPES: Final = frozenset({"connected", "pong", "command_error", "workflow_created"})
TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
#: Deepest nesting of arrays and objects accepted anywhere JSON comes in
#: (``FELIX_MAX_JSON_DEPTH``'s default). The top-level value counts as 1.
MAX_JSON_DEPTH: Final = 64

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode(obj: Any) -> str:
    """Compact JSON, UTF-8 kept as is.

    Raises :class:`InvalidEvent` for what JSON cannot carry: NaN, Infinity,
    objects that are not JSON, and lone surrogates (they cannot become UTF-8).
    """
    return encode_utf8(obj)[0]


def encode_utf8(obj: Any) -> tuple[str, bytes]:
    """:func:`encode`, returning the text and its UTF-8 bytes (encoded once)."""
    try:
        text = _encoder.encode(obj)
        return text, text.encode()
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise InvalidEvent(f"the event cannot be encoded as JSON: {_short(exc)}") from None
    except RecursionError:
        raise InvalidEvent("the event cannot be encoded as JSON: nested too deeply") from None


def _short(exc: Exception) -> str:
    return cut(str(exc))


# --- nesting depth -----------------------------------------------------------

_CONTAINERS: Final = (dict, list, tuple)


def nests_deeper(value: Any, limit: int) -> bool:
    """Whether ``value`` nests dicts and lists more than ``limit`` deep.

    The value itself is level 1 if it is a container (a scalar is level 0).
    Iterative, never recursive, and stops at the first level past the
    limit. It costs a type check per container item, not per byte: a 60 KB
    string field is one check, so on the publish path it is cheaper than any
    scan of the text. ``value`` must be free of reference cycles (it was
    parsed, or the encoder, which refuses cycles, has already seen it).
    """
    if not isinstance(value, _CONTAINERS):
        return False
    # Level by level: one list per level, not a stack entry per container
    # (three times faster on a batch of a thousand events).
    level = [value]
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below = []
        for container in level:
            for item in container.values() if isinstance(container, dict) else container:
                if isinstance(item, _CONTAINERS):
                    below.append(item)
        level = below
    return False


def check_depth(value: Any, limit: int, what: str = "JSON") -> None:
    """Raise :class:`InvalidEvent` (422) if ``value`` nests deeper than ``limit``."""
    if nests_deeper(value, limit):
        raise _too_deep(what, limit)


def _too_deep(what: str, limit: int) -> InvalidEvent:
    return InvalidEvent(
        f"{what} is nested too deeply: more than {limit} levels of arrays and objects, "
        "the limit (FELIX_MAX_JSON_DEPTH)"
    )


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``, as the contract shows."""
    # isoformat() is about twice as fast as strftime(); in UTC it ends "+00:00".
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return utc.isoformat(timespec="microseconds")[:-6] + "Z"


def frame_header(length: int) -> bytes:
    """The RFC 6455 header of an unmasked, final text frame of ``length`` bytes.

    Server frames are never masked, so without compression the bytes of a
    frame are the same for every subscriber and can be built once.
    """
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return bytes((0x81, 126)) + length.to_bytes(2, "big")
    return bytes((0x81, 127)) + length.to_bytes(8, "big")


@attrs.frozen(slots=True)
class Frame:
    """One encoded WebSocket text frame and what a buffer needs to know of it.

    ``wire`` is the complete frame as it goes on the wire (header and UTF-8
    payload) and ``size`` the payload's length, both computed once, so byte
    budgets and writes cost no encoding per subscriber. The frame holds its
    JSON only as these bytes: a retained event costs one copy of itself, not
    a text and a byte string besides (see :attr:`text`).
    """

    type: str
    size: int
    wire: bytes
    #: The workflow event's ``seq`` (the SSE ``id:``); None for server frames
    #: and broadcasts.
    seq: int | None = None

    @classmethod
    def of(
        cls, frame_type: str, text: str, payload: bytes | None = None, *, seq: int | None = None
    ) -> Frame:
        """Build a frame from its text (and its UTF-8 bytes, if already known)."""
        if payload is None:
            payload = text.encode()
        return cls(
            type=frame_type, size=len(payload), wire=frame_header(len(payload)) + payload, seq=seq
        )

    @property
    def text(self) -> str:
        """The JSON text, decoded from :attr:`wire` at each call (it is not kept).

        For writers that need a ``str`` (the ASGI path, the broker, tests);
        the direct socket writer sends :attr:`wire` as it is.
        """
        wire = self.wire
        return str(memoryview(wire)[len(wire) - self.size :], "utf-8")

    @functools.cached_property
    def sse(self) -> bytes:
        """The frame as one Server-Sent Events message, built on first use and kept.

        ``id: <seq>`` (workflow events only), ``event: <type>``, ``data: <text>``
        and the blank line that ends the message. Like :attr:`wire`, it is the
        same for every subscriber, so it is built once per event, and only
        for events someone reads over SSE.
        """
        return sse_message(self.type, self.text, self.seq)

    @functools.cached_property
    def sse_chunk(self) -> bytes:
        """:attr:`sse` as one HTTP/1.1 chunk (``<size in hex>\\r\\n<message>\\r\\n``).

        What a streaming response writes to the socket for this event, built
        once per event like :attr:`wire`: a chunked body's framing is the same
        for every subscriber.
        """
        # Built from the text, not from :attr:`sse`: a frame that is only ever
        # written directly should not keep the message twice.
        message = sse_message(self.type, self.text, self.seq)
        return b"%x\r\n%b\r\n" % (len(message), message)


def sse_message(event_type: str, text: str, seq: int | None = None) -> bytes:
    """One Server-Sent Events message: ``id:`` (if ``seq``), ``event:``, ``data:``, blank line.

    Felix's JSON is one line (the encoder escapes line breaks in strings); a
    text with line breaks all the same is split over several ``data:`` lines,
    which a client joins back with ``\\n``.
    """
    head = f"id: {seq}\nevent: {event_type}\n" if seq is not None else f"event: {event_type}\n"
    if "\n" in text or "\r" in text:
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        data = "".join(f"data: {line}\n" for line in lines)
    else:
        data = f"data: {text}\n"
    return (head + data + "\n").encode()


def make_frame(obj: dict[str, Any]) -> Frame:
    """Encode a server-built message (``connected``, ``pong``, broadcasts)."""
    return Frame.of(obj["type"], *encode_utf8(obj))


@attrs.frozen(slots=True)
class Event:
    """A published workflow event with its envelope, as subscribers see it.

    ``frame`` is the single encoding shared by history and every subscriber.
    :attr:`fields`, the producer's own fields (never the envelope), are kept
    as Python objects only until the event enters a workflow's history; from
    then on they are parsed back from the frame when asked for, so a retained
    event is held once, as its wire bytes.
    """

    type: str
    workflow_id: str
    seq: int
    timestamp: str
    frame: Frame
    _fields: dict[str, Any] | None = attrs.field(default=None, eq=False, repr=False, alias="fields")

    @classmethod
    def build(
        cls,
        event_type: str,
        workflow_id: str,
        seq: int,
        timestamp: str,
        fields: dict[str, Any],
        *,
        max_depth: int | None = None,
    ) -> Event:
        """Give ``fields`` an envelope and encode the result exactly once.

        Raises :class:`InvalidEvent` if the fields cannot be JSON, or (with
        ``max_depth``) nest deeper than that: fields handed in as Python
        objects (embedding) get the same bound as parsed ones.
        """
        envelope = {
            "type": event_type,
            "workflow_id": workflow_id,
            "seq": seq,
            "timestamp": timestamp,
        }
        text, payload = encode_utf8({**envelope, **fields})
        if max_depth is not None:
            # After encoding, which refuses reference cycles the walk could not end on.
            check_depth(fields, max_depth, "the event")
        return cls(
            type=event_type,
            workflow_id=workflow_id,
            seq=seq,
            timestamp=timestamp,
            frame=Frame.of(event_type, text, payload, seq=seq),
            fields=fields,
        )

    @classmethod
    def from_text(cls, text: str) -> Event:
        """Rebuild an event from its own encoding (as a broker stored it).

        The text is kept as it is, so the frame every node sends is the very
        one the publishing node built.
        """
        obj = json.loads(text)
        return cls(
            type=obj["type"],
            workflow_id=obj["workflow_id"],
            seq=obj["seq"],
            timestamp=obj["timestamp"],
            frame=Frame.of(obj["type"], text, seq=obj["seq"]),
            fields={key: value for key, value in obj.items() if key not in ENVELOPE_FIELDS},
        )

    @property
    def fields(self) -> dict[str, Any]:
        """The producer's fields; parsed from the frame once the event is retained."""
        fields = self._fields
        if fields is None:
            obj = json.loads(self.frame.text)
            fields = {key: value for key, value in obj.items() if key not in ENVELOPE_FIELDS}
        return fields

    def retain(self) -> None:
        """Drop the parsed fields: the history keeps only the encoded frame.

        Called by :class:`~felix._core.history.History` when the event enters
        it; :attr:`fields` stays readable (parsed again on demand).
        """
        object.__setattr__(self, "_fields", None)

    def to_json(self) -> dict[str, Any]:
        """The event as the flat JSON object of the contract."""
        if self._fields is None:
            parsed: dict[str, Any] = json.loads(self.frame.text)
            return parsed
        return {
            "type": self.type,
            "workflow_id": self.workflow_id,
            "seq": self.seq,
            "timestamp": self.timestamp,
            **self._fields,
        }


# --- parsing -----------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidEvent(f"duplicate key {quote(key)} in JSON object")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise InvalidEvent(f"{name} is not valid JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise InvalidEvent(f"number {cut(literal)} is out of range")
    return value


def decode_json(data: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a request body strictly: UTF-8, no duplicate keys, no NaN/Infinity,
    arrays and objects nested at most ``max_depth`` deep.

    Every JSON document a client sends comes in here (REST bodies, producer
    frames, WebSocket commands), so nothing deeper than the limit is ever
    accepted for a later read to fail to encode. The parser's own recursion
    ends in :class:`RecursionError` about 1000 levels down, reported as too
    deep; below that the parsed value is walked without recursion. Raises
    :class:`InvalidEvent` (422) naming what is wrong.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        parsed = json.loads(
            data,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as exc:
        raise InvalidEvent(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise _too_deep("JSON", max_depth) from None
    except ValueError as exc:
        # e.g. integers past Python's 4300-digit conversion limit.
        raise InvalidEvent(f"malformed JSON: {_short(exc)}") from None
    check_depth(parsed, max_depth)
    return parsed


# --- validation --------------------------------------------------------------


def _require(fields: dict[str, Any], name: str, event_type: str) -> Any:
    if name not in fields:
        raise InvalidEvent(f"{event_type}: field {name!r} is required")
    return fields[name]


def _string(fields: dict[str, Any], name: str, event_type: str, *, required: bool = True) -> None:
    if not required and name not in fields:
        return
    value = _require(fields, name, event_type)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{event_type}: field {name!r} must be a non-empty string")


def _number(
    fields: dict[str, Any],
    name: str,
    event_type: str,
    *,
    required: bool = True,
    unit: bool = False,
) -> None:
    if not required and name not in fields:
        return
    value = _require(fields, name, event_type)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise InvalidEvent(f"{event_type}: field {name!r} must be a number")
    if unit and not 0 <= value <= 1:
        raise InvalidEvent(
            f"{event_type}: field {name!r} must be between 0 and 1, got {quote(value)}"
        )


def _boolean(fields: dict[str, Any], name: str, event_type: str) -> None:
    if name in fields and not isinstance(fields[name], bool):
        raise InvalidEvent(f"{event_type}: field {name!r} must be true or false")


def _text(fields: dict[str, Any], name: str, event_type: str) -> None:
    if not isinstance(_require(fields, name, event_type), str):
        raise InvalidEvent(f"{event_type}: field {name!r} must be a string")


def _unit(fields: dict[str, Any], name: str, event_type: str) -> None:
    _number(fields, name, event_type, unit=True)


def _status(fields: dict[str, Any], name: str, event_type: str) -> None:
    status = _require(fields, name, event_type)
    if status not in STATUSES:
        raise InvalidEvent(
            f"{event_type}: field {name!r} must be one of {', '.join(STATUSES)}, "
            f"got {quote(status)}"
        )


def _agents(fields: dict[str, Any], name: str, event_type: str) -> None:
    agents = fields.get(name)
    if (
        agents is not None
        and not (isinstance(agents, int) and not isinstance(agents, bool) and agents >= 0)
        and not (isinstance(agents, list) and all(isinstance(a, str) for a in agents))
    ):
        raise InvalidEvent(f"{event_type}: field {name!r} must be a count or a list of agent ids")


def _any(_fields: dict[str, Any], _name: str, _event_type: str) -> None:
    return


_CHECKS: Final[dict[Kind, Callable[[dict[str, Any], str, str], None]]] = {
    Kind.NAME: _string,
    Kind.TEXT: _text,
    Kind.NUMBER: _number,
    Kind.UNIT: _unit,
    Kind.BOOLEAN: _boolean,
    Kind.STATUS: _status,
    Kind.AGENTS: _agents,
    Kind.ANY: _any,
}


def validate_event(obj: Any) -> tuple[str, dict[str, Any]]:
    """Check one producer event against the contract's table of types.

    Returns ``(type, fields)`` with the envelope stripped. Raises
    :class:`InvalidEvent` naming the field and the rule it broke. Extra fields
    are kept, as the contract says.
    """
    if not isinstance(obj, dict):
        raise InvalidEvent(f"an event must be a JSON object, got {_json_kind(obj)}")
    event_type = obj.get("type")
    if not isinstance(event_type, str):
        raise InvalidEvent("field 'type' is required and must be a string")
    if event_type not in WORKFLOW_EVENT_TYPES:
        allowed = ", ".join(sorted(WORKFLOW_EVENT_TYPES))
        raise InvalidEvent(
            f"field 'type': unknown event type {quote(event_type)}; one of {allowed}"
        )
    taken = sorted(ENVELOPE_FIELDS.intersection(obj) - {"type"})
    if taken:
        raise InvalidEvent(
            f"{event_type}: field {taken[0]!r} is part of the envelope and set by the server"
        )
    fields = {key: value for key, value in obj.items() if key != "type"}
    for spec in EVENT_TYPES[event_type]:
        if spec.required or spec.name in fields:
            _CHECKS[spec.kind](fields, spec.name, event_type)
    return event_type, fields


def validate_broadcast(
    obj: Any, now: datetime, max_bytes: int, max_depth: int = MAX_JSON_DEPTH
) -> Frame:
    """Check a system broadcast and encode it once.

    A broadcast has no ``seq`` and no ``workflow_id``; the server stamps its
    ``timestamp``. Raises :class:`InvalidEvent` (also when it nests deeper
    than ``max_depth``) or :class:`EventTooLarge`.
    """
    if not isinstance(obj, dict):
        raise InvalidEvent(f"a broadcast must be a JSON object, got {_json_kind(obj)}")
    event_type = obj.get("type")
    if not isinstance(event_type, str) or not TYPE_NAME.fullmatch(event_type):
        raise InvalidEvent(
            "field 'type' is required: a name of letters, digits and _.:- starting with a letter"
        )
    if event_type in WORKFLOW_EVENT_TYPES or event_type in SERVER_TYPES:
        raise InvalidEvent(
            f"field 'type': {quote(event_type)} is reserved; a broadcast uses any other name"
        )
    taken = sorted(ENVELOPE_FIELDS.intersection(obj) - {"type"})
    if taken:
        raise InvalidEvent(
            f"field {taken[0]!r} is set by the server and not allowed in a broadcast"
        )
    text, payload = encode_utf8({**obj, "timestamp": format_timestamp(now)})
    check_depth(obj, max_depth, "the broadcast")
    frame = Frame.of(event_type, text, payload)
    if frame.size > max_bytes:
        raise EventTooLarge(f"broadcast is {frame.size} bytes encoded; the limit is {max_bytes}")
    return frame


def _json_kind(obj: Any) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, int | float):
        return "a number"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, list):
        return "an array"
    return type(obj).__name__
