"""Everything Felix changes in ``hypercorn.trio.tcp_server.TCPServer``.

Written against Hypercorn 0.18.0 and trio 0.35. :class:`FelixTCPServer` is
built only for a :class:`~felix.web.hypercorn.FelixConfig` (``install()``
rebinds ``hypercorn.trio.run.TCPServer`` to a factory that builds Hypercorn's
own class for any other config). Upstream's main branch (commit 0e2311f, the
0.18.0 release, checked December 2026) fixes none of the defects below.

1. **Writes without a deadline** (defect). ``protocol_send`` writes with
   ``send_all`` inside a *shielded* scope with no deadline: a client that
   stops reading pins its connection task forever, and shutdown waits for it.
   Here every write has ``felix_send_timeout``; past it the connection is
   reset and Hypercorn told it closed. :func:`abort_stalled_writes` pulls
   every deadline in at shutdown. Delete when
   ``test_stalled_reader_pins_its_connection_without_the_fix`` fails (the
   direct writer then needs another way to find its connection).
2. **A lock, a scope and a checkpoint per write** (cost). Nearly every write
   fits in the socket's buffer at once; ``protocol_send`` tries one
   non-blocking ``send`` first (``felix_lean_http``), and takes the path of
   (1) only for what the socket did not take. Not a defect.
3. **A cancel scope and four coroutine layers per read** (cost). Without a
   ``read_timeout``, ``_read_data`` reads the plain socket itself
   (``recv``, then ``wait_readable`` only when there is nothing), a
   checkpoint after each read. TLS and a ``read_timeout`` keep Hypercorn's
   loop. Not a defect.
4. **The keep-alive timer's lock and round trip** (cost). ``TrioSingleTask``
   takes a lock and ``nursery.start`` per request; :class:`QuickIdleTimer`
   does the same with ``start_soon`` and a cancel scope made in advance, and
   under the lean read loop starts its task only when the connection waits
   for bytes: a connection whose first request is already in (a WebSocket
   handshake, usually) never starts one only to cancel it.
5. **A refusal the client never reads** (defect, with h11_protocol). When the
   app answers before the request body has arrived (413, 401, 404) and
   Hypercorn closes the socket with the body unread, the kernel answers the
   rest with a reset, and most clients lose the response. On
   :class:`Linger` from the protocol, the connection is half-closed (the
   client sees the end of the response) and kept reading, bounded by
   ``felix_linger_seconds`` here and ``felix_linger_bytes`` in the protocol,
   like nginx's lingering close. Delete when ``tests/web/test_body_refusals.py``
   passes against Hypercorn's own classes.
7. **A request body that never ends** (defect). Hypercorn stops the
   keep-alive timer when a request head arrives and has no bound on its body
   (``read_timeout`` would also cut idle WebSockets), so a client that sends a
   head and then part of a body holds its connection forever. On
   :class:`BodyStarted` the same timer runs for ``felix_body_timeout``; the
   protocol stops it when the body is complete, or answers 408 and closes.
   Delete when ``tests/web/test_time_bounds.py::test_a_body_that_never_finishes``
   passes against Hypercorn's own classes.
8. **Inline requests and the keep-alive timer** (cost, with h11_protocol 7).
   A request served in the connection's task announces itself with
   :class:`Inline` instead of ``Updated``: its start marks the connection busy
   and its end stamps the time, and the keep-alive timer, rather than being
   stopped and restarted per request, counts from that stamp when it wakes
   (``_idle_timeout``). Delete with h11_protocol's section 7.
6. **The connection, reachable** (not a defect). The handler serving a task
   is in :data:`CURRENT_SERVER`, inherited by the app's task, which is how
   :mod:`felix.web.hypercorn.connection` finds it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import trio
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.typing import TaskGroup

from felix.web.hypercorn.config import FelixConfig

__all__ = [
    "CURRENT_SERVER",
    "BodyStarted",
    "BodyTimedOut",
    "FelixTCPServer",
    "Inline",
    "Linger",
    "QuickIdleTimer",
    "abort_stalled_writes",
]

#: The upstream methods this module overrides (the guard test checks them).
OVERRIDES = ("__init__", "protocol_send", "_read_data", "_close", "_idle_timeout")

#: The connection handler serving the current task. Hypercorn starts the ASGI
#: app's task from the handler's own task, so the app inherits it.
CURRENT_SERVER: ContextVar[FelixTCPServer | None] = ContextVar("felix_current_server", default=None)


class Linger(Event):
    """From the protocol: the response is out, the request body still coming (5)."""


class Inline(Event):
    """From the protocol: an inline request starts (``busy``) or has been answered (8)."""

    def __init__(self, busy: bool) -> None:
        self.busy = busy


class BodyStarted(Event):
    """From the protocol: a request head is in and its body is coming (7)."""


class BodyTimedOut(Event):
    """To the protocol: the body did not arrive within ``felix_body_timeout`` (7)."""


class FelixTCPServer(TCPServer):
    """Hypercorn's TCP connection handler with Felix's deadlines, quick I/O and linger."""

    config: FelixConfig  # built only for one (see install())

    _felix_send_scope: trio.CancelScope | None = None
    #: Bounds the read loop; its deadline is set when the connection lingers (5).
    _felix_read_scope: trio.CancelScope | None = None
    #: The server's nursery of connection handlers (this task's parent), where
    #: server-wide helpers such as the WebSocket pinger run.
    felix_handler_nursery: trio.Nursery | None = None
    #: Set by the direct writer: takes the unwritten rest of a direct write,
    #: which must reach the wire before any other byte of this connection.
    felix_take_leftover: Callable[[], bytes] | None = None
    #: When the connection last became idle: the keep-alive timer counts from it (8).
    _felix_idle_since: float = 0.0
    #: Whether an inline request is being served (the timer must not close) (8).
    _felix_inline_busy: bool = False
    #: Whether the lean read loop waits for bytes (a timer restarted now starts now) (4).
    _felix_parked: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Hypercorn makes the handler in the connection's task, just before
        # awaiting its run(): what is set here holds for that task (6).
        super().__init__(*args, **kwargs)
        self.config.felix_servers.add(self)
        CURRENT_SERVER.set(self)
        self.felix_handler_nursery = trio.lowlevel.current_task().parent_nursery
        if self.config.felix_lean_http:
            # Deferred where the lean read loop arms it before each wait (3, 4).
            deferred = self.config.read_timeout is None and self._felix_sock() is not None
            self.idle_task = QuickIdleTimer(deferred=deferred)  # type: ignore[assignment]

    async def _close(self) -> None:
        # run() ends in _close() on every path, so the connection leaves the
        # registry here.
        try:
            await super()._close()
        finally:
            self.config.felix_servers.discard(self)

    # --- writes (1, 2) ------------------------------------------------------------

    def _felix_sock(self) -> Any:
        """The plain socket, or None under TLS (bytes must go through the SSL object)."""
        return getattr(getattr(self.stream, "socket", None), "_sock", None)

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Inline):
            self._felix_inline_busy = event.busy
            if not event.busy:
                self._felix_idle_since = trio.current_time()
            return
        if isinstance(event, Linger):
            await self._felix_linger()
            return
        if isinstance(event, BodyStarted):
            await self.idle_task.restart(self._task_group, self._felix_body_timeout)
            return
        if not isinstance(event, RawData):
            await super().protocol_send(event)
            if self._felix_parked and isinstance(event, Updated) and event.idle:
                # Answered by the app's task while the read loop already waits:
                # that wait will not arm the timer, so it starts here (4).
                arm = getattr(self.idle_task, "arm", None)
                if arm is not None:
                    arm()
            return
        sock = self._felix_sock()
        if sock is None or not self.config.felix_lean_http or self.send_lock.locked():
            await self._felix_send_all(event.data)
            return
        data = self._felix_with_leftover(event.data)
        try:
            sent: int = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            # Reset or closed: the slow path meets the same error and handles it.
            await self._felix_send_all(data)
            return
        if sent == len(data):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        # Part of the bytes may be on the wire: the rest must follow, whatever
        # happens to the task that asked for the write.
        with trio.CancelScope(shield=True):
            await self._felix_send_all(data[sent:])

    def _felix_with_leftover(self, data: bytes) -> bytes:
        # Hypercorn's own frames (a pong, a ping, a close) must not land inside
        # a frame that a direct write left half written.
        take_leftover = self.felix_take_leftover
        if take_leftover is not None and (leftover := take_leftover()):
            return leftover + data
        return data

    async def _felix_send_all(self, data: bytes) -> None:
        """Hypercorn's write, with the deadline of (1)."""
        timeout: float | None = self.config.felix_send_timeout
        if timeout is None and self.felix_take_leftover is None:
            await super().protocol_send(RawData(data=data))
            return
        async with self.send_lock:
            data = self._felix_with_leftover(data)
            # Shielded like Hypercorn's own write, so a cancelled app task
            # never leaves half a frame on the wire, but no longer unbounded.
            with trio.CancelScope(shield=True) as scope:
                cap: float = self.config.felix_send_deadline_cap
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

    async def felix_abort(self) -> None:
        """Reset the connection at once (a peer that is not reading); idempotent."""
        await self._felix_abort()

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

    # --- lingering close (5) ----------------------------------------------------------

    async def _felix_linger(self) -> None:
        """Half-close, and let the read loop discard for ``felix_linger_seconds``."""
        try:
            async with self.send_lock:
                await self.stream.send_eof()
        except (AttributeError, trio.BrokenResourceError, trio.ClosedResourceError):
            # TLS (no half-close) or already gone: close as Hypercorn would.
            await super().protocol_send(Closed())
            return
        if self._felix_read_scope is not None:
            deadline = trio.current_time() + self.config.felix_linger_seconds
            self._felix_read_scope.deadline = min(self._felix_read_scope.deadline, deadline)

    async def _felix_body_timeout(self) -> None:
        await trio.sleep(self.config.felix_body_timeout)
        with trio.CancelScope(shield=True):
            await self.protocol.handle(BodyTimedOut())

    # --- the keep-alive timer (8) ---------------------------------------------------

    async def _idle_timeout(self) -> None:
        # Hypercorn's: close once idle for keep_alive_timeout, or at shutdown;
        # but an inline request in between moves the deadline instead.
        timeout = self.config.keep_alive_timeout
        self._felix_idle_since = trio.current_time()
        while True:
            with trio.move_on_at(self._felix_idle_since + timeout):
                await self.context.terminated.wait()
            if self._felix_inline_busy:
                if self.context.terminated.is_set():
                    return  # the inline request sees it, and closes after its answer
                self._felix_idle_since = trio.current_time()
                continue
            if (
                self.context.terminated.is_set()
                or trio.current_time() >= self._felix_idle_since + timeout
            ):
                break
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()

    # --- reads (3, 5) -------------------------------------------------------------------

    async def _read_data(self) -> None:
        with trio.CancelScope() as self._felix_read_scope:
            if self.config.read_timeout is not None or self._felix_sock() is None:
                await super()._read_data()
                return
            await self._felix_read_loop()
            return
        # Only the linger deadline ends the loop this way.
        await self.protocol.handle(Closed())

    async def _felix_read_loop(self) -> None:
        trio_sock: Any = self.stream.socket
        sock = self._felix_sock()
        # The keep-alive timer starts when the connection first waits (4).
        arm_timer = getattr(self.idle_task, "arm", None)
        while True:
            try:
                data: bytes | None = sock.recv(MAX_RECV)
            except BlockingIOError:
                data = None
            except OSError:
                break  # reset by the peer, or closed under us: as Hypercorn's loop
            if data is None:
                if arm_timer is not None:
                    arm_timer()
                # Waited for outside the except clause: inside it, the
                # exception and its traceback would stay alive all the while.
                self._felix_parked = True
                try:
                    await trio.lowlevel.wait_readable(trio_sock)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                finally:
                    self._felix_parked = False
                continue
            await self.protocol.handle(RawData(data))
            if not data:
                break
            await trio.lowlevel.checkpoint()
        await self.protocol.handle(Closed())


async def _run_in(scope: trio.CancelScope, action: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await action()


class QuickIdleTimer:
    """``TrioSingleTask`` for the keep-alive timeout, without a lock or a round trip (4).

    With ``deferred``, :meth:`restart` only notes the action, and :meth:`arm`
    starts it when the connection is about to wait for bytes: most requests
    (a WebSocket handshake above all) arrive with or right after the
    connection, and then the timer's task is never started only to be
    cancelled at once.
    """

    def __init__(self, *, deferred: bool = False) -> None:
        self._scope: trio.CancelScope | None = None
        self._deferred = deferred
        self._pending: tuple[TaskGroup, Callable[[], Awaitable[None]]] | None = None

    async def restart(self, task_group: TaskGroup, action: Callable[[], Awaitable[None]]) -> None:
        """Start ``action`` in its own cancel scope, stopping the one running before."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
        self._pending = (task_group, action)
        if not self._deferred:
            self.arm()

    def arm(self) -> None:
        """Start the action :meth:`restart` noted, if it has not started yet."""
        if self._pending is None:
            return
        task_group, action = self._pending
        self._pending = None
        self._scope = scope = trio.CancelScope()
        nursery: trio.Nursery = task_group._nursery  # type: ignore[attr-defined]
        nursery.start_soon(_run_in, scope, action)

    async def stop(self) -> None:
        """Stop the running ``action``, if any (also before its task has started)."""
        self._pending = None
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None


def abort_stalled_writes(config: Any, within: float) -> None:
    """Give every write on ``config``'s connections at most ``within`` more seconds.

    Writes already waiting are aborted at once; later ones get the short
    deadline. Called when the shutdown grace period is over.
    """
    config.felix_send_deadline_cap = trio.current_time() + within
    for server in list(getattr(config, "felix_servers", ())):
        server.felix_abort_now()
