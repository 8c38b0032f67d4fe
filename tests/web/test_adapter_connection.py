"""The connection interface (``felix.web.hypercorn.current_connection``), end to end.

A plain ASGI app served with a ``FelixConfig`` reaches its WebSocket only
through ``Connection``: listen, try_send, send, abort. No Hypercorn object.
"""

from __future__ import annotations

import os
from typing import Any

import hypercorn.trio
import trio

import felix.web.hypercorn as adapter
from tests.conftest import raw_websocket

HELLO = b"\x81\x05hello"  # a server text frame: FIN, text, 5 bytes, unmasked


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


async def test_an_app_reaches_its_websocket_through_the_interface(
    nursery: trio.Nursery,
) -> None:
    adapter.install()
    config = adapter.FelixConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    heard: list[dict[str, Any]] = []
    got_message = trio.Event()
    results: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": f"{message['type']}.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        connection = adapter.current_connection()
        assert connection is not None

        def sink(message: dict[str, Any]) -> None:
            heard.append(message)
            if message["type"] == "websocket.receive":
                got_message.set()

        results["listening"] = connection.listen(sink)
        await send({"type": "websocket.accept"})
        results["direct"] = connection.can_write_direct
        results["sent"] = connection.try_send(HELLO)
        await connection.send(HELLO)  # Hypercorn's path, with the write deadline
        await got_message.wait()
        await connection.abort()

    binds: list[str] = await nursery.start(hypercorn.trio.serve, app, config)
    sock, answer = await raw_websocket(binds[0], "/")
    with sock:
        assert answer.startswith(b"HTTP/1.1 101")
        received = b""
        with trio.fail_after(5):
            while len(received) < 2 * len(HELLO):
                received += await sock.recv(65536)
        assert received == HELLO * 2
        await sock.send(masked_text(b"hi"))
        with trio.fail_after(5):
            try:
                rest = await sock.recv(65536)
            except ConnectionResetError:
                rest = b""
        assert rest == b""  # reset, no close frame
    assert results == {"listening": True, "direct": True, "sent": len(HELLO)}
    assert heard[0] == {"type": "websocket.receive", "bytes": None, "text": "hi"}


async def test_no_connection_outside_a_websocket() -> None:
    assert adapter.current_connection() is None
