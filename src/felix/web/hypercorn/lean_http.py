"""Cheaper HTTP/1.1 requests and handshakes: what Hypercorn does per request and need not.

A py-spy profile of the fan-out bench put half of the server's time in the
publish requests, not in the fan-out, and a profile of the connect storm put
a fifth of each handshake in Hypercorn's writes. Three things, each done per
request or per handshake, cost more than they give:

Writes. Every write goes through ``TCPServer.protocol_send``: a ``trio.Lock``,
a shielded cancel scope, and ``SocketStream.send_all`` with its conflict
detector and a checkpoint per ``send``. Nearly every write Hypercorn makes
(a response, a ``101``, a close frame) fits in the socket's buffer at once.
:class:`QuickWriteTCPServer` tries one non-blocking ``send`` first, when no
other write is under way, and takes Hypercorn's path (with Felix's deadline,
see :mod:`felix.web.hypercorn.fix_send_deadline`) only for what the socket did not
take. One checkpoint follows, as before, so a task writing in a loop still
lets the others run.

Responses. ``H11Protocol`` writes a response in three: the head, the body,
and the end of the message, which for a response with a ``Content-Length`` is
zero bytes (still a lock, a scope and a checkpoint). :class:`OneWriteH11Protocol`
holds the head until the body, which Hypercorn sends right after it, and skips
empty writes: one write per response.

The keep-alive timer. ``TCPServer`` keeps an idle-timeout task per connection,
stopped when a request starts and started again when it ends, through
``TrioSingleTask``: a ``trio.Lock`` and ``nursery.start``, which waits a full
scheduling round for the new task. Every request and every WebSocket handshake
paid for it. :class:`QuickIdleTimer` does the same with ``start_soon`` and a
cancel scope made in advance, so stopping a timer whose task has not run yet
still stops it.

Each class behaves exactly like Hypercorn's own unless the config sets
``felix_lean_http`` (:class:`felix.web.hypercorn.FelixConfig` does).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import h11
import trio
from hypercorn.events import Event, RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.typing import H11SendableEvent, TaskGroup

__all__ = ["OneWriteH11Protocol", "QuickIdleTimer", "QuickWriteTCPServer"]


def _enabled(config: Any) -> bool:
    return bool(getattr(config, "felix_lean_http", False))


class QuickWriteTCPServer(TCPServer):
    """Hypercorn's TCP connection handler, writing at once when the socket has room."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if _enabled(self.config):
            self.idle_task = QuickIdleTimer()  # type: ignore[assignment]

    async def protocol_send(self, event: Event) -> None:
        sock: Any = getattr(getattr(self.stream, "socket", None), "_sock", None)
        if (
            not isinstance(event, RawData)
            or sock is None  # TLS: the bytes go through the SSL object
            or not _enabled(self.config)
            or self.send_lock.locked()
        ):
            await super().protocol_send(event)
            return
        data = event.data
        take_leftover: Callable[[], bytes] | None = getattr(self, "felix_take_leftover", None)
        if take_leftover is not None and (leftover := take_leftover()):
            # A direct write's unwritten rest goes first (see fix_send_deadline).
            data = leftover + data
        try:
            sent: int = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            # Reset or closed: Hypercorn's path meets the same error and handles it.
            await super().protocol_send(RawData(data=data))
            return
        if sent == len(data):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        # Part of the bytes may be on the wire: the rest must follow, whatever
        # happens to the task that asked for the write.
        with trio.CancelScope(shield=True):
            await super().protocol_send(RawData(data=data[sent:]))


class OneWriteH11Protocol(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol, writing each response's head with its body."""

    _felix_held: bytes = b""

    async def _send_h11_event(self, event: H11SendableEvent) -> None:
        if not _enabled(self.config):
            await super()._send_h11_event(event)
            return
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if isinstance(event, h11.Response):
            # Hypercorn sends the body (or the end of an empty one) right
            # after the head, from the same task: it goes out with that.
            self._felix_held += data or b""
            return
        if self._felix_held:
            data, self._felix_held = self._felix_held + (data or b""), b""
        if data:
            await self.send(RawData(data=data))


async def _run_in(scope: trio.CancelScope, action: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await action()


class QuickIdleTimer:
    """``TrioSingleTask`` for the keep-alive timeout, without a lock or a round trip."""

    def __init__(self) -> None:
        self._scope: trio.CancelScope | None = None

    async def restart(self, task_group: TaskGroup, action: Callable[[], Awaitable[None]]) -> None:
        """Start ``action`` in its own cancel scope, stopping the one running before."""
        if self._scope is not None:
            self._scope.cancel()
        self._scope = scope = trio.CancelScope()
        nursery: trio.Nursery = task_group._nursery  # type: ignore[attr-defined]
        nursery.start_soon(_run_in, scope, action)

    async def stop(self) -> None:
        """Stop the running ``action``, if any (also before its task has started)."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
