"""A workflow's state: status machine, ``seq``, history ring and the derived view.

Sans-IO and synchronous: the actor calls :meth:`WorkflowState.publish` with
already shape-checked events and the current time, and gets encoded events
back. Nothing here waits, so a batch is checked whole and applied whole in one
step that no other task can interleave with.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import attrs

from felix._core.events import MAX_JSON_DEPTH, TERMINAL_STATUSES, Event, format_timestamp
from felix._core.history import History, HistoryBudget
from felix._core.idempotency import KeyTable
from felix._errors import EventTooLarge, FelixError, InvalidEvent, WorkflowConflict

__all__ = ["Replay", "WorkflowState"]


@attrs.frozen
class Replay:
    """What a new subscriber is owed: the retained events after its position.

    ``recovered`` is ``None`` when the subscriber did not ask to resume,
    ``True`` when every event after its position is still retained, and
    ``False`` when some were dropped from the history (by its count or byte
    bound, or the server's history budget), or the position is
    ahead of the workflow, which only a client of another incarnation of the
    workflow can hold); ``events`` then starts at the oldest one kept.
    """

    recovered: bool | None
    events: list[Event]


@attrs.define
class WorkflowState:
    """Everything one workflow knows; owned by exactly one actor."""

    workflow_id: str
    created_at: str
    task: str | None = None
    metadata: dict[str, Any] = attrs.Factory(dict)
    history_size: int = 1000
    #: Bytes of retained events (see :mod:`felix._core.history`); oldest dropped beyond.
    history_bytes: int = 8 * 1024 * 1024
    #: A bound shared with other workflows' histories (the runtime's), or None.
    history_budget: HistoryBudget | None = attrs.field(default=None, repr=False)
    max_event_bytes: int = 64 * 1024
    max_agents: int = 1000
    #: Deepest nesting of arrays and objects an event may have, encoded.
    max_json_depth: int = MAX_JSON_DEPTH
    status: str = "pending"
    last_seq: int = 0
    updated_at: str = ""
    agents: dict[str, dict[str, Any]] = attrs.Factory(dict)
    synthesis: dict[str, Any] | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    history: History = attrs.field(init=False)
    #: The idempotency keys of the publishes applied (see :mod:`felix._core.idempotency`).
    keys: KeyTable = attrs.Factory(KeyTable)

    def __attrs_post_init__(self) -> None:
        # The history drops the oldest events past its bounds: bounded memory,
        # and a resuming client learns of the gap through ``recovered: false``.
        self.history = History(
            max_events=self.history_size,
            max_bytes=self.history_bytes,
            budget=self.history_budget,
            finished=self.terminal,
        )
        if not self.updated_at:
            self.updated_at = self.created_at

    @property
    def terminal(self) -> bool:
        """True once the workflow is completed, failed or cancelled."""
        return self.status in TERMINAL_STATUSES

    # --- writing --------------------------------------------------------------

    def publish(self, batch: list[tuple[str, dict[str, Any]]], now: datetime) -> list[Event]:
        """Check a batch against the state, then apply all of it or none.

        ``batch`` holds ``(type, fields)`` pairs from :func:`validate_event`.
        Raises :class:`WorkflowConflict` (terminal workflow, forbidden status
        change), :class:`EventTooLarge` or :class:`InvalidEvent` with the
        ``index`` of the first event at fault; the state is then untouched.
        """
        events = self.check(batch, now)
        self.apply(events)
        return events

    def check(self, batch: list[tuple[str, dict[str, Any]]], now: datetime) -> list[Event]:
        """Build the events ``batch`` would become, changing nothing.

        A broker commits them elsewhere first and only then calls
        :meth:`apply`; the errors are those of :meth:`publish`.
        """
        timestamp = format_timestamp(now)
        status = self.status
        new_agents: set[str] = set()
        events: list[Event] = []
        for index, (event_type, fields) in enumerate(batch):
            if status in TERMINAL_STATUSES:
                raise WorkflowConflict(
                    f"workflow {self.workflow_id} is {status}; it takes no more events",
                    index=index,
                )
            status = _next_status(status, event_type, fields, index)
            agent_id: str = fields.get("agent_id", "")
            if (
                event_type in ("agent_spawned", "agent_output")
                and agent_id not in self.agents
                and agent_id not in new_agents
            ):
                if len(self.agents) + len(new_agents) >= self.max_agents:
                    raise InvalidEvent(
                        f"{event_type}: workflow already has {self.max_agents} agents, the limit",
                        index=index,
                    )
                new_agents.add(agent_id)
            try:
                event = Event.build(
                    event_type,
                    self.workflow_id,
                    self.last_seq + index + 1,
                    timestamp,
                    fields,
                    max_depth=self.max_json_depth,
                )
            except FelixError as error:
                error.details["index"] = index
                raise
            if event.frame.size > self.max_event_bytes:
                raise EventTooLarge(
                    f"event is {event.frame.size} bytes encoded; "
                    f"the limit is {self.max_event_bytes}",
                    index=index,
                )
            events.append(event)
        return events

    def apply(self, events: list[Event], *, retain: bool = True) -> None:
        """Apply events already checked (here or by another node), in ``seq`` order.

        Events at or below ``last_seq`` are skipped, so a node that hears of
        its own commit again, or of a batch twice, stays exactly-once. With
        ``retain`` (the default) they enter the history.
        """
        applied: list[Event] = []
        for event in events:
            if event.seq <= self.last_seq:
                continue
            fields = event.fields
            self._apply(event, fields)
            self.status = _next_status(self.status, event.type, fields, 0, strict=False)
            self.last_seq = event.seq
            self.updated_at = event.timestamp
            applied.append(event)
        if retain and applied:
            self.history.extend(applied, finished=self.terminal)

    def restore(self, events: list[Event]) -> None:
        """Fill the history of a state rebuilt from storage with its retained events."""
        self.history.extend(events, finished=self.terminal)

    def preview(self, events: list[Event]) -> WorkflowState:
        """A copy of this state with ``events`` applied, this one untouched.

        A broker stores the state a batch leads to together with the batch,
        before the node's own copy may change. The copy has no history.
        """
        trial = attrs.evolve(self, agents=dict(self.agents), history_budget=None)
        trial.apply(events, retain=False)
        return trial

    def _apply(self, event: Event, fields: dict[str, Any]) -> None:
        if event.type in ("agent_spawned", "agent_output"):
            # A new dict, never an update in place: a preview (see
            # :meth:`preview`) shares the agent dicts of the state it copied.
            known = self.agents.get(fields["agent_id"])
            agent = (
                dict(known)
                if known is not None
                else {
                    "agent_id": fields["agent_id"],
                    "agent_type": None,
                    "spawn_time": None,
                    "spawned_at": None,
                    "outputs": 0,
                    "confidence": None,
                    "last_output": None,
                }
            )
            if event.type == "agent_spawned":
                agent.update(
                    agent_type=fields["agent_type"],
                    spawn_time=fields["spawn_time"],
                    spawned_at=event.timestamp,
                )
            else:
                agent["outputs"] += 1
                agent["confidence"] = fields["confidence"]
                agent["last_output"] = fields["content"]
            self.agents[fields["agent_id"]] = agent
        elif event.type == "synthesis":
            self.synthesis = {"seq": event.seq, "timestamp": event.timestamp, **fields}
        elif event.type == "completed":
            self.result = fields.get("result")
        elif event.type == "error":
            self.error = {"seq": event.seq, "timestamp": event.timestamp, **fields}

    # --- reading --------------------------------------------------------------

    def replay(self, after: int | None) -> Replay:
        """The retained events with ``seq > after`` (none when ``after`` is None)."""
        if after is None:
            return Replay(recovered=None, events=[])
        if not self.history:
            # Nothing retained (no events yet, or all evicted): only a client
            # that has seen everything lost nothing.
            return Replay(recovered=after == self.last_seq, events=[])
        oldest = self.history[0].seq
        if after > self.last_seq:
            return Replay(recovered=False, events=list(self.history))
        if after < oldest - 1:
            return Replay(recovered=False, events=list(self.history))
        start = after - oldest + 1
        return Replay(recovered=True, events=list(itertools.islice(self.history, start, None)))

    def events_after(self, after: int, limit: int) -> list[Event]:
        """Up to ``limit`` retained events with ``seq > after``, oldest first."""
        if not self.history or after >= self.history[-1].seq:
            return []  # also spares islice an ``after`` beyond sys.maxsize (was a 500)
        start = max(0, after - self.history[0].seq + 1)
        return list(itertools.islice(self.history, start, start + limit))

    def view(self, subscribers: int) -> dict[str, Any]:
        """The REST view: the record plus the state its events built."""
        return {
            "workflow_id": self.workflow_id,
            "status": self.status,
            "task": self.task,
            "metadata": self.metadata,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_seq": self.last_seq,
            "subscribers": subscribers,
            "agents": [dict(agent) for agent in self.agents.values()],
            "synthesis": self.synthesis,
            "result": self.result,
            "error": self.error,
        }


def _next_status(
    status: str, event_type: str, fields: dict[str, Any], index: int, *, strict: bool = True
) -> str:
    if event_type == "workflow_status":
        wanted: str = fields["status"]
        if strict and wanted == "pending" and status != "pending":
            raise WorkflowConflict(
                f"workflow_status: cannot go from {status} back to pending", index=index
            )
        return wanted
    if event_type == "completed":
        return "completed"
    if event_type == "error" and fields.get("fatal") is True:
        return "failed"
    # The contract: the first published event of a pending workflow makes it running.
    return "running" if status == "pending" else status
