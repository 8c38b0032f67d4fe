"""The other half of the hot path: client messages handed over without a reader task.

Through the ASGI interface, a WebSocket app learns of client messages and of
the disconnect only by awaiting ``receive()``, so an app that also writes
needs a second task per connection that does nothing but wait there. For
Felix that reader was a quarter of what an idle WebSocket cost (a task, its
nursery and cancel state, a suspended call stack), and each message it got
cost a trip through a memory channel and a task switch.

A :class:`DirectReadWSStream` lets the app install a *sink*: a plain function
that Hypercorn's connection task calls with each message (``websocket.receive``
and ``websocket.disconnect``) instead of putting it in the app's channel. The
sink runs in the connection's own task, so it must not block and must not
raise; the app's one task is then free to be the writer alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.protocol.events import Event, Request
from hypercorn.protocol.ws_stream import WSStream

from felix.web.hypercorn.fix_send_deadline import CURRENT_SERVER

__all__ = ["DirectReadWSStream", "MessageSink", "listen"]

#: Called with each ASGI message from the client, in the connection's task.
MessageSink = Callable[[dict[str, Any]], None]


class DirectReadWSStream(WSStream):
    """Hypercorn's WebSocket stream, handing messages to a sink once the app sets one."""

    _felix_sink: MessageSink | None = None
    _felix_app_put: Callable[[dict[str, Any]], Awaitable[None]] | None = None

    async def handle(self, event: Event) -> None:
        await super().handle(event)
        if isinstance(event, Request) and self.app_put is not None and self._felix_app_put is None:
            # Every message for the app passes through app_put, which
            # Hypercorn sets when it starts the app.
            self._felix_app_put = self.app_put
            self.app_put = self._felix_put

    async def _felix_put(self, message: dict[str, Any]) -> None:
        sink = self._felix_sink
        if sink is not None:
            sink(message)
        elif self._felix_app_put is not None:
            await self._felix_app_put(message)

    def felix_listen(self, sink: MessageSink) -> bool:
        """Send every later message to ``sink``; False if the stream has already closed."""
        if self.closed:
            return False
        self._felix_sink = sink
        return True


def listen(sink: MessageSink) -> bool | None:
    """Hand the current WebSocket connection's messages to ``sink``.

    Returns None when the connection is not served by a
    :class:`DirectReadWSStream` (the app must then ``receive()`` as usual),
    False when the stream is already closed (the app has missed nothing but
    the disconnect), True once the sink is installed. Call it before the
    accept, so that no message can reach the app's channel first.
    """
    server = CURRENT_SERVER.get()
    if server is None:
        return None
    stream = getattr(getattr(server.protocol, "protocol", None), "stream", None)
    if not isinstance(stream, DirectReadWSStream):
        return None
    return stream.felix_listen(sink)
