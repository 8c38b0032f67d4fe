"""The stream's pure parts: when to reconnect, what it yields, where it stands.

Sans-IO: nothing here touches a socket or a clock, so the backoff schedule
and the resume logic are tested by plain functions.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias

import attrs

__all__ = ["DEFAULT_BACKOFF", "Backoff", "Event", "Gap", "Position", "StreamItem", "is_terminal"]

#: One event as the server sent it: the flat JSON object of the contract.
Event: TypeAlias = dict[str, Any]

_TERMINAL_STATUSES: Final = frozenset({"completed", "failed", "cancelled"})


@attrs.frozen(kw_only=True)
class Backoff:
    """When a stream reconnects, and when it gives up.

    After the ``n``-th failure in a row the stream sleeps a uniformly random
    time in ``[0, min(max_delay, base * 2 ** (n - 1))]`` ("full jitter"), so
    many clients dropped at once do not come back in step. A connection that
    delivers an event, or stays up for ``max_delay`` seconds, ends the run of
    failures. The stream gives up with :class:`ReconnectFailed` after
    ``max_attempts`` failures in a row, or once ``max_elapsed`` seconds have
    passed since the first of them; ``None`` switches either limit off.
    """

    base: float = 0.25
    max_delay: float = 10.0
    max_attempts: int | None = None
    max_elapsed: float | None = 60.0

    def __attrs_post_init__(self) -> None:
        if not (self.base > 0 and self.max_delay >= self.base):
            raise ValueError("Backoff needs 0 < base <= max_delay")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("Backoff.max_attempts must be at least 1 (or None)")
        if self.max_elapsed is not None and self.max_elapsed <= 0:
            raise ValueError("Backoff.max_elapsed must be positive (or None)")

    def ceiling(self, failures: int) -> float:
        """The longest sleep after ``failures`` failures in a row (``failures >= 1``)."""
        exponent = min(max(failures - 1, 0), 64)
        return min(self.max_delay, self.base * 2.0**exponent)

    def delay(self, failures: int, uniform: Callable[[], float] = random.random) -> float:
        """A full-jitter sleep after ``failures`` failures; ``uniform`` returns [0, 1)."""
        return self.ceiling(failures) * uniform()

    def exhausted(self, failures: int, elapsed: float) -> bool:
        """Whether ``failures`` in a row over ``elapsed`` seconds use up the budget."""
        if self.max_attempts is not None and failures >= self.max_attempts:
            return True
        return self.max_elapsed is not None and elapsed >= self.max_elapsed


#: What :func:`open_workflow_stream` uses unless told otherwise: first retry
#: within 0.25 s, at most 10 s between tries, give up after a minute of failures.
DEFAULT_BACKOFF: Final = Backoff()


# --- stream items and the resume position (pure) ----------------------------------


@attrs.frozen
class Gap:
    """Events the stream could not deliver: the server no longer retained them.

    Yielded in the place of the missing events when the stream resumed (its
    ``connected`` frame said ``"recovered": false``). Every event after
    ``after`` up to the seq of the next event yielded may be missing; the
    usual answer is to refetch the workflow's state over REST
    (:meth:`FelixClient.get_workflow`).

    ``reset`` is true when the workflow's ``seq`` went backwards: the server
    lost the workflow (a restart of an in-memory server) and a new one took the
    same id. The stream then follows the new workflow from its oldest retained
    event.
    """

    #: The seq of the last event the stream had delivered.
    after: int
    #: The workflow's last seq when the stream resumed.
    server_last_seq: int
    #: The connection that found the gap.
    connection_id: str
    reset: bool = False
    #: Lets code that dispatches on ``["type"]``-like names tell it apart.
    type: str = attrs.field(default="gap", init=False)


#: What ``async for`` over a :class:`WorkflowStream` yields.
StreamItem: TypeAlias = Event | Gap


def _seq(event: Mapping[str, Any]) -> int | None:
    seq = event.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def is_terminal(event: Mapping[str, Any]) -> bool:
    """Whether ``event`` ends its workflow: ``workflow_status`` completed, failed or
    cancelled, ``completed``, or an ``error`` with ``fatal: true``."""
    kind = event.get("type")
    if kind == "workflow_status":
        return event.get("status") in _TERMINAL_STATUSES
    if kind == "error":
        return event.get("fatal") is True
    return kind == "completed"


@attrs.define
class Position:
    """Where a stream stands: the seq of the last event it delivered.

    Sans-IO: decides what to ask for on (re)connect, which frames are
    duplicates, and when a ``connected`` frame means a gap.
    """

    #: None until the first ``connected`` of a stream opened without ``after``.
    seq: int | None

    def on_connected(self, frame: Mapping[str, Any]) -> Gap | None:
        """Take a ``connected`` frame in; return the gap it announces, if any."""
        server_last = _seq({"seq": frame.get("last_seq")})
        if self.seq is None:
            # Live only: everything up to the workflow's current seq is history.
            self.seq = server_last or 0
            return None
        if frame.get("recovered") is not False:
            return None
        reset = server_last is not None and server_last < self.seq
        gap = Gap(
            after=self.seq,
            server_last_seq=server_last if server_last is not None else 0,
            connection_id=str(frame.get("connection_id", "")),
            reset=reset,
        )
        if reset:
            self.seq = 0
        return gap

    def is_new(self, event: Mapping[str, Any]) -> bool:
        """False for an event already delivered (``seq`` at or below the position).

        Events without a ``seq`` (system broadcasts) are always new.
        """
        seq = _seq(event)
        return seq is None or self.seq is None or seq > self.seq

    def delivered(self, event: Mapping[str, Any]) -> None:
        """Move the position past an event the caller has received."""
        seq = _seq(event)
        if seq is not None and (self.seq is None or seq > self.seq):
            self.seq = seq
