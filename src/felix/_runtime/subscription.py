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
from collections.abc import AsyncIterator, Callable
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
    """Writes frame bytes (a WebSocket frame, an SSE chunk) to a socket without waiting."""

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
    #: The bytes of one frame on this connection's wire, for raw writes: None
    #: for a WebSocket frame (:attr:`Frame.wire`); a Server-Sent Events
    #: response sets its own (an event's chunk, built once per event too).
    wire_of: Callable[[Frame], bytes] | None = None
    #: Frames waiting for the writer, oldest first: the first ``_replay_count``
    #: are the ``connected`` frame and the replay (not counted against the
    #: budget), the rest live frames. None while empty: an idle subscriber
    #: keeps no deque (a deque allocates room for 64 items at once).
    _queue: deque[Frame] | None = attrs.field(default=None, init=False)
    _replay_count: int = attrs.field(default=0, init=False)
    #: The unwritten rest of a direct write; it goes out before anything else.
    _pending: bytes = attrs.field(default=b"", init=False)
    #: True while the writer holds bytes it has taken but not yet written.
    _in_flight: bool = attrs.field(default=False, init=False)
    _queued_bytes: int = attrs.field(default=0, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _detached: bool = attrs.field(default=False, init=False)
    #: The consumer's task while it waits; there is only ever one consumer, so
    #: this replaces a parking lot (and its dict) per subscriber.
    _waiter: trio.lowlevel.Task | None = attrs.field(default=None, init=False)

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
        wanted = [frame for frame in frames if control or self.wants(frame.type)]
        if not wanted:
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        if len(queue) == self._replay_count:
            queue.extend(wanted)
        else:  # live frames are already queued: the replay goes ahead of them
            for offset, frame in enumerate(wanted):
                queue.insert(self._replay_count + offset, frame)
        self._replay_count += len(wanted)
        self._wake()

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
        queue = self._queue
        live = len(queue) - self._replay_count if queue is not None else 0
        if live > self.max_frames or self._queued_bytes > self.max_bytes:
            self.kick(CLOSE_SLOW_CONSUMER, "slow consumer")
            return False
        types = self.types
        wanted = frames if control or types is None else [f for f in frames if f.type in types]
        if not wanted:
            return True
        direct = self.direct
        if direct is not None and not (self._in_flight or self._pending or self._queue):
            # The hot path: nothing is waiting ahead of these frames, so they
            # go straight to the socket from the publisher's task, with no
            # task switch; only what the socket does not take now is queued.
            wire_of = self.wire_of
            if wire_of is not None:
                data = wire_of(wanted[0]) if len(wanted) == 1 else b"".join(map(wire_of, wanted))
            elif wire is not None and wanted is frames:
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
                self._wake()
            return True
        if queue is None:
            queue = self._queue = deque()
        for frame in wanted:
            queue.append(frame)
            self._queued_bytes += frame.size
        self._wake()
        return True

    def finish(self, code: int, reason: str) -> None:
        """End the stream after what is queued has been sent."""
        if self.active:
            self.close_code, self.close_reason = code, reason
            self._closing = True
            self._wake()

    def kick(self, code: int, reason: str) -> None:
        """End the stream now, dropping what is queued (frees the buffer).

        The unwritten rest of a direct write is kept: part of its frame is
        already on the wire, and the close frame can only follow a whole one.
        """
        if self._detached:
            return
        self._queue = None
        self._replay_count = 0
        self._queued_bytes = len(self._pending)
        self.close_code, self.close_reason = code, reason
        self._closing = True
        self._wake()

    def detach(self) -> None:
        """Mark the subscription gone; producers drop it at their next offer."""
        self._detached = True
        self._queue = None
        self._replay_count = 0
        self._pending = b""
        self._queued_bytes = 0
        self._wake()

    # --- consumer side ------------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        """Bytes of live frames waiting to be sent."""
        return self._queued_bytes

    def _take_frames(self) -> list[Frame]:
        queue = self._queue
        if not queue:
            return []
        replayed = self._replay_count
        if replayed:
            # The replay goes out in batches of its own: its frames are not
            # in the byte count.
            count = min(replayed, BATCH_LIMIT)
            self._replay_count = replayed - count
            batch = [queue.popleft() for _ in range(count)]
        else:
            count = min(len(queue), BATCH_LIMIT)
            batch = [queue.popleft() for _ in range(count)]
            self._queued_bytes -= sum(frame.size for frame in batch)
        self.messages_sent += count
        if not queue:
            self._queue = None
        return batch

    def _enlist(self) -> None:
        # Then wait_task_rescheduled(self._abort_wait), called by the consumer
        # itself: one coroutine less held by every idle connection.
        if self._waiter is not None:
            raise trio.BusyResourceError("another task is already taking frames from this stream")
        self._waiter = trio.lowlevel.current_task()

    def _abort_wait(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake(self) -> None:
        task = self._waiter
        if task is not None:
            self._waiter = None
            trio.lowlevel.reschedule(task)

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
            self._enlist()
            await trio.lowlevel.wait_task_rescheduled(self._abort_wait)

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
                if self.wire_of is not None:
                    return b"".join(map(self.wire_of, batch))
                return batch[0].wire if len(batch) == 1 else b"".join(f.wire for f in batch)
            if self._closing or self._detached:
                return None
            self._enlist()
            await trio.lowlevel.wait_task_rescheduled(self._abort_wait)

    def written(self) -> None:
        """The bytes from :meth:`receive_wire` are written; direct writes may resume."""
        self._in_flight = False

    def take_leftover(self) -> bytes:
        """Take the unwritten rest of a direct write, for a write that must follow it."""
        data, self._pending = self._pending, b""
        self._queued_bytes -= len(data)
        return data

    async def __aiter__(self) -> AsyncIterator[str]:
        while batch := await self.receive_batch():
            for frame in batch:
                yield frame.text
