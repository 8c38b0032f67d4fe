"""Stack fix: a message after an oversized one crashes Hypercorn's whole server.

The defect (Hypercorn 0.18): when a client's message passes
``websocket_max_message_size``, Hypercorn sends close 1009 but leaves the
partial message in its buffer. If the client then sends a message of the other
kind (text after binary, or binary after text) in a later read, the buffer
raises ``TypeError``; it escapes the connection task, and trio's
``serve_listeners`` lets it end ``hypercorn.trio.serve`` — one client stops
the server for everyone.

The fix clears the buffer when a message is too large and discards every
later message of that connection, which is closing with 1009 anyway; pings
and the closing handshake are still handled. Found by ``tests/test_fuzz.py``;
``tests/test_fuzz.py::test_a_message_after_one_too_big_does_not_crash_the_server``
shows it. Installed with the other Hypercorn fixes by
:func:`felix.web.hypercorn.install`.
"""

from __future__ import annotations

from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.ws_stream import FrameTooLargeError, WSStream
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.frame_protocol import CloseReason

__all__ = ["OversizeSafeWSStream"]


class OversizeSafeWSStream(WSStream):
    """Hypercorn's WebSocket stream, closing cleanly after an oversized message."""

    _felix_discarding: bool = False

    async def _handle_events(self) -> None:
        # Hypercorn's own loop, but a too-large message clears the buffer and
        # turns further messages away instead of breaking out with it full.
        for event in self.connection.events():
            if isinstance(event, Message):
                if self._felix_discarding:
                    continue
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    self.buffer.clear()
                    self._felix_discarding = True
                    await self._send_wsproto_event(
                        CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)
                    )
                    continue
                if event.message_finished and self.app_put is not None:
                    await self.app_put(self.buffer.to_message())
                    self.buffer.clear()
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                if self.connection.state == ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                await self.send(StreamClosed(stream_id=self.stream_id))
