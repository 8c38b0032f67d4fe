"""One workflow's retained events, bounded in count and in bytes. Sans-IO.

The history is what a resuming subscriber is replayed from and what
``GET …/events`` reads. It keeps each event once, as its encoded frame (see
:meth:`Event.retain`), and charges it :func:`event_cost` bytes: the frame's
wire bytes plus :data:`EVENT_OVERHEAD` for the objects around them.

Two bounds apply. A history's own (``max_events``, ``max_bytes``) drop its
oldest events as new ones arrive. A bound shared with other histories (the
server-wide budget) is kept by a :class:`HistoryBudget` the history reports
to after every change; the budget may then take the oldest events of any
history it watches through :meth:`History.evict_oldest`. Which history gives
them up is the budget's policy, not this module's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Final, Protocol

import attrs

from felix._core.events import Event

__all__ = ["EVENT_OVERHEAD", "History", "HistoryBudget", "event_cost"]

#: Bytes a retained event costs beyond its frame's wire bytes: the Event and
#: Frame objects, the bytes object's header, its timestamp string and ``seq``
#: and its slot in the history, measured with tracemalloc on CPython 3.11 at
#: 260-350 since frames carry their seq for SSE (tests/core/test_history.py
#: keeps the figure honest).
EVENT_OVERHEAD: Final = 352


def event_cost(event: Event) -> int:
    """Bytes a retained event is charged: its wire bytes plus :data:`EVENT_OVERHEAD`."""
    return len(event.frame.wire) + EVENT_OVERHEAD


class HistoryBudget(Protocol):
    """A bound several histories share (the runtime keeps one per server)."""

    def changed(self, history: History, delta: int) -> None:
        """``history`` grew by ``delta`` bytes (negative: shrank), or finished.

        Called after the history is consistent again; the budget may evict
        from any history it watches, this one included, before returning.
        """


@attrs.define(eq=False)
class History:
    """The retained events of one workflow, oldest first, ``seq`` without gaps.

    Events leave only from the front, so the retained ones are always the
    newest and consecutive. Owned by one :class:`WorkflowState`; a shared
    ``budget`` may take its oldest events between any two calls, so callers
    take what they need in one synchronous step (``list(history)``).
    """

    max_events: int = 1000
    max_bytes: int = 8 * 1024 * 1024
    budget: HistoryBudget | None = None
    #: True once the workflow ended; a budget evicts finished workflows first.
    finished: bool = False
    #: Bytes charged for the retained events (see :func:`event_cost`).
    nbytes: int = 0
    #: True once :meth:`close` ran: the history holds nothing and takes nothing.
    closed: bool = False
    _events: deque[Event] = attrs.Factory(deque)

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)

    def __getitem__(self, index: int) -> Event:
        return self._events[index]

    def extend(self, events: Iterable[Event], *, finished: bool = False) -> None:
        """Retain ``events`` (in ``seq`` order), then drop the oldest past the bounds.

        ``finished`` marks the workflow as ended. A single event larger than
        ``max_bytes`` is not kept. Reports the change to the budget, which
        may evict more.
        """
        if self.closed:
            return
        queue = self._events
        before = self.nbytes
        added = 0
        for event in events:
            event.retain()
            queue.append(event)
            added += event_cost(event)
        nbytes = before + added
        while queue and (len(queue) > self.max_events or nbytes > self.max_bytes):
            nbytes -= event_cost(queue.popleft())
        self.nbytes = nbytes
        newly_finished = finished and not self.finished
        self.finished = self.finished or finished
        if self.budget is not None and (nbytes != before or newly_finished):
            self.budget.changed(self, nbytes - before)

    def evict_oldest(self) -> int:
        """Drop the oldest event; return the bytes that freed (0 if empty).

        For the budget: it does not report back to it.
        """
        if not self._events:
            return 0
        cost = event_cost(self._events.popleft())
        self.nbytes -= cost
        return cost

    def close(self) -> None:
        """Drop every event and tell the budget; the workflow is gone from here."""
        if self.closed:
            return
        freed, self.nbytes = self.nbytes, 0
        self._events.clear()
        self.closed = True
        if self.budget is not None:
            self.budget.changed(self, -freed)
