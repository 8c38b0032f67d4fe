"""Stack fix: Hypercorn sends WebSocket pings but never checks the answers.

The defect (Hypercorn 0.18): with ``websocket_ping_interval`` set, Hypercorn
pings every connection, but it ignores pongs, so a peer that vanished without
closing (a laptop lid shut, a NAT mapping dropped, a crashed process whose
host stays up) is never noticed: its connection, tasks and subscription stay
until TCP gives up, which takes many minutes.

The fix notes the time of any data received from the peer (a pong is data).
One :class:`Pinger` per server pings every open WebSocket in rounds, one
round every ``websocket_ping_interval`` seconds, and ``FELIX_PING_TIMEOUT``
seconds after a round drops each connection it pinged that sent nothing at
all since; the app gets its disconnect. A peer that dies is therefore dropped
within ``FELIX_PING_INTERVAL + FELIX_PING_TIMEOUT`` seconds.

Hypercorn's own ping task lives as long as its connection and sleeps through
the close (holding the connection's task group, and shutdown, for up to an
interval): one sleeping task per idle connection, a quarter of what an idle
WebSocket cost. The pinger is one task for the whole server, started in the
server's connection nursery when the first WebSocket is watched and ended when
the last one closes, so it never holds shutdown. Each ping and each drop runs
as a short task in its connection's own task group: a connection whose writes
are stalled (a peer that stopped reading) never holds up the round.

Installed by :func:`felix.web.hypercorn.install`;
``tests/web/test_stack_fixes.py`` shows a silent peer kept forever without it.
"""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.protocol.events import Body, Data, Event, StreamClosed
from hypercorn.protocol.ws_stream import WSStream
from wsproto.events import Ping

from felix.web.hypercorn.fix_send_deadline import CURRENT_SERVER

__all__ = ["DeadPeerWSStream", "Pinger"]


class Pinger:
    """Pings every watched WebSocket of one server and drops the silent ones.

    Its task runs in the server's connection nursery while at least one
    WebSocket is watched; :meth:`forget` of the last one cancels it.
    """

    def __init__(self) -> None:
        self._streams: set[DeadPeerWSStream] = set()
        self._scope: trio.CancelScope | None = None

    def watch(
        self, stream: DeadPeerWSStream, nursery: trio.Nursery, interval: float, timeout: float
    ) -> None:
        """Ping ``stream`` from the next round on; start the task in ``nursery`` if needed."""
        self._streams.add(stream)
        if self._scope is None:
            self._scope = trio.CancelScope()
            nursery.start_soon(self._run, self._scope, interval, timeout)

    def forget(self, stream: DeadPeerWSStream) -> None:
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


class DeadPeerWSStream(WSStream):
    """Hypercorn's WebSocket stream, dropping peers that stop answering pings.

    Behaves exactly like Hypercorn's own unless its config carries
    ``felix_ping_timeout`` and a ``felix_pinger``.
    """

    #: When data last came from the peer (trio's clock).
    felix_heard: float = 0.0
    #: When the pinger last sent this stream a ping; None before the first.
    felix_pinged_at: float | None = None
    _felix_pinger: Pinger | None = None

    async def handle(self, event: Event) -> None:
        if isinstance(event, Body | Data):
            self.felix_heard = self.context.time()
        await super().handle(event)
        if self.closed and self._felix_pinger is not None:
            self._felix_pinger.forget(self)
            self._felix_pinger = None

    async def _send_pings(self) -> None:
        # Hypercorn starts this task once the WebSocket is accepted. With
        # Felix's settings it only hands the stream to the server's pinger and
        # ends, so an idle connection keeps no ping task of its own.
        timeout: float | None = getattr(self.config, "felix_ping_timeout", None)
        pinger: Pinger | None = getattr(self.config, "felix_pinger", None)
        interval = self.config.websocket_ping_interval
        server = CURRENT_SERVER.get()
        nursery = None if server is None else server.felix_handler_nursery
        if timeout is None or pinger is None or interval is None or nursery is None:
            await super()._send_pings()
            return
        if not self.closed:
            self._felix_pinger = pinger
            pinger.watch(self, nursery, interval, timeout)

    def felix_ping(self, now: float) -> None:
        """Send a ping from a short task of this connection (never waits)."""
        if self._felix_spawn(self._send_wsproto_event, Ping()):
            self.felix_pinged_at = now

    def felix_drop(self) -> None:
        """Drop the connection (no close frame: the peer is not answering)."""
        self._felix_spawn(self._felix_drop)

    async def _felix_drop(self) -> None:
        if not self.closed:
            await self.config.log.info("dropping a WebSocket peer that stopped answering pings")
            await self.send(StreamClosed(stream_id=self.stream_id))

    def _felix_spawn(self, func: Any, *args: Any) -> bool:
        if self.closed:
            return False
        try:
            self.task_group.spawn(func, *args)
        except (RuntimeError, AttributeError):
            # The connection's task group is over: the connection is ending.
            if self._felix_pinger is not None:
                self._felix_pinger.forget(self)
                self._felix_pinger = None
            return False
        return True
