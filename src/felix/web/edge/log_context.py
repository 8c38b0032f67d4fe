"""A ``request_id`` for every scope's log lines.

:class:`~felix.web.edge.app.Edge` sets :data:`felix._logging.REQUEST_ID` to
:func:`request_id` for the task serving each HTTP or WebSocket scope (and the
tasks it starts), so that the JSON log format can say which request a line
belongs to. A client's ``X-Request-ID`` is used when it is a plain token of at
most 64 characters (letters, digits, ``.``, ``_``, ``-``); otherwise one is
made. The edge does it itself rather than through a wrapping ASGI layer: a
layer's frame would stay alive for every open WebSocket (issue 14 measured
what each frame costs an idle connection).
"""

from __future__ import annotations

import random
import re
from typing import Final

from felix.web._asgi import Scope

__all__ = ["request_id"]

_CLIENT_ID: Final = re.compile(rb"[A-Za-z0-9._-]{1,64}")


def request_id(scope: Scope) -> str:
    """The client's ``X-Request-ID`` if it is a plain token, else a new ``req_`` id."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"x-request-id" and _CLIENT_ID.fullmatch(value):
            return str(value.decode("ascii"))
    # Only a log label, never a secret: Python's PRNG, not an os.urandom()
    # system call per request (2% of a publish's CPU under many workflows).
    return f"req_{random.getrandbits(48):012x}"
