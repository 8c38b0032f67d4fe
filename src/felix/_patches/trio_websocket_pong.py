"""Stack fix: trio-websocket's client crashes on a ping that arrives while it closes.

The defect (trio-websocket 0.12.2): once the client has sent its Close frame,
its connection is in wsproto's ``LOCAL_CLOSING`` state, where a Pong may no
longer be sent. If the server's periodic ping crosses the Close on the wire,
the reader task still answers it, wsproto raises ``LocalProtocolError``, and
the error leaves ``open_websocket_url`` as a ``trio.Cancelled`` that cancels
the *caller's* enclosing nursery — a client that simply leaves can take its
neighbours down with it.

:func:`install` makes the reader ignore pings once the connection is no longer
open (RFC 6455 sends nothing after a Close but the closing handshake).
Idempotent. Felix's clients, soak test and test suite call it;
``tests/web/test_stack_fixes.py`` reproduces the crash without it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from trio_websocket import WebSocketConnection
from wsproto.connection import ConnectionState

__all__ = ["install", "installed"]

_MARK = "_felix_ignores_late_pings"


def _only_when_open(handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(handler)
    async def wrapper(self: WebSocketConnection, event: Any) -> None:
        if self._wsproto.state is ConnectionState.OPEN:
            await handler(self, event)

    setattr(wrapper, _MARK, True)
    return wrapper


def installed() -> bool:
    """Whether :func:`install` has patched trio-websocket in this process."""
    return getattr(WebSocketConnection._handle_ping_event, _MARK, False)


def install() -> None:
    """Make trio-websocket clients ignore pings that arrive while closing."""
    if not installed():
        setattr(  # noqa: B010
            WebSocketConnection,
            "_handle_ping_event",
            _only_when_open(WebSocketConnection._handle_ping_event),
        )
