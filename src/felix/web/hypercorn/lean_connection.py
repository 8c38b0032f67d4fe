"""Cheaper idle connections: what Hypercorn keeps per connection and need not.

Reads. Hypercorn's ``TCPServer._read_data`` wraps every read in
``trio.fail_after(read_timeout or inf)`` and reads through trio's
``SocketStream.receive_some``. Without a read timeout (Felix sets none) the
cancel scope never fires, yet it is made and kept for every read; and the
stream's read goes through four layers of coroutines (conflict detector,
socket method wrapper, non-blocking helper, wait) that stay suspended for as
long as the connection is idle. Together that was about 4.5 KB of each idle
WebSocket's 26 KB (tracemalloc), more than any other single part of it.

:class:`LeanReadTCPServer` reads the plain TCP socket itself when there is no
read timeout: it tries ``recv`` first and waits with
``trio.lowlevel.wait_readable`` only when there is nothing to read, which is
what trio's own socket does, minus the layers. Each successful read is still
followed by a checkpoint, so a client that floods the server cannot starve the
other tasks. TLS connections and a configured ``read_timeout`` keep
Hypercorn's own loop.

The app's inbox. Hypercorn hands messages to each ASGI app through a trio
memory channel: about 1.7 KB per connection (its state, a deque sized for 64
items, two ordered dicts of waiting tasks, two channel ends), kept for the
whole life of a WebSocket although, with :mod:`felix.web.hypercorn.direct_read`, it
carries one message (``websocket.connect``). :class:`LeanTaskGroup` gives the
app an :class:`AppInbox` instead: the same bounded queue with the same
blocking and checkpoints, for one receiver, in a fraction of the memory.

The HTTP/1.1 parser. After a WebSocket handshake Hypercorn keeps the h11
connection that parsed the request (its state machine, buffers and request
line), although only the ``101`` response is ever sent through it: once the
stream is open, every frame is passed through as raw bytes. It also keeps the
parsed handshake headers, of which only "accepted" is read again.
:class:`LeanWSStream` lets go of both once the ``101`` has been sent.

Both behave exactly like Hypercorn's own classes apart from what they keep.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.protocol.h11 import H11WSConnection
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.trio.task_group import TaskGroup, _handle
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.typing import (
    AppWrapper,
    ASGIReceiveEvent,
    ASGISendEvent,
    Scope,
    WebsocketAcceptEvent,
)

__all__ = ["AppInbox", "LeanReadTCPServer", "LeanTaskGroup", "LeanWSStream"]


class LeanReadTCPServer(TCPServer):
    """Hypercorn's TCP connection handler, reading without a cancel scope per read."""

    async def _read_data(self) -> None:
        trio_sock: Any = getattr(self.stream, "socket", None)
        sock: Any = getattr(trio_sock, "_sock", None)
        if self.config.read_timeout is not None or sock is None:
            await super()._read_data()
            return
        while True:
            try:
                data: bytes | None = sock.recv(MAX_RECV)
            except BlockingIOError:
                data = None
            except OSError:
                break  # reset by the peer, or closed under us: as Hypercorn's loop
            if data is None:
                # Waited for outside the except clause: inside it, the
                # exception and its traceback would stay alive all the while.
                try:
                    await trio.lowlevel.wait_readable(trio_sock)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                continue
            await self.protocol.handle(RawData(data))
            if not data:
                break
            await trio.lowlevel.checkpoint()
        await self.protocol.handle(Closed())


class _Sent101:
    """Stands in for the h11 connection once the handshake is over.

    Hypercorn sends nothing through it after the ``101``; if a later version
    did, this says so instead of failing obscurely.
    """

    def send(self, event: object) -> bytes:
        raise RuntimeError(f"HTTP/1.1 event {event!r} after the WebSocket handshake")


_SENT_101 = _Sent101()


class _Accepted:
    """Stands in for Hypercorn's ``Handshake`` once the WebSocket is open."""

    accepted = True


_ACCEPTED = _Accepted()


class LeanWSStream(WSStream):
    """Hypercorn's WebSocket stream, dropping the HTTP/1.1 parser after the handshake."""

    async def _accept(self, message: WebsocketAcceptEvent) -> None:
        await super()._accept(message)
        if self.state is ASGIWebsocketState.CONNECTED:
            # self.send is the HTTP/1.1 protocol's stream_send (HTTP/2 has no
            # per-stream parser to drop).
            connection = getattr(getattr(self.send, "__self__", None), "connection", None)
            if isinstance(connection, H11WSConnection):
                connection.h11_connection = _SENT_101  # type: ignore[assignment]
            # The parsed handshake headers are not read again; only whether
            # the handshake was accepted is.
            self.handshake = _ACCEPTED  # type: ignore[assignment]


class AppInbox:
    """A bounded queue of ASGI messages from Hypercorn to one app task.

    :meth:`put` waits while ``capacity`` messages are waiting, as a memory
    channel's ``send`` does; both ends are checkpoints, as a channel's are.
    Only one task may wait in :meth:`receive` at a time (the app's).
    """

    __slots__ = ("_capacity", "_items", "_putters", "_receiver")

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self._items: deque[ASGIReceiveEvent] | None = None
        self._receiver: trio.lowlevel.Task | None = None
        self._putters: deque[trio.lowlevel.Task] | None = None

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else 0

    async def put(self, message: ASGIReceiveEvent) -> None:
        """Queue ``message``, waiting while the inbox is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if len(self) >= self._capacity or self._putters:
            task = trio.lowlevel.current_task()
            if self._putters is None:
                self._putters = deque()
            self._putters.append(task)

            def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
                assert self._putters is not None
                self._putters.remove(task)
                return trio.lowlevel.Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
            self._append(message)  # the receiver made room and handed over its turn
            return
        self._append(message)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _append(self, message: ASGIReceiveEvent) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(message)
        receiver = self._receiver
        if receiver is not None:
            self._receiver = None
            trio.lowlevel.reschedule(receiver)

    async def receive(self) -> ASGIReceiveEvent:
        """Take the oldest message, waiting for one if there is none."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._items:
            if self._receiver is not None:
                raise trio.BusyResourceError("another task is already receiving")
            self._receiver = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_receive)
            return self._take()
        message = self._take()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    def _abort_receive(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self._receiver = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _take(self) -> ASGIReceiveEvent:
        assert self._items
        message = self._items.popleft()
        if not self._items:
            self._items = None  # an empty deque still holds room for 64 items
        if self._putters:
            # The putter appends its message itself when it runs, in order.
            trio.lowlevel.reschedule(self._putters.popleft())
        return message


class LeanTaskGroup(TaskGroup):
    """Hypercorn's per-connection task group, giving apps an :class:`AppInbox`."""

    async def spawn_app(
        self,
        app: AppWrapper,
        config: Config,
        scope: Scope,
        send: Callable[[ASGISendEvent | None], Awaitable[None]],
    ) -> Callable[[ASGIReceiveEvent], Awaitable[None]]:
        if not getattr(config, "felix_lean_inbox", False):
            return await super().spawn_app(app, config, scope, send)
        inbox = AppInbox(config.max_app_queue_size)
        assert self._nursery is not None
        self._nursery.start_soon(
            _handle,
            app,
            config,
            scope,
            inbox.receive,
            send,
            trio.to_thread.run_sync,
            trio.from_thread.run,
        )
        return inbox.put
