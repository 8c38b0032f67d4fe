"""The broker boundary: where workflows live when several nodes share them.

Without a broker (the default) a hub keeps every workflow in its own actors,
and nothing here is used. With one, the broker is the source of truth — it
assigns ``seq`` atomically, keeps each workflow's record, derived state and
history — and every node's actors become local copies that commit through it
and hear of other nodes' commits through its feed.

:class:`Broker` is what the hub and the actors need of an implementation;
:class:`FeedSink` is what the broker's feed calls back on the hub.
:mod:`felix._broker.redis` is the implementation on Redis.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs
import trio

from felix._core.events import Event, Frame
from felix._core.idempotency import Applied, Claim
from felix._core.workflow import WorkflowState

__all__ = ["Broker", "Commit", "FeedSink", "Stored"]


@attrs.frozen
class Stored:
    """A workflow as the broker keeps it.

    ``record`` holds :class:`WorkflowState`'s stored fields by name
    (``workflow_id``, ``task``, ``metadata``, ``created_at``, ``updated_at``,
    ``status``, ``last_seq``, ``agents``, ``synthesis``, ``result``,
    ``error``); ``events`` the retained history, oldest first, when asked for.
    """

    record: dict[str, Any]
    events: list[Event] = attrs.Factory(list)


@attrs.frozen
class Commit:
    """A commit's outcome: done, or refused because the workflow moved on.

    ``current_seq`` is the broker's ``last_seq`` when the expected one did not
    match (another node published first), so the caller can catch up and retry.
    """

    committed: bool
    current_seq: int | None = None
    #: The publish's idempotency key was applied already: nothing was
    #: committed, and this is the answer the first publish got.
    replayed: Applied | None = None


class FeedSink(Protocol):
    """What the broker's feed reader calls on the hub, from the reader's task."""

    def feed_events(self, workflow_id: str, events: list[Event]) -> None:
        """A batch some node committed, in ``seq`` order (this node's own too)."""

    def feed_broadcast(self, frame: Frame) -> None:
        """A system broadcast another node accepted."""

    def feed_system(self, frame: Frame) -> None:
        """A notice for system-stream watchers only, from any node (this one too)."""

    def feed_resumed(self) -> None:
        """The broker is reachable again after an outage: every copy may be stale."""


class Broker(Protocol):
    """Shared storage and fan-in for workflows; every call may raise
    :class:`~felix._errors.BrokerUnavailable` (503) when it cannot be reached.
    """

    #: Names the implementation in ``/healthz`` (``redis``).
    kind: str

    @property
    def connected(self) -> bool:
        """False from a failed call or feed read until one succeeds again."""

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` shows of the broker: kind, connected, since when."""

    async def create(self, state: WorkflowState, max_workflows: int, notice: Frame) -> None:
        """Store a new workflow and put ``notice`` on the feed for system watchers.

        Raises :class:`WorkflowExists` if the id is taken, :class:`CapacityError`
        when ``max_workflows`` are stored.
        """

    async def load(self, workflow_id: str) -> Stored | None:
        """The workflow with its retained history, or None if unknown."""

    async def commit(
        self,
        before: WorkflowState,
        after: WorkflowState,
        events: list[Event],
        retention_seconds: float | None,
        claim: Claim | None = None,
    ) -> Commit:
        """Append ``events`` if the workflow is still at ``before.last_seq``.

        With a ``claim``, its key is looked up first in the same atomic step:
        if the workflow already applied it, nothing is written and the first
        publish's answer comes back as :attr:`Commit.replayed`; else the key
        is stored with the events (the most recent ``idempotency_keys`` kept).

        ``after`` is the state once they are applied, stored whole with them;
        ``retention_seconds`` (for a terminal batch) starts the countdown after
        which the broker forgets the workflow. Raises :class:`WorkflowNotFound`
        when the workflow is gone.
        """

    async def recall(self, workflow_id: str, key: str) -> Applied | None:
        """The answer the publish under ``key`` got, if the workflow applied one."""

    async def view(self, workflow_id: str) -> Stored | None:
        """The workflow's record and derived state (no history), or None."""

    async def events_after(self, workflow_id: str, after: int, limit: int) -> list[Event] | None:
        """Retained events with ``seq > after``, or None for an unknown workflow."""

    async def list(self) -> list[Stored]:
        """Every stored workflow, in creation order, without history."""

    async def broadcast(self, frame: Frame) -> None:
        """Hand a system broadcast to every other node."""

    async def run(
        self, sink: FeedSink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Tail the feed for ever, calling ``sink``; reconnects with backoff."""
