"""One subscriber: a bounded outgoing buffer, a type filter and its end.

The workflow actor (and the hub, for broadcasts) put frames in with the
non-blocking :meth:`Subscription.offer`, once per publish; the connection's
writer takes them out in batches with :meth:`Subscription.receive_batch`.

The policy at the limit: when a publish arrives and the subscriber's backlog
is already past its byte or frame budget, the buffer is emptied at once and
the subscription ends with close code 4008. A publish is never split, so one
large batch does not cut off a reader that keeps up; the memory held for one
subscriber is therefore at most its budget plus one publish (itself bounded
by the request body and batch limits). A slow reader costs bounded memory and
never slows the actor or the other subscribers (starbelly's resource monitor
evicts on ``WouldBlock`` the same way).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Final, Protocol

import attrs
import trio

from felix._core.events import Frame

__all__ = ["CLOSE_SLOW_CONSUMER", "ConnectionInfo", "Subscription"]

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_SLOW_CONSUMER: Final = 4008
#: Frames the writer takes in one go; bounds the work between checkpoints.
BATCH_LIMIT: Final = 256


class RawWriter(Protocol):
    """Writes WebSocket frame bytes to a connection's socket without waiting."""

    def try_send(self, data: bytes) -> int:
        """Write what the socket takes now; return how many bytes that was."""
        ...


@attrs.frozen
class ConnectionInfo:
    """What ``GET /api/v1/connections`` shows of one connection."""

    connection_id: str
    workflow_id: str | None
    remote: str | None
    connected_at: str
    messages_sent: int
    #: Bytes of live events waiting to be sent to this connection.
    buffered_bytes: int = 0


@attrs.define(eq=False)
class Subscription:
    """A connection's view of a stream: frames to send, then a close code.

    Created by :meth:`felix.Hub.subscribe`; iterate it (``async for text in
    sub``) to get encoded JSON texts. When iteration ends, :attr:`close_code`
    and :attr:`close_reason` say why (1000 workflow finished, 1001 shutdown,
    4008 slow consumer).
    """

    connection_id: str
    workflow_id: str | None
    connected_at: str
    types: frozenset[str] | None = None
    remote: str | None = None
    max_bytes: int = 1024 * 1024
    max_frames: int = 10_000
    #: Frames handed to the writer so far (the contract's ``messages_sent``).
    messages_sent: int = 0
    close_code: int | None = None
    close_reason: str = ""
    #: Set by the web layer when frames may be written straight to the socket.
    direct: RawWriter | None = None
    _replay: deque[Frame] = attrs.field(factory=deque, init=False)
    #: The unwritten rest of a direct write; it goes out before anything else.
    _pending: bytes = attrs.field(default=b"", init=False)
    #: True while the writer holds bytes it has taken but not yet written.
    _in_flight: bool = attrs.field(default=False, init=False)
    _queue: deque[Frame] = attrs.field(factory=deque, init=False)
    _queued_bytes: int = attrs.field(default=0, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _detached: bool = attrs.field(default=False, init=False)
    _lot: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot, init=False)

    @property
    def active(self) -> bool:
        """False once the subscription is closing, kicked or detached."""
        return not (self._closing or self._detached)

    def info(self) -> ConnectionInfo:
        """A snapshot for the connections listing."""
        return ConnectionInfo(
            connection_id=self.connection_id,
            workflow_id=self.workflow_id,
            remote=self.remote,
            connected_at=self.connected_at,
            messages_sent=self.messages_sent,
            buffered_bytes=self._queued_bytes,
        )

    # --- producer side (never blocks) ---------------------------------------

    def preload(self, frames: list[Frame], *, control: bool = False) -> None:
        """Queue the ``connected`` frame and a replay ahead of live frames.

        Replayed frames are the history's own objects, so they are not counted
        against the byte budget: holding them costs a reference each, and
        their number is bounded by the history length. ``control`` frames
        (``connected``) skip the ``types=`` filter.
        """
        self._replay.extend(frame for frame in frames if control or self.wants(frame.type))
        self._lot.unpark_all()

    def wants(self, frame_type: str) -> bool:
        """Whether this subscriber's ``types=`` filter lets a frame through."""
        return self.types is None or frame_type in self.types

    def offer(
        self, frames: list[Frame], *, control: bool = False, wire: bytes | None = None
    ) -> bool:
        """Queue one publish's frames without waiting; ``control`` skips the filter.

        ``wire``, if given, is every frame's bytes joined, built once by the
        publisher for all subscribers; it is used when no filter drops a frame.

        Returns False when the subscription no longer takes frames (it ended,
        or its backlog was already past its budget, which ends it with 4008),
        so the caller can forget it.
        """
        if not self.active:
            return False
        if len(self._queue) > self.max_frames or self._queued_bytes > self.max_bytes:
            self.kick(CLOSE_SLOW_CONSUMER, "slow consumer")
            return False
        types = self.types
        wanted = frames if control or types is None else [f for f in frames if f.type in types]
        if not wanted:
            return True
        direct = self.direct
        if direct is not None and not (
            self._in_flight or self._pending or self._queue or self._replay
        ):
            # The hot path: nothing is waiting ahead of these frames, so they
            # go straight to the socket from the publisher's task, with no
            # task switch; only what the socket does not take now is queued.
            if wire is not None and wanted is frames:
                data = wire
            elif len(wanted) == 1:
                data = wanted[0].wire
            else:
                data = b"".join(f.wire for f in wanted)
            written = direct.try_send(data)
            self.messages_sent += len(wanted)
            if written < len(data):
                self._pending = data[written:]
                self._queued_bytes += len(self._pending)
                self._lot.unpark_all()
            return True
        for frame in wanted:
            self._queue.append(frame)
            self._queued_bytes += frame.size
        self._lot.unpark_all()
        return True

    def finish(self, code: int, reason: str) -> None:
        """End the stream after what is queued has been sent."""
        if self.active:
            self.close_code, self.close_reason = code, reason
            self._closing = True
            self._lot.unpark_all()

    def kick(self, code: int, reason: str) -> None:
        """End the stream now, dropping what is queued (frees the buffer)."""
        if self._detached:
            return
        self._replay.clear()
        self._queue.clear()
        self._pending = b""
        self._queued_bytes = 0
        self.close_code, self.close_reason = code, reason
        self._closing = True
        self._lot.unpark_all()

    def detach(self) -> None:
        """Mark the subscription gone; producers drop it at their next offer."""
        self._detached = True
        self._replay.clear()
        self._queue.clear()
        self._pending = b""
        self._queued_bytes = 0
        self._lot.unpark_all()

    # --- consumer side ------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        """Bytes of live frames waiting to be sent."""
        return self._queued_bytes

    def _take_frames(self) -> list[Frame]:
        if self._replay:
            batch = [self._replay.popleft() for _ in range(min(len(self._replay), BATCH_LIMIT))]
            self.messages_sent += len(batch)
            return batch
        if self._queue:
            count = min(len(self._queue), BATCH_LIMIT)
            batch = [self._queue.popleft() for _ in range(count)]
            self._queued_bytes -= sum(frame.size for frame in batch)
            self.messages_sent += count
            return batch
        return []

    async def receive_batch(self) -> list[Frame]:
        """Wait for frames and take up to :data:`BATCH_LIMIT` of them.

        Returns an empty list when the stream has ended; :attr:`close_code`
        then says why.
        """
        while True:
            if batch := self._take_frames():
                return batch
            if self._closing or self._detached:
                return []
            await self._lot.park()

    async def receive_wire(self) -> bytes | None:
        """Wait for bytes to write, for a writer that sends raw frames.

        The unwritten rest of a direct write comes first, then queued frames
        joined into one write. Returns None when the stream has ended. The
        caller must call :meth:`written` once the bytes are on their way, so
        that direct writes cannot overtake them.
        """
        while True:
            if self._pending:
                data, self._pending = self._pending, b""
                self._queued_bytes -= len(data)
                self._in_flight = True
                return data
            if batch := self._take_frames():
                self._in_flight = True
                return batch[0].wire if len(batch) == 1 else b"".join(f.wire for f in batch)
            if self._closing or self._detached:
                return None
            await self._lot.park()

    def written(self) -> None:
        """The bytes from :meth:`receive_wire` are written; direct writes may resume."""
        self._in_flight = False

    async def __aiter__(self) -> AsyncIterator[str]:
        while batch := await self.receive_batch():
            for frame in batch:
                yield frame.text
