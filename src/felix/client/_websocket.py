"""One client WebSocket connection whose socket and tasks the client owns.

trio-websocket's ``open_websocket_url`` has two client-side defects in 0.12.2
(see ``felix._patches``): it leaks its TCP socket after a refused handshake or
a close from the server, and a ping from the server that crosses the client's
Close frame crashes its reader task in a way that cancels the *caller's*
nursery. Felix's server side and its test suite fix them by patching
trio-websocket process-wide; a client library must not do that to the program
that imports it. So the stream does not use ``open_websocket_url``: it opens
the TCP (or TLS) stream itself, hands it to trio-websocket's public
``wrap_client_stream`` with a nursery of its own, closes the stream itself in
every case, and treats the late-ping crash of its own reader as the end of a
connection that was closing anyway. Nothing of trio-websocket is changed.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionTimeout, WebSocketConnection, wrap_client_stream
from wsproto.utilities import LocalProtocolError

__all__ = ["open_connection", "reraise_single"]


def reraise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the one meaningful exception of a nursery's group, keeping its own
    cause and context, so callers catch :class:`StreamError` or their own
    errors as themselves rather than inside an exception group."""
    meaningful = [exc for exc in group.exceptions if not isinstance(exc, trio.Cancelled)]
    if len(meaningful) > 1:
        raise group
    single = meaningful[0] if meaningful else group.exceptions[0]
    context = single.__context__
    try:
        raise single
    finally:
        single.__context__ = context
        del single, context


def _target(url: str) -> tuple[str, int, str, str]:
    """``(host, port, Host header, resource)`` of a ``ws://`` or ``wss://`` URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    name = f"[{host}]" if ":" in host else host  # an IPv6 literal
    host_header = name if port in (80, 443) else f"{name}:{port}"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, port, host_header, resource


async def _open_stream(
    url: str, ssl_context: ssl.SSLContext | None
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    host, port, _, _ = _target(url)
    if url.startswith("wss:"):
        context = ssl_context or ssl.create_default_context()
        return await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=context, https_compatible=True
        )
    return await trio.open_tcp_stream(host, port)


@asynccontextmanager
async def open_connection(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None,
    headers: list[tuple[bytes, bytes]],
    max_message_size: int,
    connect_timeout: float,
) -> AsyncIterator[WebSocketConnection]:
    """Open one WebSocket to ``url`` (``ws://`` or ``wss://``) and yield it.

    Owns the TCP stream and trio-websocket's reader task: leaving the block
    sends a Close (waiting at most ``connect_timeout`` seconds for the
    server's), cancels the reader and closes the socket, whatever happened.

    Raises :class:`trio_websocket.ConnectionTimeout` when the TCP connect and
    the handshake take over ``connect_timeout`` seconds,
    :class:`trio_websocket.ConnectionRejected` for a refused handshake and
    :class:`OSError` for a failed connect. Exceptions of the block are
    re-raised as themselves, not in an exception group.
    """
    _, _, host_header, resource = _target(url)
    with trio.move_on_after(connect_timeout) as connecting:
        stream = await _open_stream(url, ssl_context)
    if connecting.cancelled_caught:
        raise ConnectionTimeout
    closing = False
    try:
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(connect_timeout) as handshaking:
                ws = await wrap_client_stream(
                    nursery,
                    stream,
                    host_header,
                    resource,
                    extra_headers=headers,
                    max_message_size=max_message_size,
                )
            if handshaking.cancelled_caught:
                raise ConnectionTimeout
            try:
                yield ws
            finally:
                closing = True
                with trio.move_on_after(connect_timeout):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if closing:
            # The server's ping crossed our Close: wsproto refuses to answer a
            # ping once closing, and the reader dies of it. The connection was
            # ending anyway; what else the group holds still goes up.
            _, rest = group.split(LocalProtocolError)
            if rest is None:
                return
            group = rest
        reraise_single(group)
    finally:
        # trio closes the socket even if this is cancelled; the deadline only
        # bounds a TLS close_notify to a peer that stopped reading.
        with trio.move_on_after(connect_timeout):
            await stream.aclose()
