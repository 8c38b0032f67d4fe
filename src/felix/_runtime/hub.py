"""The hub: the registry of workflow actors and the seed's ConnectionManager API.

:func:`open_hub` owns a nursery in which every workflow actor runs; leaving its
block ends them all. The hub itself keeps only registries (actors by id,
subscriptions by connection id, the system stream's subscribers) which it
changes synchronously, so it needs no lock either.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, TypeVar

import attrs
import trio

from felix._broker import Broker, Stored
from felix._core.events import (
    STATUSES,
    Event,
    Frame,
    check_depth,
    encode,
    format_timestamp,
    make_frame,
    validate_broadcast,
    validate_event,
)
from felix._core.idempotency import Claim, KeyTable
from felix._core.workflow import WorkflowState
from felix._errors import (
    CapacityError,
    EventTooLarge,
    FelixError,
    IdempotencyInProgress,
    InvalidEvent,
    ShuttingDown,
    WorkflowConflict,
    WorkflowExists,
    WorkflowNotFound,
    cut,
    quote,
)
from felix._runtime.actor import PublishResult, Ticket, WorkflowActor
from felix._runtime.budget import HistoryAccountant
from felix._runtime.counters import Counters
from felix._runtime.subscription import (
    CLOSE_GOING_AWAY,
    CLOSE_SLOW_CONSUMER,
    ConnectionInfo,
    Subscription,
)
from felix.settings import Settings

__all__ = ["Hub", "PendingPublish", "PublishResult", "Workflow", "open_hub"]

T = TypeVar("T")

WORKFLOW_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _ignore(_frames: list[Frame]) -> None:
    pass


def _check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise InvalidEvent(f"status must be one of {', '.join(STATUSES)}, got {quote(status)}")


def _now() -> str:
    return format_timestamp(datetime.now(UTC))


def check_workflow_id(workflow_id: Any) -> str:
    """Return ``workflow_id`` if it matches the contract's pattern, else 422."""
    if not isinstance(workflow_id, str) or not WORKFLOW_ID.fullmatch(workflow_id):
        raise InvalidEvent(
            "field 'workflow_id' must match ^[A-Za-z0-9_-]{1,64}$ "
            "(letters, digits, _ and -, at most 64)"
        )
    return workflow_id


@attrs.frozen
class Workflow:
    """A snapshot of a workflow as the REST API shows it."""

    workflow_id: str
    status: str
    task: str | None
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    last_seq: int
    subscribers: int
    agents: list[dict[str, Any]]
    synthesis: dict[str, Any] | None
    result: Any
    error: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """The contract's workflow object."""
        return attrs.asdict(self, recurse=False)


@attrs.frozen(eq=False)
class PendingPublish:
    """A publish queued on its workflow's actor (see :meth:`Hub.submit`)."""

    _hub: Hub
    _actor: WorkflowActor
    _ticket: Ticket
    _events: list[Any]
    _idempotency_key: str | None

    @property
    def done(self) -> bool:
        """Whether the actor has answered (``result()`` then waits for nothing more,
        unless the publish has to be made again on a fresh copy)."""
        return self._ticket.done

    async def result(self) -> PublishResult:
        """Wait for the actor's answer; raises what :meth:`Hub.publish` raises.

        With a broker, a copy that retired before taking the publish leaves it
        unapplied; it is then published again on a fresh copy.
        """
        try:
            result: PublishResult = await self._ticket.wait()
        except WorkflowNotFound:
            if self._hub.broker is None or not self._actor.retired:
                raise
            return await self._hub.publish(
                self._actor.workflow_id, self._events, idempotency_key=self._idempotency_key
            )
        return result


@attrs.define(eq=False)
class Hub:
    """Creates workflows, routes events to their actors, hands out streams.

    Get one from :func:`open_hub`. All methods must be called from the Trio
    run that opened the hub.
    """

    settings: Settings
    _nursery: trio.Nursery
    #: Shared storage for several nodes (see :mod:`felix._broker`); None keeps
    #: every workflow in this process.
    broker: Broker | None = None
    _actors: dict[str, WorkflowActor] = attrs.field(factory=dict, init=False)
    #: Workflows being loaded from the broker, so two loads of one id wait for one.
    _loading: dict[str, trio.Event] = attrs.field(factory=dict, init=False)
    _connections: dict[str, Subscription] = attrs.field(factory=dict, init=False)
    _system: set[Subscription] = attrs.field(factory=set, init=False)
    _accepting: bool = attrs.field(default=True, init=False)
    _connections_gone: trio.Event = attrs.field(factory=trio.Event, init=False)
    #: Set when :meth:`shutdown` begins (producer streams stop reading then).
    _stopping: trio.Event = attrs.field(factory=trio.Event, init=False)
    #: (workflow id, idempotency key) of the keyed publishes queued, not yet answered.
    _claims: set[tuple[str, str]] = attrs.field(factory=set, init=False)
    #: Totals for operators, read by the web layer's metrics collector.
    counters: Counters = attrs.field(factory=Counters, init=False)
    #: Keeps the retained history of every workflow here within
    #: ``settings.history_budget_bytes`` (see :mod:`felix._runtime.budget`).
    history_budget: HistoryAccountant = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.history_budget = HistoryAccountant(self.settings.history_budget_bytes)

    # --- workflows ---------------------------------------------------------------

    async def create_workflow(
        self,
        workflow_id: str | None = None,
        task: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Workflow:
        """Create a pending workflow and start its actor in the hub's nursery.

        Raises :class:`WorkflowExists` (409) for a taken id,
        :class:`InvalidEvent` (422) for a bad id, task or metadata,
        :class:`EventTooLarge` (413) when task and metadata exceed the event
        size limit, :class:`CapacityError` (503) at ``max_workflows``.
        """
        if not self._accepting:
            raise ShuttingDown("the server is shutting down")
        workflow_id, metadata = self._check_new(workflow_id, task, metadata)
        state = self._new_state(
            workflow_id,
            created_at=_now(),
            task=task,
            metadata=metadata,
            history_budget=self.history_budget,
        )
        # Tells system-stream watchers (dashboards) of a workflow before its
        # first event; no seq: it is not one of the workflow's events.
        created = make_frame(
            {
                "type": "workflow_created",
                "workflow_id": workflow_id,
                "timestamp": state.created_at,
                "status": state.status,
                "task": task,
            }
        )
        if self.broker is not None:
            # The broker decides, atomically across nodes, whether the id is
            # free, and puts ``created`` on the feed for every node's watchers.
            await self.broker.create(state, self.settings.max_workflows, created)
            if len(self._actors) >= self.settings.max_workflows:
                return Workflow(**state.view(0))  # stored; a copy is loaded when needed
            return self._snapshot(await self._start_actor(state))
        if workflow_id in self._actors:
            raise WorkflowExists(f"workflow {workflow_id} already exists")
        if len(self._actors) >= self.settings.max_workflows:
            raise CapacityError(
                f"the server holds {self.settings.max_workflows} workflows, the limit; "
                "finished ones are forgotten after their retention period"
            )
        actor = await self._start_actor(state)
        self._to_system([created])
        return self._snapshot(actor)

    def _check_new(
        self, workflow_id: str | None, task: Any, metadata: Any
    ) -> tuple[str, dict[str, Any]]:
        """A new workflow's id (made up when None) and metadata, checked; raises as
        :meth:`create_workflow` says."""
        if workflow_id is None:
            workflow_id = f"wf_{secrets.token_hex(6)}"
        check_workflow_id(workflow_id)
        if task is not None and not isinstance(task, str):
            raise InvalidEvent("field 'task' must be a string or null")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise InvalidEvent("field 'metadata' must be a JSON object")
        size = len(encode({"task": task, "metadata": metadata}).encode())
        # After encoding, which refuses reference cycles the walk could not end on.
        check_depth({"metadata": metadata}, self.settings.max_json_depth, "metadata")
        if size > self.settings.max_event_bytes:
            raise EventTooLarge(
                f"task and metadata are {size} bytes encoded; the limit is "
                f"{self.settings.max_event_bytes}"
            )
        return workflow_id, metadata

    def _new_state(self, workflow_id: str, **fields: Any) -> WorkflowState:
        return WorkflowState(
            workflow_id=workflow_id,
            history_size=self.settings.history_size,
            history_bytes=self.settings.history_bytes,
            max_event_bytes=self.settings.max_event_bytes,
            max_agents=self.settings.max_agents_per_workflow,
            max_json_depth=self.settings.max_json_depth,
            keys=KeyTable(self.settings.idempotency_keys),
            **fields,
        )

    def _state_from(self, stored: Stored) -> WorkflowState:
        # A state to read once (a view with a broker): outside the budget.
        state = self._new_state(**stored.record)
        state.restore(stored.events)
        return state

    def _copy_from(self, stored: Stored) -> WorkflowState:
        # This node's copy, held by an actor: its history counts in the budget.
        state = self._new_state(**stored.record, history_budget=self.history_budget)
        state.restore(stored.events)
        return state

    async def _start_actor(self, state: WorkflowState) -> WorkflowActor:
        settings = self.settings
        actor = WorkflowActor(
            state=state,
            retention_seconds=settings.retention_seconds,
            publish_timeout=settings.publish_timeout,
            max_subscribers=settings.max_connections_per_workflow,
            # With a broker the system stream is fed from the broker's feed,
            # which carries every node's events, this node's included.
            on_frames=self._to_system if self.broker is None else _ignore,
            on_exit=self._forget,
            inbox_size=settings.inbox_size,
            counters=self.counters,
            broker=self.broker,
            idle_seconds=settings.broker_idle_seconds,
            state_from=self._copy_from,
        )
        # Registered before the await so a concurrent create of the same id
        # sees it taken.
        self._actors[state.workflow_id] = actor
        await self._nursery.start(actor.run)
        return actor

    async def _local(self, workflow_id: str) -> WorkflowActor:
        """The workflow's actor here; with a broker, loaded from it if need be."""
        actor = self._actors.get(workflow_id)
        if actor is not None or self.broker is None:
            return self._actor(workflow_id)
        loading = self._loading.get(workflow_id)
        if loading is not None:
            await loading.wait()
            return self._actor(workflow_id)
        self._loading[workflow_id] = loading = trio.Event()
        try:
            stored = await self.broker.load(workflow_id)
            if stored is None:
                raise WorkflowNotFound(f"workflow {cut(workflow_id)} not found")
            if len(self._actors) >= self.settings.max_workflows:
                raise CapacityError(
                    f"this node holds {self.settings.max_workflows} workflows, the limit; "
                    "copies nobody watches are dropped after FELIX_BROKER_IDLE_SECONDS"
                )
            actor = await self._start_actor(self._copy_from(stored))
            # What was committed between the load and the registration went
            # past on the feed before this node listened for it.
            actor.resync_nowait()
            return actor
        finally:
            del self._loading[workflow_id]
            loading.set()

    def _forget(self, actor: WorkflowActor) -> None:
        if self._actors.get(actor.workflow_id) is actor:
            del self._actors[actor.workflow_id]

    def _actor(self, workflow_id: str) -> WorkflowActor:
        try:
            return self._actors[workflow_id]
        except KeyError:
            raise WorkflowNotFound(f"workflow {cut(workflow_id)} not found") from None

    def _snapshot(self, actor: WorkflowActor) -> Workflow:
        return Workflow(**actor.view())

    def _get_local(self, workflow_id: str) -> Workflow:
        # This process's actor only; the public read is get_workflow().
        return self._snapshot(self._actor(workflow_id))

    def _list_local(
        self, status: str | None = None, limit: int = 100, offset: int = 0, newest: bool = False
    ) -> tuple[list[Workflow], int]:
        # This process's actors only; the public read is list_workflows().
        _check_status(status)
        actors: Iterable[WorkflowActor] = self._actors.values()
        if status is not None:
            actors = [actor for actor in actors if actor.state.status == status]
        else:
            actors = list(actors)
        if newest:
            actors.reverse()
        page = [self._snapshot(actor) for actor in actors[offset : offset + limit]]
        return page, len(actors)

    def _events_local(self, workflow_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        # This process's actor only; the public read is get_events().
        return self._actor(workflow_id).state.events_after(after, limit)

    async def get_workflow(self, workflow_id: str) -> Workflow:
        """The workflow's current state, on any node: from the broker if there is one.

        Raises :class:`WorkflowNotFound`, and :class:`BrokerUnavailable` when
        the broker cannot be reached.
        """
        if self.broker is None:
            return self._get_local(workflow_id)
        stored = await self.broker.view(workflow_id)
        if stored is None:
            raise WorkflowNotFound(f"workflow {cut(workflow_id)} not found")
        return Workflow(**self._state_from(stored).view(self.connection_count(workflow_id)))

    async def list_workflows(
        self, status: str | None = None, limit: int = 100, offset: int = 0, *, newest: bool = False
    ) -> tuple[list[Workflow], int]:
        """Workflows in creation order (``newest``: the newest first), optionally of
        one status, on any node.

        Returns one page and the total that matched, from the broker if there
        is one. Raises :class:`InvalidEvent` for an unknown status and
        :class:`BrokerUnavailable` when the broker cannot be reached.
        """
        if self.broker is None:
            return self._list_local(status, limit, offset, newest)
        _check_status(status)
        states = [self._state_from(stored) for stored in await self.broker.list()]
        if status is not None:
            states = [state for state in states if state.status == status]
        if newest:
            states.reverse()
        page = [
            Workflow(**state.view(self.connection_count(state.workflow_id)))
            for state in states[offset : offset + limit]
        ]
        return page, len(states)

    async def get_events(self, workflow_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        """Retained events with ``seq > after``, oldest first, at most ``limit``, on any node.

        From the broker if there is one. Raises :class:`WorkflowNotFound` and
        :class:`BrokerUnavailable`.
        """
        if self.broker is None:
            return self._events_local(workflow_id, after, limit)
        events = await self.broker.events_after(workflow_id, after, limit)
        if events is None:
            raise WorkflowNotFound(f"workflow {cut(workflow_id)} not found")
        return events

    async def require(self, workflow_id: str) -> None:
        """Raise :class:`WorkflowNotFound` unless the workflow exists (anywhere)."""
        await self._local(workflow_id)

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` reports: accepting work, and the broker's state."""
        broker = self.broker.health() if self.broker is not None else {"kind": "memory"}
        return {"accepting": self._accepting, "broker": broker}

    def statistics(self) -> dict[str, Any]:
        """Counts for operators: workflows by status, connections, subscribers."""
        by_status = dict.fromkeys(STATUSES, 0)
        for actor in self._actors.values():
            by_status[actor.state.status] += 1
        return {
            "workflows": len(self._actors),
            "workflows_by_status": by_status,
            "connections": len(self._connections),
            "system_subscribers": len(self._system),
            "buffered_bytes": sum(sub.buffered_bytes for sub in self._connections.values()),
            "accepting": self._accepting,
            **self.history_budget.statistics(),
        }

    def actor_statistics(self) -> list[dict[str, Any]]:
        """Per-actor inbox and subscriber figures, for operators."""
        return [actor.statistics() for actor in self._actors.values()]

    # --- publishing ----------------------------------------------------------

    async def publish(
        self, workflow_id: str, events: list[Any], *, idempotency_key: str | None = None
    ) -> PublishResult:
        """Validate a batch whole, then apply it all or not at all.

        Raises :class:`InvalidEvent` (422) with the ``index`` of the first bad
        event, :class:`EventTooLarge` (413), :class:`WorkflowNotFound` (404),
        :class:`WorkflowConflict` (409) for a terminal workflow, and
        :class:`CapacityError` (503) when the workflow's inbox stays full.

        With an ``idempotency_key`` (see :mod:`felix._core.idempotency`), a
        repeat of a key the workflow applied applies nothing and returns the
        first answer (``result.replayed``); it raises
        :class:`IdempotencyKeyReused` (422) for another body under the key and
        :class:`IdempotencyInProgress` (409) while a publish with the key is
        still being applied.
        """
        pending = await self.submit(workflow_id, events, idempotency_key=idempotency_key)
        return await pending.result()

    async def submit(
        self, workflow_id: str, events: list[Any], *, idempotency_key: str | None = None
    ) -> PendingPublish:
        """Validate a batch and queue it on the workflow's actor; the answer comes later.

        Returns once the publish is in the actor's inbox (waiting up to
        ``publish_timeout`` for room), so publishes submitted one after the
        other by one task are applied in that order; ``await
        pending.result()`` gives the answer. Raises what :meth:`publish`
        raises before the publish is queued (:class:`InboxFull` for a full
        inbox); ``result()`` raises the rest.
        """
        if len(events) > self.settings.max_batch_events:
            raise EventTooLarge(
                f"batch has {len(events)} events; the limit is {self.settings.max_batch_events}"
            )
        batch: list[tuple[str, dict[str, Any]]] = []
        for index, event in enumerate(events):
            try:
                batch.append(validate_event(event))
            except FelixError as error:
                error.details["index"] = index
                raise
        claim = None if idempotency_key is None else Claim.of(idempotency_key, events)
        actor = await self._local(workflow_id)
        if actor.state.terminal and claim is None:
            # With a key, the actor answers: it may be the retry of the last event.
            raise WorkflowConflict(
                f"workflow {workflow_id} is {actor.state.status}; it takes no more events",
                index=0,
            )
        on_done = None
        if claim is not None:
            in_flight = (workflow_id, claim.key)
            if in_flight in self._claims:
                raise IdempotencyInProgress(
                    f"a publish with idempotency key {claim.key!r} is still being applied; "
                    "retry to get its answer"
                )
            self._claims.add(in_flight)
            on_done = partial(self._claims.discard, in_flight)
        try:
            actor, ticket = await self._on_local(
                actor, lambda actor: actor.enqueue(batch, claim, on_done)
            )
        except BaseException:
            if on_done is not None:
                on_done()
            raise
        return PendingPublish(self, actor, ticket, events, idempotency_key)

    async def _on_local(
        self, actor: WorkflowActor, call: Callable[[WorkflowActor], Awaitable[T]]
    ) -> tuple[WorkflowActor, T]:
        """Run ``call`` on the workflow's actor; returns the actor it ran on and its answer.

        With a broker, a copy may retire (nobody here watched it for
        ``broker_idle_seconds``) between being looked up and being called;
        the workflow still exists, so a fresh copy is loaded and called.
        """
        while True:
            try:
                return actor, await call(actor)
            except WorkflowNotFound:
                if self.broker is None or not actor.retired:
                    raise
                actor = await self._local(actor.workflow_id)

    async def send_workflow_event(
        self, workflow_id: str, event_type: str, data: dict[str, Any] | None = None
    ) -> Event:
        """Publish one event of ``event_type`` with ``data`` as its fields.

        The seed's helper of the same name; see :meth:`publish` for errors.
        """
        result = await self.publish(workflow_id, [{"type": event_type, **(data or {})}])
        return result.events[0]

    async def broadcast_to_workflow(self, workflow_id: str, event: dict[str, Any]) -> Event:
        """Publish ``event`` (a dict with its ``type``) to one workflow.

        The seed's ``ConnectionManager.broadcast_to_workflow``: in Felix the
        event gets a ``seq``, enters the history and reaches every subscriber.
        """
        result = await self.publish(workflow_id, [event])
        return result.events[0]

    async def broadcast_to_all(self, event: dict[str, Any]) -> int:
        """Send a system event (no ``seq``, no ``workflow_id``) to every connection.

        Returns how many connections it was queued for. Raises
        :class:`InvalidEvent` for a workflow type or a malformed event.
        """
        frame = validate_broadcast(
            event, datetime.now(UTC), self.settings.max_event_bytes, self.settings.max_json_depth
        )
        if self.broker is not None:
            await self.broker.broadcast(frame)  # for the other nodes; this one delivers below
        return self.feed_broadcast(frame)

    # --- the broker's feed (see felix._broker.FeedSink) ------------------------------

    def feed_events(self, workflow_id: str, events: list[Event]) -> None:
        """A batch some node committed: to this node's copy, and the system stream."""
        actor = self._actors.get(workflow_id)
        if actor is not None:
            actor.feed_nowait(events)
        self._to_system([event.frame for event in events])

    def feed_system(self, frame: Frame) -> None:
        """A notice for system-stream watchers only (``workflow_created``)."""
        self._to_system([frame])

    def feed_resumed(self) -> None:
        """The broker is back: every copy here catches up with it."""
        for actor in self._actors.values():
            actor.resync_nowait()

    def feed_broadcast(self, frame: Frame) -> int:
        """Queue a system broadcast for every connection here; returns how many."""
        delivered = 0
        frames = [frame]
        for subscription in list(self._connections.values()):
            if subscription.wants(frame.type) and subscription.offer(frames):
                delivered += 1
        return delivered

    async def cancel(self, workflow_id: str) -> Event:
        """Cancel a workflow: publishes ``workflow_status`` cancelled.

        Raises :class:`WorkflowNotFound` and, if it already ended,
        :class:`WorkflowConflict`.
        """
        try:
            return await self.send_workflow_event(
                workflow_id, "workflow_status", {"status": "cancelled"}
            )
        except WorkflowConflict as error:
            error.details.pop("index", None)
            raise

    def _to_system(self, frames: list[Frame]) -> None:
        if not self._system:
            return
        dropped = [sub for sub in self._system if not sub.offer(frames)]
        self._system.difference_update(dropped)

    # --- subscribing ---------------------------------------------------------

    def _new_subscription(
        self, workflow_id: str | None, types: frozenset[str] | None, remote: str | None
    ) -> Subscription:
        if not self._accepting:
            raise ShuttingDown("the server is shutting down")
        if len(self._connections) >= self.settings.max_connections:
            raise CapacityError(
                f"the server has {self.settings.max_connections} connections, the limit"
            )
        subscription = Subscription(
            connection_id=f"conn_{secrets.token_hex(6)}",
            workflow_id=workflow_id,
            connected_at=_now(),
            types=types,
            remote=remote,
            max_bytes=self.settings.subscriber_buffer_bytes,
            max_frames=self.settings.subscriber_buffer_frames,
        )
        self._connections[subscription.connection_id] = subscription
        return subscription

    def _drop_subscription(self, subscription: Subscription) -> None:
        subscription.detach()
        if self._connections.pop(subscription.connection_id, None) is not None:
            self.counters.frames_delivered_closed += subscription.messages_sent
            self.counters.slow_consumer_kicks += subscription.close_code == CLOSE_SLOW_CONSUMER
        if not self._connections:
            self._connections_gone.set()

    @asynccontextmanager
    async def subscribe(
        self,
        workflow_id: str,
        *,
        after: int | None = None,
        types: Iterable[str] | None = None,
        remote: str | None = None,
    ) -> AsyncIterator[Subscription]:
        """Open a stream of one workflow's encoded events.

        The subscription first holds ``connected``, then the retained events
        with ``seq > after`` (if ``after`` is given), then live events. It
        ends after the workflow's terminal event, at shutdown, or with 4008
        when its buffer overflows. Leaving the block unregisters it at once.

        Raises :class:`WorkflowNotFound`, :class:`CapacityError` and
        :class:`ShuttingDown` before yielding.
        """
        actor = await self._local(workflow_id)
        subscription = self._new_subscription(
            workflow_id, frozenset(types) if types is not None else None, remote
        )
        try:
            actor, _ = await self._on_local(
                actor, lambda actor: actor.subscribe(subscription, after)
            )
            yield subscription
        finally:
            self._drop_subscription(subscription)
            actor.unsubscribe_nowait(subscription)

    @asynccontextmanager
    async def subscribe_system(
        self, *, types: Iterable[str] | None = None, remote: str | None = None
    ) -> AsyncIterator[Subscription]:
        """Open the system stream: every workflow's events plus broadcasts.

        Its ``connected`` frame has ``workflow_id: null`` and no status.
        """
        subscription = self._new_subscription(
            None, frozenset(types) if types is not None else None, remote
        )
        try:
            subscription.preload(
                [
                    make_frame(
                        {
                            "type": "connected",
                            "workflow_id": None,
                            "timestamp": _now(),
                            "connection_id": subscription.connection_id,
                        }
                    )
                ],
                control=True,
            )
            self._system.add(subscription)
            yield subscription
        finally:
            self._system.discard(subscription)
            self._drop_subscription(subscription)

    def connections(self) -> list[ConnectionInfo]:
        """Every open connection with its metadata, oldest first."""
        return [subscription.info() for subscription in self._connections.values()]

    def connection_count(self, workflow_id: str | None = None) -> int:
        """Open connections, in total or of one workflow."""
        if workflow_id is None:
            return len(self._connections)
        return sum(1 for sub in self._connections.values() if sub.workflow_id == workflow_id)

    # --- shutdown ------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """False once :meth:`shutdown` has begun."""
        return self._accepting

    async def wait_shutting_down(self) -> None:
        """Return once :meth:`shutdown` has begun (at once if it has)."""
        await self._stopping.wait()

    async def shutdown(self, grace: float | None = None) -> None:
        """Refuse new work, let every connection drain, close them with 1001.

        Each subscription is asked to finish after sending what it holds;
        those still open after ``grace`` seconds (default
        ``settings.shutdown_grace``) are closed at once. Idempotent.
        """
        self._accepting = False
        self._stopping.set()
        for subscription in self._connections.values():
            subscription.finish(CLOSE_GOING_AWAY, "server shutting down")
        if not self._connections:
            return
        self._connections_gone = trio.Event()
        with trio.move_on_after(self.settings.shutdown_grace if grace is None else grace):
            await self._connections_gone.wait()
        for subscription in self._connections.values():
            subscription.kick(CLOSE_GOING_AWAY, "server shutting down")


@asynccontextmanager
async def open_hub(
    settings: Settings | None = None, *, broker: Broker | None = None
) -> AsyncIterator[Hub]:
    """Open a hub whose workflow actors live in a nursery of this block.

    Leaving the block cancels every actor; subscriptions still open then end
    with 1001. Usable from any Trio program, with or without the web layer::

        async with felix.open_hub() as hub:
            wf = await hub.create_workflow(task="summarise")
            await hub.send_workflow_event(wf.workflow_id, "workflow_status", {"status": "running"})

    With ``settings.broker`` a Redis URL (or a ``broker`` given), workflows
    live in the broker and are shared with every other hub on it; opening
    raises :class:`BrokerUnavailable` if it cannot be reached.
    """
    settings = settings or Settings()
    async with contextlib.AsyncExitStack() as stack:
        if broker is None and settings.broker != "memory":
            from felix._broker.redis import open_redis_broker  # noqa: PLC0415 - optional

            broker = await stack.enter_async_context(open_redis_broker(settings))
        async with trio.open_nursery() as nursery:
            hub = Hub(settings, nursery, broker)
            if broker is not None:
                await nursery.start(broker.run, hub)
            try:
                yield hub
            finally:
                hub._accepting = False
                for subscription in list(hub._connections.values()):
                    subscription.kick(CLOSE_GOING_AWAY, "server shutting down")
                nursery.cancel_scope.cancel()
