"""The Hypercorn adapter: the only code in Felix that touches Hypercorn, h11,
wsproto or trio-socket internals.

One module per upstream class changed, each saying the upstream version it was
written against, each defect or cost it addresses, and how to delete it:

- :mod:`~felix.web.hypercorn.tcp_server` — ``hypercorn.trio.tcp_server.TCPServer``
  (write deadline, quick writes, lean reads, lingering close, a keep-alive
  timer started when the connection waits and moved by inline requests);
- :mod:`~felix.web.hypercorn.ws_stream` — ``hypercorn.protocol.ws_stream.WSStream``
  (dead peers, compression setting, oversized messages, direct reads, the h11
  parser let go);
- :mod:`~felix.web.hypercorn.h11_protocol` — ``hypercorn.protocol.h11.H11Protocol``
  (no ``100 Continue`` before a refusal, lingering close, framing RFC 9112
  refuses, idle HTTP/2 by prior knowledge, one write per response, plain whole
  publishes served inline, with :mod:`~felix.web.hypercorn.plain_request`);
- :mod:`~felix.web.hypercorn.task_group` — ``hypercorn.trio.task_group.TaskGroup``
  (a lean app inbox, a burst taken at once);
- :mod:`~felix.web.hypercorn.logger` — ``hypercorn.logging.Logger`` (redaction);
- :mod:`~felix.web.hypercorn.config` — :class:`FelixConfig`;
- :mod:`~felix.web.hypercorn.listeners` — trio's accept loop's error log (EMFILE);
- :mod:`~felix.web.hypercorn.http_close` — an ASGI wrapper for quart-trio;
- :mod:`~felix.web.hypercorn.pinger` — the one ping task per server;
- :mod:`~felix.web.hypercorn.connection` — the interface below.

**The connection interface.** The rest of Felix reaches a connection only
through :func:`current_connection`, which answers a :class:`Connection` (or
None when the connection is not Felix's): ``listen(sink)`` (client messages
handed to a sink in the connection's task), ``try_send(data) -> int`` (one
non-blocking write of pre-built frame bytes), ``send(data)`` (Hypercorn's
path with the write deadline), ``attach(sub)`` / ``detach(sub)`` (a
subscription's half-written frame goes out before Hypercorn's own frames) and
``abort()`` (reset now).

**How it is installed, and what is process-wide.** Hypercorn builds these
objects itself, deep inside its trio worker, so :func:`install` rebinds the
names it looks them up by: ``hypercorn.trio.run.TCPServer``,
``hypercorn.protocol.H11Protocol``, ``hypercorn.protocol.h11.WSStream`` and
``hypercorn.protocol.h2.WSStream`` to factories that build Felix's class for a
:class:`FelixConfig` and Hypercorn's own class for any other config, so another
Hypercorn app in the same process runs on stock objects.
Two things are process-wide: ``hypercorn.trio.tcp_server.TaskGroup`` is
rebound to :class:`~felix.web.hypercorn.task_group.LeanTaskGroup` (made without
a config; it acts as stock unless the config is a :class:`FelixConfig`), and a
logging filter on trio's ``trio.serve_listeners`` logger folds repeated
``accept()`` errors into one line a second (:mod:`~felix.web.hypercorn.listeners`).
``tests/web/test_stack_fixes.py`` checks both, that every overridden upstream
name still exists with the signature it had, and that a plain
``hypercorn.Config`` app sees stock behaviour.
"""

from __future__ import annotations

from typing import Any

import hypercorn.protocol
import hypercorn.protocol.h2
import hypercorn.protocol.h11
import hypercorn.trio.run
import hypercorn.trio.tcp_server
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import WSStream
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer

from felix.web.hypercorn import listeners
from felix.web.hypercorn.config import FelixConfig, is_felix
from felix.web.hypercorn.connection import (
    Connection,
    MessageSink,
    current_connection,
)
from felix.web.hypercorn.h11_protocol import FelixH11Protocol
from felix.web.hypercorn.http_close import close_http_connections
from felix.web.hypercorn.logger import REDACTED, RedactingLogger, redact_query
from felix.web.hypercorn.pinger import Pinger
from felix.web.hypercorn.task_group import AppInbox, LeanTaskGroup
from felix.web.hypercorn.tcp_server import (
    CURRENT_SERVER,
    FelixTCPServer,
    QuickIdleTimer,
    abort_stalled_writes,
)
from felix.web.hypercorn.ws_stream import FelixWSStream

__all__ = [
    "CURRENT_SERVER",
    "REDACTED",
    "AppInbox",
    "Connection",
    "FelixConfig",
    "FelixH11Protocol",
    "FelixTCPServer",
    "FelixWSStream",
    "LeanTaskGroup",
    "MessageSink",
    "Pinger",
    "QuickIdleTimer",
    "RedactingLogger",
    "abort_stalled_writes",
    "close_http_connections",
    "current_connection",
    "install",
    "installed",
    "is_felix",
    "redact_query",
]


def _tcp_server(app: Any, config: Any, context: Any, state: Any, stream: Any) -> TCPServer:
    """``hypercorn.trio.run.TCPServer``: Felix's class for a FelixConfig."""
    cls = FelixTCPServer if is_felix(config) else TCPServer
    return cls(app, config, context, state, stream)


def _h11_protocol(app: Any, config: Any, *args: Any) -> H11Protocol:
    """``hypercorn.protocol.H11Protocol``: Felix's class for a FelixConfig."""
    cls = FelixH11Protocol if is_felix(config) else H11Protocol
    return cls(app, config, *args)


def _ws_stream(app: Any, config: Any, *args: Any) -> WSStream:
    """``hypercorn.protocol.h11/h2.WSStream``: Felix's class for a FelixConfig."""
    cls = FelixWSStream if is_felix(config) else WSStream
    return cls(app, config, *args)


#: (module, name, what install() binds there, the upstream object it replaces).
REBINDS: tuple[tuple[Any, str, Any, Any], ...] = (
    (hypercorn.trio.run, "TCPServer", _tcp_server, TCPServer),
    (hypercorn.protocol, "H11Protocol", _h11_protocol, H11Protocol),
    (hypercorn.protocol.h11, "WSStream", _ws_stream, WSStream),
    (hypercorn.protocol.h2, "WSStream", _ws_stream, WSStream),
    (hypercorn.trio.tcp_server, "TaskGroup", LeanTaskGroup, TaskGroup),
)


def install() -> None:
    """Rebind the Hypercorn names in :data:`REBINDS` and filter the accept log. Idempotent."""
    for module, name, ours, _upstream in REBINDS:
        setattr(module, name, ours)
    listeners.install()


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return listeners.installed() and all(
        getattr(module, name, None) is ours for module, name, ours, _ in REBINDS
    )
