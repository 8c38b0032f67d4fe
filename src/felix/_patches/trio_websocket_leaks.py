"""Client-side fix: two ways trio-websocket's client leaks its TCP socket.

Written against trio-websocket 0.12.2; its main branch (bec4232, 0.13.0-dev,
checked December 2026) has both defects. **Process-wide**: :func:`install`
patches ``WebSocketConnection`` for every user of trio-websocket in the
process, unless ``install(everywhere=False)``, which limits the fix to
connections opened inside :func:`felix._patches.felix_connections`.

The defects, both client side:

1. **Refused handshake.** When the server answers the opening handshake with
   an HTTP status instead of 101, the reader task raises
   ``ConnectionRejected`` without closing its stream.
2. **Server-initiated close.** When the server closes the WebSocket (a
   finished workflow's 1000, a 4008, a 1001 at shutdown), the connection
   records the close reason, and ``aclose()`` then returns at once because
   the connection "is already closed" — without closing the stream.

Either way the socket is only reclaimed by the garbage collector, with a
``ResourceWarning``; a client that reconnects after each close or refusal
leaks one file descriptor per attempt until then.

:func:`install` wraps the two reject handlers and ``aclose`` so the stream is
always closed. It is idempotent and changes nothing else. ``felix.client``,
the demo, the soak and the test suite call it; ``tests/web/test_stack_fixes.py``
shows both warnings without it. To delete: when
``test_trio_websocket_leaks_without_the_fix`` fails after an upgrade, remove
this module and its ``install()`` calls.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from trio_websocket import ConnectionRejected, WebSocketConnection

from felix._patches import in_felix_connection

__all__ = ["PATCHED", "install", "installed"]

_MARK = "_felix_closes_stream"
#: The methods :func:`install` wraps.
PATCHED = ("_handle_reject_connection_event", "_handle_reject_data_event", "aclose")

#: Whether the fix applies to every connection, or only to Felix's own.
_everywhere = False


def _applies() -> bool:
    return _everywhere or in_felix_connection()


def _closing_on_reject(handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(handler)
    async def wrapper(self: WebSocketConnection, event: Any) -> None:
        try:
            await handler(self, event)
        except ConnectionRejected:
            if _applies():
                await self._close_stream()
            raise

    return wrapper


def _closing_always(aclose: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(aclose)
    async def wrapper(self: WebSocketConnection, *args: Any, **kwargs: Any) -> None:
        try:
            await aclose(self, *args, **kwargs)
        finally:
            if _applies():
                # Idempotent in trio: closing a closed stream does nothing.
                await self._close_stream()

    return wrapper


def installed() -> bool:
    """Whether :func:`install` has patched trio-websocket in this process."""
    return all(getattr(getattr(WebSocketConnection, name), _MARK, False) for name in PATCHED)


def install(*, everywhere: bool = True) -> None:
    """Make trio-websocket clients always close their socket. Idempotent.

    ``everywhere=False`` limits it to connections opened inside
    :func:`felix._patches.felix_connections`; once any caller asked for
    everywhere, it stays so.
    """
    global _everywhere  # noqa: PLW0603 (one switch for the whole process, as the patch is)
    _everywhere = _everywhere or everywhere
    for name in PATCHED:
        method = getattr(WebSocketConnection, name)
        if getattr(method, _MARK, False):
            continue
        wrapped = _closing_always(method) if name == "aclose" else _closing_on_reject(method)
        setattr(wrapped, _MARK, True)
        setattr(WebSocketConnection, name, wrapped)
