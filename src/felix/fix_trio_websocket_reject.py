"""Stack fix: trio-websocket leaks the client socket when a handshake is refused.

The defect (trio-websocket 0.12.2): when the server answers the opening
handshake with an HTTP status instead of 101, the client's reader task raises
``ConnectionRejected`` without closing its TCP stream, and the socket is only
reclaimed by the garbage collector with a ``ResourceWarning``. A client that
retries refused handshakes (a bad key, a workflow not created yet) leaks one
file descriptor per attempt until then.

:func:`install` wraps the two handlers that raise ``ConnectionRejected`` so the
stream is closed first. It is idempotent and changes nothing else. Felix's own
clients and its test suite call it; ``tests/web/test_stack_fixes.py`` shows the
warning without it. Drop the module when that test passes without it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from trio_websocket import ConnectionRejected, WebSocketConnection

__all__ = ["install", "installed"]

_MARK = "_felix_closes_on_reject"
_HANDLERS = ("_handle_reject_connection_event", "_handle_reject_data_event")


def _closing(handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(handler)
    async def wrapper(self: WebSocketConnection, event: Any) -> None:
        try:
            await handler(self, event)
        except ConnectionRejected:
            await self._close_stream()
            raise

    setattr(wrapper, _MARK, True)
    return wrapper


def installed() -> bool:
    """Whether :func:`install` has patched trio-websocket in this process."""
    return all(getattr(getattr(WebSocketConnection, name), _MARK, False) for name in _HANDLERS)


def install() -> None:
    """Make refused client handshakes close their socket. Idempotent."""
    for name in _HANDLERS:
        handler = getattr(WebSocketConnection, name)
        if not getattr(handler, _MARK, False):
            setattr(WebSocketConnection, name, _closing(handler))
