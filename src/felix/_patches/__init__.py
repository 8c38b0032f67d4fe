"""Client-side fixes to libraries Felix uses: each deletable, none applied on import.

- :mod:`~felix._patches.trio_websocket_leaks` — trio-websocket 0.12.2 clients leak
  their socket after a refused handshake or a server-initiated close;
- :mod:`~felix._patches.trio_websocket_pong` — a trio-websocket 0.12.2 client answers a
  ping that crosses its close, and the error cancels the caller's nursery;
- :mod:`~felix._patches.coredis_stream_leak` — coredis 6.9 leaks six memory streams per
  refused connection.

Each module's ``install()`` patches the library's class for the whole process, and says
so. Importing this package, or any of them, patches nothing.

The two trio-websocket fixes can be limited to Felix's own connections:
``install(everywhere=False)`` makes the patched methods behave exactly like the library's
own unless the connection was opened inside :func:`felix_connections` (a context
variable, inherited by the connection's reader task). That is what a library such as
``felix.client`` should use, so that a program which also uses trio-websocket for
something else keeps the library's behaviour there. ``install()`` (everywhere) is for
programs that are Felix's own: the demo, the soak, the test suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["felix_connections", "in_felix_connection"]

_FELIX_CONNECTION: ContextVar[bool] = ContextVar("felix_connection", default=False)


@contextmanager
def felix_connections() -> Iterator[None]:
    """Mark trio-websocket connections opened inside this block as Felix's own.

    With ``install(everywhere=False)``, only they get the client-side fixes.
    """
    token = _FELIX_CONNECTION.set(True)
    try:
        yield
    finally:
        _FELIX_CONNECTION.reset(token)


def in_felix_connection() -> bool:
    """Whether the current task (or the task that spawned it) is in :func:`felix_connections`."""
    return _FELIX_CONNECTION.get()
