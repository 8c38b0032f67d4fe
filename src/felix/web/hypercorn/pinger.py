"""One task per server that pings every WebSocket and drops the silent ones.

Felix's own helper, not a change to an upstream class: it replaces
Hypercorn's ping task per connection (see :mod:`felix.web.hypercorn.ws_stream`,
where the defect is described). One round every ``websocket_ping_interval``
seconds pings every watched stream; ``felix_ping_timeout`` seconds later each
stream pinged that sent nothing at all since is dropped.
"""

from __future__ import annotations

from typing import Protocol

import trio

__all__ = ["PingedStream", "Pinger"]


class PingedStream(Protocol):
    """What the pinger needs of a WebSocket stream."""

    felix_heard: float
    felix_pinged_at: float | None

    def felix_ping(self, now: float) -> None:
        """Send a ping without waiting; note ``now`` as the time it was sent."""

    def felix_drop(self) -> None:
        """Drop the connection without waiting."""


class Pinger:
    """Pings every watched WebSocket of one server and drops the silent ones.

    Its task runs in the server's connection nursery while at least one
    WebSocket is watched; :meth:`forget` of the last one cancels it.
    """

    def __init__(self) -> None:
        self._streams: set[PingedStream] = set()
        self._scope: trio.CancelScope | None = None

    def watch(
        self, stream: PingedStream, nursery: trio.Nursery, interval: float, timeout: float
    ) -> None:
        """Ping ``stream`` from the next round on; start the task in ``nursery`` if needed."""
        self._streams.add(stream)
        if self._scope is None:
            self._scope = trio.CancelScope()
            nursery.start_soon(self._run, self._scope, interval, timeout)

    def forget(self, stream: PingedStream) -> None:
        """Stop pinging ``stream``; the task ends with the last stream."""
        self._streams.discard(stream)
        if not self._streams and self._scope is not None:
            self._scope.cancel()
            self._scope = None

    async def _run(self, scope: trio.CancelScope, interval: float, timeout: float) -> None:
        with scope:
            while True:
                sent_at = trio.current_time()
                for stream in list(self._streams):
                    stream.felix_ping(sent_at)
                await trio.sleep(timeout)
                for stream in list(self._streams):
                    if stream.felix_pinged_at == sent_at and stream.felix_heard < sent_at:
                        stream.felix_drop()
                await trio.sleep(max(0.0, interval - timeout))
