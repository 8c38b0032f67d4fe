"""Everything Felix changes in ``hypercorn.trio.task_group.TaskGroup``.

Written against Hypercorn 0.18.0 and trio 0.35. ``install()`` rebinds
``hypercorn.trio.tcp_server.TaskGroup`` to :class:`LeanTaskGroup`
**process-wide**: Hypercorn makes the task group without a config, so the
class cannot be chosen per config. It differs from Hypercorn's own only in
:meth:`LeanTaskGroup.spawn_app`, and only for a
:class:`~felix.web.hypercorn.FelixConfig` with ``felix_lean_inbox``; for any
other config it calls Hypercorn's method (the guard test checks this with a
plain ``hypercorn.Config`` app in the same process).

1. **A memory channel per app** (cost). Hypercorn hands messages to each ASGI
   app through a trio memory channel: about 1.7 KB per connection (its state,
   a deque sized for 64 items, two ordered dicts of waiting tasks, two channel
   ends), kept for the whole life of a WebSocket although, with direct reads
   (:mod:`felix.web.hypercorn.ws_stream`), it carries one message
   (``websocket.connect``). :class:`AppInbox` is the same bounded queue with
   the same blocking and checkpoints, for one receiver, in a fraction of the
   memory. Not a defect: delete it if memory per connection stops mattering.
3. **A burst taken at once** (cost): :meth:`AppInbox.take_queued` hands a
   receiver every message already queued without a checkpoint each, so a
   producer's frames that arrived in one read are handled in one turn of the
   app's task (and their publishes coalesce on the workflow's actor).
   Reached through :meth:`felix.web.hypercorn.connection.Connection.take_queued`.
2. **A hook for ``100 Continue``** (with :mod:`felix.web.hypercorn.h11_protocol`):
   the inbox calls ``on_first_receive`` the first time the app asks for the
   request body, which is when the ``100`` may go out. Deleted with the fix
   in ``h11_protocol``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio.task_group import TaskGroup, _handle
from hypercorn.typing import AppWrapper, ASGIReceiveEvent, ASGISendEvent, Scope

from felix.web.hypercorn.config import is_felix

__all__ = ["AppInbox", "LeanTaskGroup"]

#: The upstream methods this module overrides (the guard test checks them).
OVERRIDES = ("spawn_app",)


class AppInbox:
    """A bounded queue of ASGI messages from Hypercorn to one app task.

    :meth:`put` waits while ``capacity`` messages are waiting, as a memory
    channel's ``send`` does; both ends are checkpoints, as a channel's are.
    Only one task may wait in :meth:`receive` at a time (the app's).
    """

    __slots__ = ("_capacity", "_items", "_putters", "_receiver", "on_first_receive")

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        #: Awaited by the first :meth:`receive` (then forgotten): the 100 Continue.
        self.on_first_receive: Callable[[], Awaitable[None]] | None = None
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
        if self.on_first_receive is not None:
            first, self.on_first_receive = self.on_first_receive, None
            await first()
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

    def take_queued(self) -> list[ASGIReceiveEvent]:
        """Take every message already waiting, in order, without waiting or a checkpoint.

        For a receiver that has just had its checkpoint in :meth:`receive`
        and can handle a burst at once (3): the putters waiting for room get
        their turn as they would from :meth:`receive`.
        """
        taken: list[ASGIReceiveEvent] = []
        while self._items:
            taken.append(self._take())
        return taken

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
        if not (is_felix(config) and getattr(config, "felix_lean_inbox", False)):
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
