"""Where Felix's fixes to Hypercorn are put together and installed.

Each fix lives in its own module (``fix_send_deadline``, ``fix_dead_peers``,
``fix_permessage_deflate``), as does each cut in what Hypercorn does per
connection or request (``lean_connection``, ``lean_http``), as a subclass of
a Hypercorn class. Hypercorn
builds those objects itself, deep inside its trio worker, so :func:`install`
rebinds the names it looks them up by. The rebinding is process-wide, which is
why each subclass behaves exactly like Hypercorn's own unless the config is a
:class:`FelixConfig`: another Hypercorn app in the same process is unaffected.

The names rebound are internal, so Hypercorn is pinned below 0.19 and
``tests/web/test_stack_fixes.py`` checks that the patched classes are the ones
serving connections.
"""

from __future__ import annotations

import math

import hypercorn.protocol
import hypercorn.protocol.h2
import hypercorn.protocol.h11
import hypercorn.trio.run
import hypercorn.trio.tcp_server
from hypercorn.config import Config

from felix.web.hypercorn.access_log import RedactingLogger
from felix.web.hypercorn.direct_read import DirectReadWSStream, listen
from felix.web.hypercorn.direct_write import DirectWriter
from felix.web.hypercorn.fix_dead_peers import DeadPeerWSStream, Pinger
from felix.web.hypercorn.fix_http_close import close_http_connections
from felix.web.hypercorn.fix_oversized_message import OversizeSafeWSStream
from felix.web.hypercorn.fix_permessage_deflate import CompressionSettingWSStream
from felix.web.hypercorn.fix_send_deadline import DeadlineTCPServer, abort_stalled_writes
from felix.web.hypercorn.lean_connection import LeanReadTCPServer, LeanTaskGroup, LeanWSStream
from felix.web.hypercorn.lean_http import OneWriteH11Protocol, QuickWriteTCPServer

__all__ = [
    "DirectWriter",
    "FelixConfig",
    "FelixTCPServer",
    "FelixWSStream",
    "RedactingLogger",
    "abort_stalled_writes",
    "close_http_connections",
    "install",
    "installed",
    "listen",
]


class FelixTCPServer(QuickWriteTCPServer, DeadlineTCPServer, LeanReadTCPServer):
    """Hypercorn's TCP connection handler with quick writes, a write deadline and lean reads."""


class FelixWSStream(
    DeadPeerWSStream,
    CompressionSettingWSStream,
    OversizeSafeWSStream,
    DirectReadWSStream,
    LeanWSStream,
):
    """Hypercorn's WebSocket stream with Felix's fixes and direct reads."""


class FelixConfig(Config):
    """Hypercorn's config plus what Felix's fixes read."""

    #: Seconds a socket write may take before the connection is aborted.
    felix_send_timeout: float | None = None
    #: Seconds to wait for any answer to a ping before dropping the peer.
    felix_ping_timeout: float | None = None
    #: Whether to negotiate permessage-deflate when a client offers it.
    felix_compression: bool = True
    #: No write may last past this moment (pulled in at shutdown).
    felix_send_deadline_cap: float = math.inf
    #: Give apps a lean inbox instead of a memory channel (see lean_connection).
    felix_lean_inbox: bool = True
    #: One write per response, quick writes, a cheaper keep-alive timer (see lean_http).
    felix_lean_http: bool = True

    def __init__(self) -> None:
        super().__init__()
        self.felix_servers: set[DeadlineTCPServer] = set()
        #: Pings this server's WebSockets (one task, not one per connection).
        self.felix_pinger = Pinger()


def install() -> None:
    """Rebind Hypercorn's TCP server and WebSocket stream classes. Idempotent."""
    setattr(hypercorn.trio.run, "TCPServer", FelixTCPServer)  # noqa: B010
    setattr(hypercorn.protocol.h11, "WSStream", FelixWSStream)  # noqa: B010
    setattr(hypercorn.protocol.h2, "WSStream", FelixWSStream)  # noqa: B010
    setattr(hypercorn.trio.tcp_server, "TaskGroup", LeanTaskGroup)  # noqa: B010
    setattr(hypercorn.protocol, "H11Protocol", OneWriteH11Protocol)  # noqa: B010


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return (
        getattr(hypercorn.trio.run, "TCPServer", None) is FelixTCPServer
        and getattr(hypercorn.protocol.h11, "WSStream", None) is FelixWSStream
        and getattr(hypercorn.protocol.h2, "WSStream", None) is FelixWSStream
        and getattr(hypercorn.trio.tcp_server, "TaskGroup", None) is LeanTaskGroup
        and getattr(hypercorn.protocol, "H11Protocol", None) is OneWriteH11Protocol
    )
