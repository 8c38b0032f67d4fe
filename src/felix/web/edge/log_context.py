"""The outermost ASGI layer: a ``request_id`` for every scope's log lines.

It sets :data:`felix._logging.REQUEST_ID` for the task serving the scope (and
the tasks it starts), so that the JSON log format can say which request a
line belongs to. A client's ``X-Request-ID`` is used when it is a plain token
of at most 64 characters (letters, digits, ``.``, ``_``, ``-``); otherwise one
is made. The WebSocket router adds ``connection_id`` once a connection is
accepted.
"""

from __future__ import annotations

import random
import re
from typing import Final

from felix._logging import REQUEST_ID
from felix.web._asgi import ASGIApp, Receive, Scope, Send

__all__ = ["LogContext"]

_CLIENT_ID: Final = re.compile(rb"[A-Za-z0-9._-]{1,64}")


class LogContext:
    """Wraps an ASGI app; sets the request id for each HTTP or WebSocket scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI scope with :data:`REQUEST_ID` set."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope.get("headers", ()):
            if name.lower() == b"x-request-id" and _CLIENT_ID.fullmatch(value):
                request_id = value.decode("ascii")
                break
        # Only a log label, never a secret: Python's PRNG, not an os.urandom()
        # system call per request (2% of a publish's CPU under many workflows).
        token = REQUEST_ID.set(request_id or f"req_{random.getrandbits(48):012x}")
        try:
            await self.app(scope, receive, send)
        finally:
            REQUEST_ID.reset(token)
