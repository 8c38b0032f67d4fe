"""The producer stream: ``WS /api/v1/ws/publish``, many publishes over one connection.

Each client text frame is one publish, ``{"ref", "workflow_id", "events": [...]}``
(or ``"event": {...}``), optionally with an ``idempotency_key``; each is
answered, in the order sent, with an ``ack`` or a ``nack`` (the REST error
code and message). The publish itself is the REST one: the same parser
(:func:`~felix._core.events.decode_json`), the same :meth:`Hub.submit` and so
the same validation, limits and idempotency.

The connection opens with a ``connected`` frame (``workflow_id: null``,
``connection_id``, and ``window``: how many frames may be unanswered).

Two tasks per connection, a window between them:

- the reader takes a frame, parses it and *queues* its publish on the
  workflow's actor (:meth:`Hub.submit` returns once it is in the inbox), then
  puts it in the window; it never waits for a publish to be applied, so frames
  are pipelined, and since it queues them one after the other, the frames of
  one workflow are applied in the order sent;
- the writer takes the window's entries in order, waits for each answer and
  sends it.

The window is a memory channel of ``FELIX_PRODUCER_WINDOW`` entries, whose
frames together hold at most ``FELIX_PRODUCER_WINDOW_BYTES`` (one frame always
fits): when either is full the reader stops reading and TCP pushes back on the
producer. A string ``ref`` is at most 256 characters. A full
inbox makes the reader wait up to ``FELIX_PUBLISH_TIMEOUT`` (as a REST publish
does), then the frame is refused with ``inbox_full`` and ``retry_after``.

Each frame counts as a publish against ``FELIX_RATE_PUBLISH`` (per key; per
address without one), refused with a ``rate_limited`` nack.

A frame refused with a retryable error (a 429 or a 503: ``rate_limited``,
``inbox_full``, ``broker_unavailable``, ``shutting_down``) *fences* its workflow for its
``retry_after`` seconds: the frames for that workflow read meanwhile are refused
with the same error instead of being applied out of order behind the refused
one. The producer resends from the first refused frame (with the same
idempotency keys, any frame that did get applied is answered, not applied
again).
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import attrs
import trio

from felix._core.events import decode_json, encode, format_timestamp, make_frame
from felix._errors import FelixError, InvalidEvent
from felix._runtime.hub import Hub, PendingPublish, check_workflow_id
from felix.web._asgi import Receive, Scope, Send
from felix.web.edge.publish import answer_of
from felix.web.edge.ratelimit import RateLimiter
from felix.web.hypercorn import current_connection

__all__ = ["CLOSE_TOO_LARGE", "PUBLISH_LIMIT", "serve_publish"]

logger = logging.getLogger("felix.producer")

#: Close code for a frame over the body limit (RFC 6455 "message too big").
CLOSE_TOO_LARGE: Final = 1009
#: Close code at shutdown, once every frame read has been answered.
CLOSE_GOING_AWAY: Final = 1001
#: The scope key under which the edge leaves ``FELIX_RATE_PUBLISH``'s limiter and
#: the name of the connection's bucket in it: every frame is a publish, and counts.
PUBLISH_LIMIT: Final = "felix.publish_limit"
#: Most answers written together in one socket write.
ANSWER_BATCH: Final = 256
#: Most workflows one connection keeps fenced at once.
MAX_FENCES: Final = 1024
#: Longest string ``ref``: it is held, and echoed, for every frame in flight.
MAX_REF_CHARS: Final = 256
#: The error code of a frame that is not a JSON object (its ``ref`` is unknown).
NOT_AN_OBJECT: Final = "invalid_event"


class NotAnObject(InvalidEvent):
    """A producer-stream frame that is not a JSON object (nack with ``ref: null``)."""

    code = NOT_AN_OBJECT


@attrs.frozen
class _InFlight:
    """One frame in the window: refused already, or a publish queued on an actor."""

    ref: Any
    workflow_id: str | None
    pending: PendingPublish | None = None
    error: FelixError | None = None
    #: The frame's size, counted against the window's byte budget until answered.
    size: int = 0

    @property
    def ready(self) -> bool:
        """Whether its answer is known, so writing it waits for nothing."""
        return self.pending is None or self.pending.done


@attrs.define(eq=False)
class _Budget:
    """The bytes of the frames in flight, bounded; one frame always fits."""

    limit: int
    used: int = 0
    _room: trio.Event = attrs.field(factory=trio.Event)

    async def take(self, size: int) -> None:
        """Wait until ``size`` more bytes fit (or nothing is in flight), then count them."""
        while self.used and self.used + size > self.limit:
            self._room = trio.Event()
            await self._room.wait()
        self.used += size

    def give(self, size: int) -> None:
        """Count ``size`` bytes answered."""
        self.used -= size
        self._room.set()


@attrs.define
class _Fences:
    """Workflows whose frames are refused for now, after a retryable refusal."""

    _until: dict[str, tuple[float, FelixError, Any]] = attrs.field(factory=dict)

    def refuse(self, workflow_id: str | None, ref: Any, error: FelixError) -> None:
        if workflow_id is None or error.http_status not in (429, 503):
            return
        now = trio.current_time()
        if len(self._until) >= MAX_FENCES:
            # Bounded: forget the fences that have lapsed (then the oldest).
            self._until = {w: f for w, f in self._until.items() if f[0] > now}
            while len(self._until) >= MAX_FENCES:
                del self._until[next(iter(self._until))]
        retry_after = getattr(error, "retry_after", None) or 1
        self._until[workflow_id] = (now + retry_after, error, ref)

    def check(self, workflow_id: str) -> None:
        fence = self._until.get(workflow_id)
        if fence is None:
            return
        until, error, ref = fence
        if trio.current_time() >= until:
            del self._until[workflow_id]
            return
        raise _Fenced(
            error,
            f"an earlier frame for workflow {workflow_id} (ref {encode(ref)}) was refused "
            f"({error.message}); resend from that frame",
            retry_after=max(1, math.ceil(until - trio.current_time())),
        )


class _Fenced(FelixError):
    """A frame refused because an earlier one for its workflow was: the same error code."""

    def __init__(self, original: FelixError, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.original = original
        self.retry_after = retry_after

    def to_json(self) -> dict[str, Any]:
        """The original refusal's code, with this message."""
        return {"error": self.original.code, "message": self.message}


async def serve_publish(
    hub: Hub,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    query: Mapping[str, str],
    params: Mapping[str, str],
) -> None:
    """Serve ``WS /api/v1/ws/publish`` until the producer leaves.

    Owns a reader and a writer task for the connection; leaving cancels both.
    Publishes already queued on actors are applied whether or not their
    answer could be sent. Never raises once accepted: a frame over
    ``FELIX_MAX_BODY_BYTES`` closes with 1009, a failure with 1011; when the
    hub shuts down it stops reading, answers the frames it read, and closes
    with 1001.
    """
    await send({"type": "websocket.accept"})
    # First on every connection, as the contract says: here it also tells the
    # producer how many frames it may have unanswered before reads stop.
    connected = {
        "type": "connected",
        "workflow_id": None,
        "timestamp": format_timestamp(datetime.now(UTC)),
        "connection_id": f"prod_{secrets.token_hex(6)}",
        "window": hub.settings.producer_window,
    }
    await send({"type": "websocket.send", "text": encode(connected)})
    put, take = trio.open_memory_channel[_InFlight](hub.settings.producer_window)
    fences = _Fences()
    budget = _Budget(hub.settings.producer_window_bytes)
    close: tuple[int, str] | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_write, take, send, fences, budget)
            with trio.CancelScope() as reading:
                nursery.start_soon(_stop_reading_at_shutdown, hub, reading)
                reader = _Reader(hub, put, fences, budget, scope.get(PUBLISH_LIMIT))
                close = await reader.run(receive)
            if reading.cancelled_caught:
                # Shutdown: read no more frames, answer those read (the writer
                # ends once the window is empty), then say goodbye.
                close = CLOSE_GOING_AWAY, "server shutting down"
            else:
                nursery.cancel_scope.cancel()  # the producer left, or broke a limit
    except Exception:
        logger.exception("producer stream failed")
        close = (1011, "internal error")
    if close is not None:
        await send({"type": "websocket.close", "code": close[0], "reason": close[1]})


async def _stop_reading_at_shutdown(hub: Hub, reading: trio.CancelScope) -> None:
    await hub.wait_shutting_down()
    reading.cancel()


@attrs.define(eq=False)
class _Reader:
    """The connection's reader: frames in, publishes queued in order, entries to the window."""

    hub: Hub
    put: trio.MemorySendChannel[_InFlight]
    fences: _Fences
    budget: _Budget
    rate: tuple[RateLimiter, str] | None

    async def run(self, receive: Receive) -> tuple[int, str] | None:
        """Read until the producer leaves; returns the close to send, if any.

        Closes the window's send end on the way out, so the writer ends once
        it has answered every entry. The frames that came in one read are
        handled in one turn (``take_queued``), so their publishes reach the
        actors together and coalesce, and their answers go out together.
        """
        connection = current_connection()
        async with self.put:
            while True:
                messages = [await receive()]
                if connection is not None:
                    messages += connection.take_queued()
                for message in messages:
                    if message["type"] == "websocket.disconnect":
                        return None
                    if message["type"] == "websocket.receive":
                        close = await self._read(message)
                        if close is not None:
                            return close

    async def _read(self, message: Mapping[str, Any]) -> tuple[int, str] | None:
        """Queue one frame's publish and its window entry; a close for a frame too large."""
        limit = self.hub.settings.max_body_bytes
        text = message.get("text")
        if text is None:
            error = NotAnObject("binary frames are not understood; send JSON text")
            await self._enter(_InFlight(None, None, error=error))
            return None
        size = len(text)
        if size > limit // 4 and (size := len(text.encode())) > limit:
            return CLOSE_TOO_LARGE, f"frame over {limit} bytes, the limit"
        await self.budget.take(size)
        entry = await self._submit(text)
        await self._enter(attrs.evolve(entry, size=size))
        return None

    async def _enter(self, entry: _InFlight) -> None:
        # Without a checkpoint while the window has room: a yield per frame
        # would hand the actor one publish at a time (one send per event).
        try:
            self.put.send_nowait(entry)
        except trio.WouldBlock:
            await self.put.send(entry)

    async def _submit(self, text: str) -> _InFlight:
        """Parse one frame and queue its publish; a refusal becomes the window's entry."""
        ref: Any = None
        workflow_id: str | None = None
        try:
            frame = _frame_of(text)
            ref = _ref_of(frame)
            workflow_id = check_workflow_id(frame.get("workflow_id"))
            events = _events_of(frame)
            self.fences.check(workflow_id)
            if self.rate is not None and self.rate[0].enabled:
                limiter, bucket = self.rate
                limiter.check(bucket, trio.current_time(), what="publishes with this key")
            pending = await self.hub.submit(
                workflow_id, events, idempotency_key=frame.get("idempotency_key")
            )
        except FelixError as error:
            self.fences.refuse(workflow_id, ref, error)
            return _InFlight(ref, workflow_id, error=error)
        return _InFlight(ref, workflow_id, pending=pending)


def _frame_of(text: str) -> dict[str, Any]:
    try:
        frame = decode_json(text)
    except InvalidEvent as error:
        raise NotAnObject(error.message) from None
    if not isinstance(frame, dict):
        raise NotAnObject("a frame is one JSON object: {ref, workflow_id, events}")
    return frame


def _ref_of(frame: dict[str, Any]) -> Any:
    ref = frame.get("ref")
    if ref is None or (isinstance(ref, int | float) and not isinstance(ref, bool)):
        return ref
    if isinstance(ref, str) and len(ref) <= MAX_REF_CHARS:
        return ref
    raise InvalidEvent(f"field 'ref' must be a number or a string of at most {MAX_REF_CHARS}")


def _events_of(frame: dict[str, Any]) -> list[Any]:
    if ("events" in frame) == ("event" in frame):
        raise InvalidEvent('a frame has "events" (a list) or "event" (one object), one of them')
    if "event" in frame:
        return [frame["event"]]
    events = frame["events"]
    if not isinstance(events, list):
        raise InvalidEvent("field 'events' must be a JSON array of events")
    if not events:
        raise InvalidEvent("the batch is empty; send at least one event")
    return events


async def _write(
    take: trio.MemoryReceiveChannel[_InFlight], send: Send, fences: _Fences, budget: _Budget
) -> None:
    """Answer the window's entries in order, each once its publish is answered.

    The answers already known when one is written go out with it, in one
    socket write where the connection allows direct writes (one ASGI message
    per answer costs more than the publish it answers).
    """
    connection = current_connection()
    direct = connection if connection is not None and connection.can_write_direct else None
    async with take:
        entry: _InFlight | None = None
        while True:
            if entry is None:
                try:
                    entry = await take.receive()
                except trio.EndOfChannel:
                    return
            batch, entry = [entry], None
            while len(batch) < ANSWER_BATCH:
                try:
                    following = take.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                if not following.ready:
                    entry = following  # written first in the next round
                    break
                batch.append(following)
            replies = [await _reply(answered, fences) for answered in batch]
            if direct is None:
                for reply in replies:
                    await send({"type": "websocket.send", "text": encode(reply)})
            else:
                await direct.send(b"".join(make_frame(reply).wire for reply in replies))
            budget.give(sum(answered.size for answered in batch))


async def _reply(entry: _InFlight, fences: _Fences) -> dict[str, Any]:
    error = entry.error
    if entry.pending is not None:
        try:
            result = await entry.pending.result()
        except FelixError as refusal:
            error = refusal
            fences.refuse(entry.workflow_id, entry.ref, refusal)
        else:
            ack = {"type": "ack", "ref": entry.ref, **answer_of(result)}
            if result.replayed is not None:
                ack["idempotent_replayed"] = True
            return ack
    assert error is not None
    nack: dict[str, Any] = {"type": "nack", "ref": entry.ref, **error.to_json()}
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        nack["retry_after"] = retry_after
    return nack
