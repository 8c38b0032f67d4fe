"""Client-side fix: trio-websocket's client crashes on a ping that arrives while it closes.

Written against trio-websocket 0.12.2; its main branch (bec4232, 0.13.0-dev,
checked December 2026) still answers every ping. **Process-wide**:
:func:`install` patches ``WebSocketConnection`` for every user of
trio-websocket in the process, unless ``install(everywhere=False)``, which
limits the fix to connections opened inside
:func:`felix._patches.felix_connections`.

The defect: once the client has sent its Close frame,
its connection is in wsproto's ``LOCAL_CLOSING`` state, where a Pong may no
longer be sent. If the server's periodic ping crosses the Close on the wire,
the reader task still answers it, wsproto raises ``LocalProtocolError``, and
the error leaves ``open_websocket_url`` as a ``trio.Cancelled`` that cancels
the *caller's* enclosing nursery — a client that simply leaves can take its
neighbours down with it.

:func:`install` makes the reader ignore pings once the connection is no longer
open (RFC 6455 sends nothing after a Close but the closing handshake).
Idempotent. Felix's clients, soak test and test suite call it;
``tests/web/test_stack_fixes.py`` reproduces the crash without it. To delete:
when ``test_late_ping_cancels_the_callers_nursery_without_the_fix`` fails after
an upgrade, remove this module and its ``install()`` calls.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from trio_websocket import WebSocketConnection
from wsproto.connection import ConnectionState

from felix._patches import in_felix_connection

__all__ = ["install", "installed"]

_MARK = "_felix_ignores_late_pings"

#: Whether the fix applies to every connection, or only to Felix's own.
_everywhere = False


def _only_when_open(handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(handler)
    async def wrapper(self: WebSocketConnection, event: Any) -> None:
        applies = _everywhere or in_felix_connection()
        if not applies or self._wsproto.state is ConnectionState.OPEN:
            await handler(self, event)

    setattr(wrapper, _MARK, True)
    return wrapper


def installed() -> bool:
    """Whether :func:`install` has patched trio-websocket in this process."""
    return getattr(WebSocketConnection._handle_ping_event, _MARK, False)


def install(*, everywhere: bool = True) -> None:
    """Make trio-websocket clients ignore pings that arrive while closing. Idempotent.

    ``everywhere=False`` limits it to connections opened inside
    :func:`felix._patches.felix_connections`; once any caller asked for
    everywhere, it stays so.
    """
    global _everywhere  # noqa: PLW0603 (one switch for the whole process, as the patch is)
    _everywhere = _everywhere or everywhere
    if not installed():
        setattr(  # noqa: B010
            WebSocketConnection,
            "_handle_ping_event",
            _only_when_open(WebSocketConnection._handle_ping_event),
        )
