"""A workflow actor: one task, one inbox, sole owner of one workflow's state.

Writes (publish, subscribe) arrive as commands on a bounded memory channel and
are applied one at a time by :meth:`WorkflowActor.run`, so the subscriber set
and the history need no lock: between two checkpoints nothing else runs.
Fan-out is a loop of non-blocking :meth:`Subscription.offer` calls, so the
actor never waits on a subscriber. Publishes already queued when the actor
wakes are applied together and fanned out as one offer per subscriber (see
:data:`COALESCE_FRAMES`), so a busy workflow makes one socket write per
subscriber for several events instead of one each.

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

from felix._broker import Broker, Stored
from felix._core.events import Event, Frame, format_timestamp, make_frame
from felix._core.idempotency import Applied, Claim
from felix._core.workflow import Replay, WorkflowState
from felix._errors import BrokerUnavailable, CapacityError, FelixError, WorkflowNotFound
from felix._runtime.counters import Counters
from felix._runtime.subscription import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_SLOW_CONSUMER,
    Subscription,
)

__all__ = ["PublishResult", "Ticket", "WorkflowActor"]

logger = logging.getLogger("felix.actor")

#: Seconds a publisher is told to wait (``Retry-After``) when an inbox is full.
RETRY_AFTER: Final = 1

#: Publishes already waiting in the inbox are taken together, without a
#: checkpoint, until this many events are held for one fan-out. Each event is
#: still its own frame; what is shared is the socket write (a ``send`` system
#: call per subscriber was most of the fan-out's cost) and the subscriber's
#: read. Nothing waits for a batch to fill: only what is already queued is
#: taken, so a lone publish goes out as before. The bound keeps a subscriber's
#: buffer within its budget plus this many frames (or one larger publish).
COALESCE_FRAMES: Final = 64


class InboxFull(CapacityError):
    """The workflow's inbox stayed full for the whole publish timeout (503)."""

    code = "inbox_full"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.retry_after = RETRY_AFTER


@attrs.frozen
class PublishResult:
    """What a publish returns: the events as applied, with their ``seq``.

    A repeat of an idempotency key already applied has no ``events`` (nothing
    was applied); ``replayed`` then holds the first publish's answer, which
    :attr:`accepted`, :attr:`first_seq` and :attr:`last_seq` report.
    """

    events: list[Event]
    replayed: Applied | None = None

    @property
    def accepted(self) -> int:
        """How many events were applied (all of the batch)."""
        if self.replayed is not None:
            return self.replayed.accepted
        return len(self.events)

    @property
    def first_seq(self) -> int | None:
        """``seq`` of the first event, or None for an empty batch."""
        if self.replayed is not None:
            return self.replayed.first_seq
        return self.events[0].seq if self.events else None

    @property
    def last_seq(self) -> int | None:
        """``seq`` of the last event, or None for an empty batch."""
        if self.replayed is not None:
            return self.replayed.last_seq
        return self.events[-1].seq if self.events else None


@attrs.define(eq=False)
class _Reply:
    """A one-shot answer from the actor to the task that sent a command.

    A trio.Event would do, but one is made per publish: this keeps just the
    waiting tasks (usually one) and skips the checkpoint once answered, so a
    producer stream's writer collects a burst of answers in one turn.
    """

    _value: Any = None
    _error: FelixError | None = None
    _set: bool = False
    _waiters: list[trio.lowlevel.Task] | None = None
    #: Called once when the answer is set (the hub's in-flight idempotency keys).
    on_done: Callable[[], None] | None = None

    def set(self, value: Any = None, error: FelixError | None = None) -> None:
        self._value, self._error, self._set = value, error, True
        waiters, self._waiters = self._waiters, None
        for task in waiters or ():
            trio.lowlevel.reschedule(task)
        if self.on_done is not None:
            on_done, self.on_done = self.on_done, None
            on_done()

    @property
    def done(self) -> bool:
        """Whether the answer is in (``wait()`` then returns or raises at once)."""
        return self._set

    async def wait(self) -> Any:
        """The answer, waiting for it if it is not in yet (cancellable while waiting).

        Not a checkpoint once the answer is in.
        """
        if not self._set:
            task = trio.lowlevel.current_task()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(task)

            def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
                if self._waiters is not None:
                    self._waiters.remove(task)
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        if self._error is not None:
            raise self._error
        return self._value


#: What :meth:`WorkflowActor.enqueue` hands back: ``await ticket.wait()`` for the answer.
Ticket = _Reply


@attrs.frozen
class _Publish:
    batch: list[tuple[str, dict[str, Any]]]
    #: The publish's idempotency key and body digest, if it has a key.
    claim: Claim | None = None
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


@attrs.frozen
class _Remote:
    """Events another node committed (or this one: they are skipped by ``seq``)."""

    events: list[Event]


@attrs.frozen
class _Resync:
    """Catch up with the broker: a feed batch was missed or Redis came back."""


_Command = _Publish | _Subscribe | _Unsubscribe | _Remote | _Resync


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
    #: Shared storage when several nodes serve the workflow; None: this actor
    #: is the workflow's only owner (the in-memory default).
    broker: Broker | None = None
    #: With a broker: seconds this copy lives on while nobody here watches it.
    idle_seconds: float = 60.0
    #: With a broker: builds this node's state from what the broker stored.
    state_from: Callable[[Stored], WorkflowState] | None = None
    #: With a broker: the broker forgot the workflow, so this copy ends now.
    _gone: bool = attrs.field(default=False, init=False)
    #: With a broker: this copy ended while the workflow lives on in the broker.
    retired: bool = attrs.field(default=False, init=False)
    #: With a broker: a feed batch could not be queued, so catch up before going on.
    _stale: bool = attrs.field(default=False, init=False)
    _subscribers: set[Subscription] = attrs.field(factory=set, init=False)
    #: Applied, not yet fanned out: events of the publishes being coalesced,
    #: and the answers that go to their publishers after the fan-out.
    _unsent: list[Event] = attrs.field(factory=list, init=False)
    _unanswered: list[tuple[_Publish, PublishResult]] = attrs.field(factory=list, init=False)
    _expires_at: float = attrs.field(default=math.inf, init=False)
    #: When this actor saw the workflow end (trio clock); retention counts from it.
    _ended_at: float = attrs.field(default=math.inf, init=False)
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
        command still queued is answered with :class:`WorkflowNotFound`. With
        a broker, a copy nobody here watches also ends after ``idle_seconds``.
        """
        task_status.started()
        try:
            self._expires_at = self._expiry()
            while True:
                command: _Command | None = None
                if self._expires_at == math.inf:
                    # A live workflow never expires: no scope to make per command.
                    command = await self._receive.receive()
                else:
                    # Only the wait is bounded: a command under way (a commit to
                    # Redis) is never cut off half-done by the expiry.
                    with trio.move_on_at(self._expires_at):
                        command = await self._receive.receive()
                if command is None:
                    # A copy of a workflow the broker still holds can be loaded
                    # again; the hub retries on a fresh one (see Hub._on_local).
                    self.retired = self.broker is not None and not self._gone
                    return
                if self.broker is None:
                    self._handle_queued(command)
                else:
                    await self._handle_shared(command)
                self._expires_at = self._expiry()
        finally:
            self._end()

    def _expiry(self) -> float:
        if self._gone:
            return -math.inf
        now = trio.current_time()
        idle = self.broker is not None and not self.subscriber_count()
        if self.state.terminal:
            # A copy loaded from the broker already finished: count from now.
            self._ended_at = min(self._ended_at, now)
            end = self._ended_at + self.retention_seconds
            return min(end, now + self.idle_seconds) if idle else end
        return now + self.idle_seconds if idle else math.inf

    def _end(self) -> None:
        # Close first so later senders fail fast, then answer what is queued.
        self._receive.close()
        gone = WorkflowNotFound(f"workflow {self.workflow_id} not found")
        while True:
            try:
                command = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            if isinstance(command, _Publish | _Subscribe):
                command.reply.set(error=gone)
        for subscription in self._subscribers:
            subscription.finish(CLOSE_NORMAL, f"workflow {self.state.status}")
        self._subscribers.clear()
        self.state.history.close()  # its bytes leave the hub's history budget
        self.on_exit(self)

    def _handle_queued(self, command: _Command) -> None:
        """Apply a command and those already queued behind it, then fan out once."""
        self._handle(command)
        while len(self._unsent) < COALESCE_FRAMES:
            try:
                command = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            self._handle(command)
        self._flush()

    def _flush(self) -> None:
        """Fan out what the coalesced publishes applied, then answer them."""
        if not self._unanswered:
            return
        events, answers = self._unsent, self._unanswered
        self._unsent, self._unanswered = [], []
        try:
            self._fan_out(events)
        except Exception:
            # The events are in the history (a resume gets them), so the
            # publishers are still told they were accepted.
            logger.exception(
                "workflow %s failed to fan out %d events", self.workflow_id, len(events)
            )
        now = time.perf_counter()
        for command, result in answers:
            self.counters.publish_latency.observe(now - command.accepted)
            command.reply.set(result)

    def _handle(self, command: _Command) -> None:
        try:
            self._apply(command)
        except Exception:
            # A bug in one command must not end the workflow, nor (through the
            # hub's nursery) every other workflow: answer it and go on.
            logger.exception(
                "workflow %s failed to apply %s", self.workflow_id, type(command).__name__
            )
            if isinstance(command, _Publish | _Subscribe):
                command.reply.set(error=FelixError("internal error while applying the request"))

    def _apply(self, command: _Command) -> None:
        if isinstance(command, _Publish):
            claim = command.claim
            try:
                replayed = self._recall(claim)
                if replayed is not None:
                    self._unanswered.append((command, replayed))
                    return
                events = self.state.publish(command.batch, datetime.now(UTC))
            except FelixError as error:
                command.reply.set(error=error)
            else:
                if claim is not None:
                    self.state.keys.remember(claim.key, Applied.of(claim.digest, events))
                # Fanned out and answered by _flush, with the publishes queued after it.
                self._unsent.extend(events)
                self._unanswered.append((command, PublishResult(events)))
                self.counters.events_published += len(events)
            return
        # A subscriber's replay comes from the history, which already holds the
        # unsent events: they go out first, or the new subscriber would get them twice.
        self._flush()
        if isinstance(command, _Subscribe):
            try:
                self._subscribe(command.subscription, self.state.replay(command.after))
            except FelixError as error:
                command.reply.set(error=error)
            else:
                command.reply.set()
        elif isinstance(command, _Unsubscribe):
            self._subscribers.discard(command.subscription)

    def _recall(self, claim: Claim | None) -> PublishResult | None:
        """The first answer to a repeat of an applied key, from this copy's table."""
        if claim is None:
            return None
        applied = self.state.keys.recall(claim.key, claim.digest)
        return None if applied is None else PublishResult([], replayed=applied)

    # --- with a broker: commit there first, hear of other nodes' commits ----------

    async def _handle_shared(self, command: _Command) -> None:
        try:
            await self._apply_shared(command)
        except BrokerUnavailable as error:
            self._stale = True
            if isinstance(command, _Publish | _Subscribe):
                command.reply.set(error=error)
        except Exception:
            logger.exception(
                "workflow %s failed to apply %s", self.workflow_id, type(command).__name__
            )
            if isinstance(command, _Publish | _Subscribe):
                command.reply.set(error=FelixError("internal error while applying the request"))
        if self._stale:
            try:
                await self._resync()
            except BrokerUnavailable:
                pass  # still stale: tried again after the next command, or when Redis is back
            except Exception:
                logger.exception("workflow %s failed to catch up", self.workflow_id)

    async def _apply_shared(self, command: _Command) -> None:
        if isinstance(command, _Publish):
            await self._publish_shared(command)
        elif isinstance(command, _Subscribe):
            if command.after is not None and command.after > self.state.last_seq:
                # The client saw events (on another node) that this copy has
                # not heard of yet: catch up, or its replay would repeat them.
                await self._resync()
            replay = await self._replay_shared(command.after)
            self._flush()
            try:
                self._subscribe(command.subscription, replay)
            except FelixError as error:
                command.reply.set(error=error)
            else:
                command.reply.set()
        elif isinstance(command, _Remote):
            if command.events[0].seq > self.state.last_seq + 1:
                self._stale = True  # a batch went missing: the broker has it
            else:
                self._deliver(command.events)
        elif isinstance(command, _Resync):
            self._stale = True
        else:
            self._apply(command)

    async def _publish_shared(self, command: _Publish) -> None:
        try:
            result = await self._commit_shared(command)
        except BrokerUnavailable:
            raise  # _handle_shared answers it and marks this copy stale
        except FelixError as error:
            command.reply.set(error=error)
        else:
            command.reply.set(result)

    async def _commit_shared(self, command: _Publish) -> PublishResult:
        """Commit a publish through the broker; raises the refusal to answer with."""
        assert self.broker is not None
        claim = command.claim
        replayed = self._recall(claim)
        if replayed is not None:
            return replayed
        # Each lost race means another node's batch went in, so retrying makes
        # progress; but a producer is not kept waiting for ever behind them.
        give_up_at = trio.current_time() + self.publish_timeout
        while True:
            if trio.current_time() > give_up_at:
                raise InboxFull(
                    f"workflow {self.workflow_id} is busy: other nodes kept publishing "
                    f"to it for {self.publish_timeout:g} s; retry later"
                )
            try:
                events = self.state.check(command.batch, datetime.now(UTC))
            except FelixError as error:
                # A repeat of a key whose publish ended the workflow (or was
                # committed by a node this copy has not heard from) is answered
                # from the broker's table, not refused.
                return await self._recall_shared(claim, error)
            after = self.state.preview(events)
            retention = self.retention_seconds if after.terminal else None
            outcome = await self.broker.commit(self.state, after, events, retention, claim)
            if outcome.replayed is not None:
                assert claim is not None
                applied = outcome.replayed.answer_for(claim.key, claim.digest)
                self.state.keys.remember(claim.key, applied)
                return PublishResult([], replayed=applied)
            if outcome.committed:
                if claim is not None:
                    self.state.keys.remember(claim.key, Applied.of(claim.digest, events))
                self._deliver(events)
                self.counters.events_published += len(events)
                self.counters.publish_latency.observe(time.perf_counter() - command.accepted)
                return PublishResult(events)
            # Another node published first: hear what it did, then build the
            # batch again on top (its seq, and its checks: it may be terminal now).
            await self._resync()

    async def _replay_shared(self, after: int | None) -> Replay:
        """This copy's replay, or the broker's when the copy dropped events it still has.

        A node's copy loses its oldest events to its own bounds and to the
        node's history budget; the broker's stream may still hold them, and a
        client resuming here should not get ``recovered: false`` for what
        another node could replay.
        """
        assert self.broker is not None
        replay = self.state.replay(after)
        if replay.recovered is not False or after is None or after >= self.state.last_seq:
            return replay
        last_seq = self.state.last_seq
        try:
            stored = await self.broker.events_after(
                self.workflow_id, after, self.state.history_size
            )
        except BrokerUnavailable:
            return replay  # what this copy has, and recovered: false, beats a refusal
        # Only up to this copy's last_seq: later events reach it through the feed.
        events = [event for event in stored or () if event.seq <= last_seq]
        if events and events[0].seq == after + 1 and events[-1].seq == last_seq:
            return Replay(recovered=True, events=events)
        return replay

    async def _recall_shared(self, claim: Claim | None, error: FelixError) -> PublishResult:
        """The broker's answer for ``claim``'s key; raises ``error`` if it has none."""
        assert self.broker is not None
        if claim is None:
            raise error
        applied = await self.broker.recall(self.workflow_id, claim.key)
        if applied is None:
            raise error
        return PublishResult([], replayed=applied.answer_for(claim.key, claim.digest))

    def _deliver(self, events: list[Event]) -> None:
        fresh = [event for event in events if event.seq > self.state.last_seq]
        if fresh:
            self.state.apply(fresh)
            self._fan_out(fresh)

    async def _resync(self) -> None:
        """Bring this copy level with the broker and tell subscribers what they missed."""
        assert self.broker is not None
        self._stale = True  # until it has worked
        assert self.state_from is not None
        stored = await self.broker.load(self.workflow_id)
        self._stale = False
        if stored is None:
            # Forgotten by the broker (retention ran out, or Redis lost its data).
            for subscription in self._subscribers:
                subscription.finish(CLOSE_GOING_AWAY, "workflow no longer exists")
            self._subscribers.clear()
            self._gone = True
            return
        missed = [event for event in stored.events if event.seq > self.state.last_seq]
        if missed and missed[0].seq != self.state.last_seq + 1:
            # Trimmed before this node read them: the subscribers here cannot
            # get them in order, so they resume elsewhere and learn of the gap.
            for subscription in self._subscribers:
                subscription.kick(CLOSE_SLOW_CONSUMER, "fell behind the broker; resume with after=")
            self._subscribers.clear()
        self.state.history.close()  # replaced whole: its bytes leave the budget
        self.state = self.state_from(stored)
        if missed:
            self._fan_out(missed)

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
            self._ended_at = min(self._ended_at, trio.current_time())

    def _subscribe(self, subscription: Subscription, replay: Replay) -> None:
        if not self.state.terminal and self.subscriber_count() >= self.max_subscribers:
            raise CapacityError(
                f"workflow {self.workflow_id} has {self.max_subscribers} connections, the limit"
            )
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
        ticket = await self.enqueue(batch)
        result: PublishResult = await ticket.wait()
        return result

    async def enqueue(
        self,
        batch: list[tuple[str, dict[str, Any]]],
        claim: Claim | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> Ticket:
        """Put a shape-checked batch in the inbox; the ticket's ``wait()`` gives the answer.

        Returns once the publish is queued, so a caller that enqueues several
        in turn has them applied in that order. ``on_done`` is called when the
        answer is set. Raises as :meth:`publish` does for a full inbox or an
        ended actor (``on_done`` is then not called); the ticket raises the
        rest.
        """
        command = _Publish(batch, claim, reply=_Reply(on_done=on_done))
        await self._put(command)
        return command.reply

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

    def feed_nowait(self, events: list[Event]) -> None:
        """Hand over a batch from the broker's feed, without waiting.

        The feed reader serves every workflow of the node, so it never waits
        on one: if the inbox is full the batch is dropped here and the actor,
        seeing the gap, reads it back from the broker.
        """
        try:
            self._send.send_nowait(_Remote(events))
        except trio.WouldBlock:
            self._stale = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the actor has ended; nobody here watches the workflow

    def resync_nowait(self) -> None:
        """Ask the actor to catch up with the broker (after an outage)."""
        self._stale = True
        with contextlib.suppress(
            trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            self._send.send_nowait(_Resync())

    async def _put(self, command: _Command) -> None:
        try:
            # Usually the inbox has room: then no timeout scope is made (entering
            # one was a twentieth of a publish's CPU). A cancelled caller still
            # puts nothing; the caller's wait for the reply is the checkpoint.
            await trio.lowlevel.checkpoint_if_cancelled()
            with contextlib.suppress(trio.WouldBlock):
                self._send.send_nowait(command)
                return
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
            "history_bytes": self.state.history.nbytes,
        }
