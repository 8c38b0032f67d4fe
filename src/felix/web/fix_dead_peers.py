"""Stack fix: Hypercorn sends WebSocket pings but never checks the answers.

The defect (Hypercorn 0.18): with ``websocket_ping_interval`` set, Hypercorn
pings every connection, but it ignores pongs, so a peer that vanished without
closing (a laptop lid shut, a NAT mapping dropped, a crashed process whose
host stays up) is never noticed: its connection, tasks and subscription stay
until TCP gives up, which takes many minutes.

The fix notes the time of any data received from the peer (a pong is data),
and after each ping waits ``FELIX_PING_TIMEOUT`` seconds: if nothing at all
came back, the connection is dropped and the app gets its disconnect. A peer
that dies is therefore dropped within ``FELIX_PING_INTERVAL +
FELIX_PING_TIMEOUT`` seconds.

Installed by :func:`felix.web.hypercorn_patches.install`;
``tests/web/test_stack_fixes.py`` shows a silent peer kept forever without it.
"""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.protocol.events import Body, Data, Event, StreamClosed
from hypercorn.protocol.ws_stream import WSStream
from wsproto.events import Ping

__all__ = ["DeadPeerWSStream"]


class DeadPeerWSStream(WSStream):
    """Hypercorn's WebSocket stream, dropping peers that stop answering pings.

    Behaves exactly like Hypercorn's own unless its config carries
    ``felix_ping_timeout``.
    """

    _felix_heard: float = 0.0
    _felix_closed: trio.Event | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Made here, not on first sleep: a close that comes while the first
        # ping is being sent must still wake the ping task.
        self._felix_closed = trio.Event()

    async def handle(self, event: Event) -> None:
        if isinstance(event, Body | Data):
            self._felix_heard = self.context.time()
        await super().handle(event)
        if self.closed and self._felix_closed is not None:
            self._felix_closed.set()

    def _felix_open(self) -> bool:
        # A method, not the attribute: the stream closes while we sleep.
        return not self.closed

    async def _felix_sleep(self, seconds: float) -> None:
        # Hypercorn's ping task sleeps through the close, keeping the
        # connection's task group (and shutdown) waiting for up to a whole
        # interval; this sleep ends when the stream does.
        if self._felix_closed is None:
            self._felix_closed = trio.Event()
        with trio.move_on_after(seconds):
            await self._felix_closed.wait()

    async def _send_pings(self) -> None:
        timeout: float | None = getattr(self.config, "felix_ping_timeout", None)
        interval = self.config.websocket_ping_interval
        if timeout is None or interval is None:
            await super()._send_pings()
            return
        while self._felix_open():
            sent_at = self.context.time()
            await self._send_wsproto_event(Ping())
            await self._felix_sleep(timeout)
            if not self._felix_open():
                return
            if self._felix_heard < sent_at:
                await self.config.log.info("dropping a WebSocket peer that stopped answering pings")
                await self.send(StreamClosed(stream_id=self.stream_id))
                return
            await self._felix_sleep(max(0.0, interval - timeout))
