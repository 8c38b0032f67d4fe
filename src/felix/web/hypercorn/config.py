"""``FelixConfig``: Hypercorn's ``Config`` plus what Felix's changes read.

Written against Hypercorn 0.18.0. Every change in this package behaves
exactly like Hypercorn's own code unless the connection's config is a
:class:`FelixConfig` (:func:`is_felix`): the classes are only built for such a
config (see :func:`felix.web.hypercorn.install`), and the few names rebound
process-wide check it again before doing anything of their own.

Nothing here is an upstream defect; delete it with the last module that reads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hypercorn.config import Config

from felix.web.hypercorn.pinger import Pinger

if TYPE_CHECKING:
    from felix.settings import Settings
    from felix.web.hypercorn.tcp_server import FelixTCPServer

__all__ = ["FelixConfig", "is_felix"]


class FelixConfig(Config):
    """Hypercorn's config plus what Felix's changes read (each a documented bound)."""

    #: Seconds a socket write may take before the connection is aborted.
    felix_send_timeout: float | None = None
    #: Seconds to wait for any answer to a ping before dropping the peer.
    felix_ping_timeout: float | None = None
    #: Whether to negotiate permessage-deflate when a client offers it.
    felix_compression: bool = True
    #: No write may last past this moment (pulled in at shutdown).
    felix_send_deadline_cap: float = math.inf
    #: Give apps a lean inbox instead of a memory channel (see task_group).
    felix_lean_inbox: bool = True
    #: One write per response, quick writes, a cheaper keep-alive timer (see h11_protocol).
    felix_lean_http: bool = True
    #: After refusing a request whose body is still arriving, read and discard
    #: at most this many bytes of it before closing (a lingering close), so the
    #: client reads the refusal instead of a reset (``FELIX_LINGER_BYTES``).
    felix_linger_bytes: int = 16 * 1024 * 1024
    #: ... and for at most this many seconds (``FELIX_LINGER_SECONDS``).
    felix_linger_seconds: float = 5.0
    #: Seconds a request body may take to arrive once its head has; past them
    #: the request is answered 408 and closed (``FELIX_BODY_TIMEOUT``).
    felix_body_timeout: float = 30.0

    def __init__(self) -> None:
        super().__init__()
        #: WebSocket paths whose messages may be larger (or must be smaller) than
        #: ``websocket_max_message_size``: the producer stream takes a publish
        #: body's worth per frame. Exact paths; anything else gets the default.
        self.felix_message_limits: dict[str, int] = {}
        #: Which requests (method, raw target) may be served in the connection's
        #: own task when they arrive whole (see h11_protocol, 7): only routes whose
        #: app answers promptly and never streams. None: every request as stock.
        self.felix_inline: Callable[[bytes, bytes], bool] | None = None
        #: The open connections, which shutdown aborts when their writes stall.
        self.felix_servers: set[FelixTCPServer] = set()
        #: Pings this server's WebSockets (one task, not one per connection).
        self.felix_pinger: Pinger = Pinger()

    @classmethod
    def from_settings(cls, settings: Settings) -> FelixConfig:
        """A config carrying the limits of ``settings`` that this package enforces.

        Only the adapter's own bounds; the caller adds binds, logging and the rest.
        """
        config = cls()
        config.felix_send_timeout = settings.send_timeout
        config.felix_ping_timeout = settings.ping_timeout
        config.felix_compression = settings.ws_compression
        config.keep_alive_timeout = settings.keep_alive_timeout
        config.websocket_max_message_size = settings.max_client_frame_bytes
        config.websocket_ping_interval = settings.ping_interval
        config.felix_body_timeout = settings.body_timeout
        config.felix_linger_seconds = settings.linger_seconds
        config.felix_linger_bytes = settings.linger_bytes
        return config


def is_felix(config: Any) -> bool:
    """Whether ``config`` asks for Felix's behaviour (else everything acts as stock)."""
    return isinstance(config, FelixConfig)
