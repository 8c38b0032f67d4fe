"""Stack fix: Hypercorn's socket writes have no deadline.

The defect (Hypercorn 0.18, trio worker): ``TCPServer.protocol_send`` writes
with ``send_all`` inside a *shielded* cancel scope and no deadline. A client
that stops reading but keeps its TCP connection open fills the kernel's
buffers, and the write then blocks forever: no cancel scope reaches it, the
connection task is pinned, the WebSocket app above it cannot even send its
close frame, and graceful shutdown waits for it (a 2 s graceful timeout was
seen to take 24 s).

The fix gives every write a deadline (``FELIX_SEND_TIMEOUT``): when it passes,
the TCP connection is aborted (reset, not closed politely, since the peer is
not reading) and Hypercorn is told the connection closed, so the app gets its
disconnect and every task of the connection ends. At shutdown,
:func:`abort_stalled_writes` pulls every deadline in, so stalled clients
cannot hold the process past its grace period.

Installed by :func:`felix.web.hypercorn.install`;
``tests/web/test_stack_fixes.py`` shows the pinned task without it.
"""

from __future__ import annotations

import contextlib
import math
import socket
import struct
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import trio
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio.tcp_server import TCPServer

__all__ = ["CURRENT_SERVER", "DeadlineTCPServer", "abort_stalled_writes"]

#: The connection handler serving the current task. Hypercorn starts the ASGI
#: app's task from the handler's own task, so the app inherits it; the web
#: layer uses it to write pre-built frames (see felix.web.hypercorn.direct_write).
CURRENT_SERVER: ContextVar[DeadlineTCPServer | None] = ContextVar(
    "felix_current_server", default=None
)


class DeadlineTCPServer(TCPServer):
    """Hypercorn's TCP connection handler, with a deadline on every write.

    Behaves exactly like Hypercorn's own unless its config carries
    ``felix_send_timeout`` (see :class:`felix.web.hypercorn.FelixConfig`).
    """

    _felix_send_scope: trio.CancelScope | None = None
    #: The server's nursery of connection handlers (this task's parent), where
    #: server-wide helpers such as the WebSocket pinger run.
    felix_handler_nursery: trio.Nursery | None = None
    #: Set by the direct writer: takes the unwritten rest of a direct write,
    #: which must reach the wire before any other byte of this connection.
    felix_take_leftover: Callable[[], bytes] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Hypercorn makes the handler in the connection's task, just before
        # awaiting its run(): what is set here holds for that task, without a
        # run() of our own held on every idle connection's stack.
        super().__init__(*args, **kwargs)
        registry: set[DeadlineTCPServer] | None = getattr(self.config, "felix_servers", None)
        if registry is not None:
            registry.add(self)
        CURRENT_SERVER.set(self)
        self.felix_handler_nursery = trio.lowlevel.current_task().parent_nursery

    async def _close(self) -> None:
        # run() ends in _close() on every path, so the connection leaves the
        # registry here.
        try:
            await super()._close()
        finally:
            registry: set[DeadlineTCPServer] | None = getattr(self.config, "felix_servers", None)
            if registry is not None:
                registry.discard(self)

    async def protocol_send(self, event: Event) -> None:
        timeout: float | None = getattr(self.config, "felix_send_timeout", None)
        if not isinstance(event, RawData) or (timeout is None and self.felix_take_leftover is None):
            await super().protocol_send(event)
            return
        async with self.send_lock:
            data = event.data
            take_leftover = self.felix_take_leftover
            if take_leftover is not None and (leftover := take_leftover()):
                # Hypercorn's own frames (a pong, a ping, a close) must not
                # land inside a frame that a direct write left half written.
                data = leftover + data
            # Shielded like Hypercorn's own write, so a cancelled app task
            # never leaves half a frame on the wire, but no longer unbounded.
            with trio.CancelScope(shield=True) as scope:
                cap: float = getattr(self.config, "felix_send_deadline_cap", math.inf)
                if timeout is not None:
                    cap = min(trio.current_time() + timeout, cap)
                scope.deadline = cap
                self._felix_send_scope = scope
                try:
                    await self.stream.send_all(data)
                except (
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                    # Hypercorn's _close() sends EOF without the send lock, so a
                    # write racing a close finds the stream busy: it is closing.
                    trio.BusyResourceError,
                ):
                    await self.protocol.handle(Closed())
                    return
                finally:
                    self._felix_send_scope = None
            if scope.cancelled_caught:
                await self._felix_abort()

    def felix_abort_now(self) -> None:
        """Make a write in progress give up at once (used at shutdown)."""
        if self._felix_send_scope is not None:
            self._felix_send_scope.cancel()

    async def _felix_abort(self) -> None:
        # A peer that does not read gets a reset: a polite close would queue
        # a FIN behind the data it is not reading.
        sock: Any = getattr(self.stream, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with trio.CancelScope(shield=True):
            await self.stream.aclose()
            await self.protocol.handle(Closed())


def abort_stalled_writes(config: Any, within: float) -> None:
    """Give every write on ``config``'s connections at most ``within`` more seconds.

    Writes already waiting are aborted at once; later ones get the short
    deadline. Called when the shutdown grace period is over.
    """
    config.felix_send_deadline_cap = trio.current_time() + within
    for server in list(getattr(config, "felix_servers", ())):
        server.felix_abort_now()
