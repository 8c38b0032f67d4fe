"""The server-wide history budget: one byte bound over every workflow's history.

Each workflow's :class:`~felix._core.history.History` bounds itself
(``FELIX_HISTORY_SIZE``, ``FELIX_HISTORY_BYTES``); this accountant bounds
their sum (``FELIX_HISTORY_BUDGET_BYTES``). The hub owns one and hands it to
every actor's state; a history reports each change to it
(:meth:`HistoryAccountant.changed`) and, past the budget, the accountant
takes the oldest retained events server-wide — of finished workflows before
running ones — until the total fits again.

No locks: everything runs in the hub's Trio thread, and a history reports
only from a synchronous call, so an eviction never lands in the middle of
another actor's step. It can land between two of its steps; the core's
reads (``replay``, ``events_after``) each copy what they need in one go, and
a resume that needed an evicted event learns it through ``recovered: false``.

"Oldest" is by the event's own ``timestamp`` (RFC 3339 in UTC, so it sorts
as text). Each history sits at most once in each of two heaps (finished,
running) keyed by the timestamp of its oldest event when it was pushed; an
event leaving a history's front only makes that key older than the truth,
so a stale entry is re-keyed when it surfaces. Evicting is then O(log n) per
event, and a publish within the budget costs one addition.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Final

import attrs

from felix._core.history import History

__all__ = ["HistoryAccountant"]

_RUNNING: Final = 1
_FINISHED: Final = 2
#: Dead heap entries (closed or finished histories) tolerated before a heap is
#: rebuilt without them, beyond the number of live ones.
_SLACK: Final = 64

_Entry = tuple[str, int, History]


@attrs.define(eq=False)
class HistoryAccountant:
    """Keeps the bytes of every history it is handed within ``limit``.

    Implements :class:`~felix._core.history.HistoryBudget`; owned by the hub.
    """

    limit: int
    #: Bytes charged by all histories now.
    total: int = 0
    #: Events taken from histories to stay within the limit, since the start.
    evicted: int = 0
    _finished: list[_Entry] = attrs.Factory(list)
    _running: list[_Entry] = attrs.Factory(list)
    #: Which heaps hold a live entry for each history (bit mask).
    _member: dict[History, int] = attrs.Factory(dict)
    _order: itertools.count[int] = attrs.Factory(itertools.count)

    def changed(self, history: History, delta: int) -> None:
        """A history grew or shrank by ``delta`` bytes, or finished (see HistoryBudget)."""
        self.total += delta
        if history.closed:
            self._member.pop(history, None)
            self._compact()
        elif history:
            self._enlist(history)
        if self.total > self.limit:
            self._evict()

    def statistics(self) -> dict[str, Any]:
        """Figures for operators: bytes held, the limit, events evicted so far."""
        return {
            "history_bytes": self.total,
            "history_budget_bytes": self.limit,
            "history_evicted": self.evicted,
        }

    def _enlist(self, history: History) -> None:
        member = self._member.get(history, 0)
        if history.finished:
            if not member & _FINISHED:
                # Its running entry, if any, is dead from now on.
                self._push(self._finished, history)
                self._member[history] = _FINISHED
        elif not member & _RUNNING:
            self._push(self._running, history)
            self._member[history] = member | _RUNNING

    def _push(self, heap: list[_Entry], history: History) -> None:
        heapq.heappush(heap, (history[0].timestamp, next(self._order), history))

    def _evict(self) -> None:
        while self.total > self.limit:
            history = self._oldest(self._finished, _FINISHED) or self._oldest(
                self._running, _RUNNING
            )
            if history is None:
                return  # nothing retained is left to take
            self.total -= history.evict_oldest()
            self.evicted += 1

    def _oldest(self, heap: list[_Entry], flag: int) -> History | None:
        """The history of ``heap`` whose oldest event is the oldest, or None."""
        while heap:
            key, _, history = heap[0]
            member = self._member.get(history, 0)
            if not member & flag:
                heapq.heappop(heap)  # dead: closed, or moved to the finished heap
            elif not history:
                heapq.heappop(heap)  # emptied: enlisted again when it grows
                self._member[history] = member & ~flag
            elif history[0].timestamp != key:
                heapq.heapreplace(heap, (history[0].timestamp, next(self._order), history))
            else:
                return history
        return None

    def _compact(self) -> None:
        live = len(self._member)
        for index, flag in ((0, _FINISHED), (1, _RUNNING)):
            heap = (self._finished, self._running)[index]
            if len(heap) > 2 * live + _SLACK:
                kept = [entry for entry in heap if self._member.get(entry[2], 0) & flag]
                heapq.heapify(kept)
                heap[:] = kept
