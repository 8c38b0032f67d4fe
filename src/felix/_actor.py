"""A workflow actor: one task, one inbox, sole owner of one workflow's state.

Writes (publish, subscribe) arrive as commands on a bounded memory channel and
are applied one at a time by :meth:`WorkflowActor.run`, so the subscriber set
and the history need no lock: between two checkpoints nothing else runs.
Fan-out is a loop of non-blocking :meth:`Subscription.offer` calls, so the
actor never waits on a subscriber.

Reads for the REST layer (:meth:`WorkflowActor.view`) are synchronous: they
run in the caller's task between checkpoints and see a consistent state.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import attrs
import trio

from felix._core.events import Event, Frame, format_timestamp, make_frame
from felix._core.workflow import WorkflowState
from felix._counters import Counters
from felix._errors import CapacityError, FelixError, WorkflowNotFound
from felix._subscription import CLOSE_NORMAL, Subscription

__all__ = ["PublishResult", "WorkflowActor"]

logger = logging.getLogger("felix.actor")

#: Seconds a publisher is told to wait (``Retry-After``) when an inbox is full.
RETRY_AFTER: Final = 1


class InboxFull(CapacityError):
    """The workflow's inbox stayed full for the whole publish timeout (503)."""

    code = "inbox_full"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.retry_after = RETRY_AFTER


@attrs.frozen
class PublishResult:
    """What a publish returns: the events as applied, with their ``seq``."""

    events: list[Event]

    @property
    def accepted(self) -> int:
        """How many events were applied (all of the batch)."""
        return len(self.events)

    @property
    def first_seq(self) -> int | None:
        """``seq`` of the first event, or None for an empty batch."""
        return self.events[0].seq if self.events else None

    @property
    def last_seq(self) -> int | None:
        """``seq`` of the last event, or None for an empty batch."""
        return self.events[-1].seq if self.events else None


@attrs.define(eq=False)
class _Reply:
    """A one-shot answer from the actor to the task that sent a command."""

    _done: trio.Event = attrs.field(factory=trio.Event)
    _value: Any = None
    _error: FelixError | None = None

    def set(self, value: Any = None, error: FelixError | None = None) -> None:
        self._value, self._error = value, error
        self._done.set()

    async def wait(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


@attrs.frozen
class _Publish:
    batch: list[tuple[str, dict[str, Any]]]
    reply: _Reply = attrs.Factory(_Reply)
    #: When the publisher handed the command over (``time.perf_counter``).
    accepted: float = attrs.Factory(time.perf_counter)


@attrs.frozen
class _Subscribe:
    subscription: Subscription
    after: int | None
    reply: _Reply = attrs.Factory(_Reply)


@attrs.frozen
class _Unsubscribe:
    subscription: Subscription


_Command = _Publish | _Subscribe | _Unsubscribe


@attrs.define(eq=False)
class WorkflowActor:
    """The task that owns one workflow. Created and run by the hub."""

    state: WorkflowState
    retention_seconds: float
    publish_timeout: float
    max_subscribers: int
    #: Called with the frames of every publish (feeds the system stream).
    on_frames: Callable[[list[Frame]], None]
    #: Called once when the actor ends, so the hub forgets the workflow.
    on_exit: Callable[[WorkflowActor], None]
    inbox_size: int = 256
    #: The hub's totals, bumped once per publish (never per delivery).
    counters: Counters = attrs.Factory(Counters)
    _subscribers: set[Subscription] = attrs.field(factory=set, init=False)
    _expires_at: float = attrs.field(default=math.inf, init=False)
    _send: trio.MemorySendChannel[_Command] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[_Command] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[_Command](self.inbox_size)

    @property
    def workflow_id(self) -> str:
        """The id of the workflow this actor owns."""
        return self.state.workflow_id

    # --- the task -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply commands until the retention period after the end runs out.

        Runs in the hub's nursery; cancelling it ends the actor, and every
        command still queued is answered with :class:`WorkflowNotFound`.
        """
        task_status.started()
        try:
            while True:
                with trio.move_on_at(self._expires_at):
                    command = await self._receive.receive()
                    self._handle(command)
                    continue
                return
        finally:
            self._end()

    def _end(self) -> None:
        # Close first so later senders fail fast, then answer what is queued.
        self._receive.close()
        gone = WorkflowNotFound(f"workflow {self.workflow_id} not found")
        while True:
            try:
                command = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if not isinstance(command, _Unsubscribe):
                command.reply.set(error=gone)
        for subscription in self._subscribers:
            subscription.finish(CLOSE_NORMAL, f"workflow {self.state.status}")
        self._subscribers.clear()
        self.on_exit(self)

    def _handle(self, command: _Command) -> None:
        try:
            self._apply(command)
        except Exception:
            # A bug in one command must not end the workflow, nor (through the
            # hub's nursery) every other workflow: answer it and go on.
            logger.exception(
                "workflow %s failed to apply %s", self.workflow_id, type(command).__name__
            )
            if not isinstance(command, _Unsubscribe):
                command.reply.set(error=FelixError("internal error while applying the request"))

    def _apply(self, command: _Command) -> None:
        if isinstance(command, _Publish):
            try:
                events = self.state.publish(command.batch, datetime.now(UTC))
            except FelixError as error:
                command.reply.set(error=error)
            else:
                self._fan_out(events)
                self.counters.events_published += len(events)
                self.counters.publish_latency.observe(time.perf_counter() - command.accepted)
                command.reply.set(PublishResult(events))
        elif isinstance(command, _Subscribe):
            try:
                self._subscribe(command.subscription, command.after)
            except FelixError as error:
                command.reply.set(error=error)
            else:
                command.reply.set()
        else:
            self._subscribers.discard(command.subscription)

    def _fan_out(self, events: list[Event]) -> None:
        subscribers = self._subscribers
        frames = [event.frame for event in events]
        # One offer per subscriber per publish: the per-subscriber work of a
        # batch is one call, and a batch is never split by the buffer policy.
        # A batch's bytes are joined once here, not once per subscriber.
        wire = b"".join(frame.wire for frame in frames) if len(frames) > 1 else None
        dropped = [sub for sub in subscribers if not sub.offer(frames, wire=wire)]
        subscribers.difference_update(dropped)
        self.on_frames(frames)
        if self.state.terminal:
            reason = f"workflow {self.state.status}"
            for subscription in subscribers:
                subscription.finish(CLOSE_NORMAL, reason)
            subscribers.clear()
            self._expires_at = trio.current_time() + self.retention_seconds

    def _subscribe(self, subscription: Subscription, after: int | None) -> None:
        if not self.state.terminal and self.subscriber_count() >= self.max_subscribers:
            raise CapacityError(
                f"workflow {self.workflow_id} has {self.max_subscribers} connections, the limit"
            )
        replay = self.state.replay(after)
        connected: dict[str, Any] = {
            "type": "connected",
            "workflow_id": self.workflow_id,
            "timestamp": format_timestamp(datetime.now(UTC)),
            "status": self.state.status,
            "last_seq": self.state.last_seq,
            "connection_id": subscription.connection_id,
        }
        if replay.recovered is not None:
            connected["recovered"] = replay.recovered
        subscription.preload([make_frame(connected)], control=True)
        subscription.preload([event.frame for event in replay.events])
        if self.state.terminal:
            subscription.finish(CLOSE_NORMAL, f"workflow {self.state.status}")
        else:
            self._subscribers.add(subscription)

    # --- what other tasks call --------------------------------------------------

    async def publish(self, batch: list[tuple[str, dict[str, Any]]]) -> PublishResult:
        """Apply a shape-checked batch; wait for room and for the answer.

        Raises :class:`InboxFull` when the inbox stays full for
        ``publish_timeout`` seconds, :class:`WorkflowNotFound` when the actor
        has ended, and the core's errors for a batch it refuses.
        """
        command = _Publish(batch)
        await self._put(command)
        result: PublishResult = await command.reply.wait()
        return result

    async def subscribe(self, subscription: Subscription, after: int | None) -> None:
        """Register a subscriber; its buffer then holds ``connected`` and the replay."""
        command = _Subscribe(subscription, after)
        await self._put(command)
        await command.reply.wait()

    def unsubscribe_nowait(self, subscription: Subscription) -> None:
        """Ask the actor to forget a subscriber, without waiting.

        If the inbox is full the request is dropped: the subscription is
        already detached, and the next fan-out prunes it anyway.
        """
        with contextlib.suppress(
            trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            self._send.send_nowait(_Unsubscribe(subscription))

    async def _put(self, command: _Command) -> None:
        try:
            with trio.move_on_after(self.publish_timeout):
                await self._send.send(command)
                return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise WorkflowNotFound(f"workflow {self.workflow_id} not found") from None
        raise InboxFull(
            f"workflow {self.workflow_id} is busy: its inbox stayed full for "
            f"{self.publish_timeout:g} s; retry later"
        )

    def subscriber_count(self) -> int:
        """Live subscribers (detached ones waiting to be pruned are not counted)."""
        return sum(1 for sub in self._subscribers if sub.active)

    def view(self) -> dict[str, Any]:
        """The REST view of the workflow, read synchronously."""
        return self.state.view(self.subscriber_count())

    def statistics(self) -> dict[str, Any]:
        """Inbox and subscriber figures for operators."""
        stats = self._send.statistics()
        return {
            "workflow_id": self.workflow_id,
            "inbox_used": stats.current_buffer_used,
            "inbox_size": stats.max_buffer_size,
            "publishers_waiting": stats.tasks_waiting_send,
            "subscribers": self.subscriber_count(),
            "history": len(self.state.history),
        }
