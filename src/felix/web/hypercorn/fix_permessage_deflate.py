"""Stack fix: Hypercorn accepts permessage-deflate whenever a client offers it.

The defect (Hypercorn 0.18): the handshake always negotiates
permessage-deflate when the client offers it, and every browser does. Each
message is then compressed separately for each connection, so an event sent
to N subscribers costs N zlib passes on the server's one core, and every
connection keeps a compression context (tens of KB). For Felix's small JSON
events the bandwidth saved rarely pays for that.

The fix makes it a setting, ``FELIX_WS_COMPRESSION`` (default off): when off,
the offer is ignored and the connection runs uncompressed, which every
client must accept (RFC 7692 makes the extension optional for the server).

Installed by :func:`felix.web.hypercorn.install`;
``tests/web/test_stack_fixes.py`` shows the extension negotiated without it.
"""

from __future__ import annotations

from hypercorn.protocol.ws_stream import WSStream
from hypercorn.typing import WebsocketAcceptEvent

__all__ = ["CompressionSettingWSStream"]


class CompressionSettingWSStream(WSStream):
    """Hypercorn's WebSocket stream, negotiating compression only when allowed.

    Behaves exactly like Hypercorn's own unless its config carries
    ``felix_compression = False``.
    """

    async def _accept(self, message: WebsocketAcceptEvent) -> None:
        if getattr(self.config, "felix_compression", True) is False:
            # With no offer on record, Hypercorn answers without the extension.
            self.handshake.extensions = None
        await super()._accept(message)
