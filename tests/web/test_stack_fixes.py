"""Each defect of the stack that Felix fixes: reproduced without the fix, gone with it.

When a reproduction starts failing after a version bump, upstream has fixed
the defect and the matching fix module can go.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from typing import Any

import hypercorn.trio
import pytest
import trio
from hypercorn.config import Config
from quart_trio import QuartTrio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from felix import fix_trio_websocket_leaks
from felix.web.fix_http_close import close_http_connections
from tests.conftest import Server, StartServer, create_workflow, publish, receive_json

# --- quart-trio + Hypercorn: HTTP connections never closed ------------------------


async def read_until_eof(port: int, request: bytes, patience: float) -> bool:
    """Send a raw request; True if the server closes the connection in time."""
    sock = trio.socket.socket()
    with sock:
        await sock.connect(("127.0.0.1", port))
        await sock.send(request)
        with trio.move_on_after(patience):
            while await sock.recv(65536):
                pass
            return True
    return False


def plain_app() -> QuartTrio:
    app = QuartTrio("plain")

    @app.get("/x")
    async def x() -> dict[str, bool]:
        return {"ok": True}

    return app


async def serve_plain(nursery: trio.Nursery, app: Any) -> int:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.keep_alive_timeout = 0.2
    config.accesslog = None
    binds: list[str] = await nursery.start(hypercorn.trio.serve, app, config)
    return int(binds[0].rsplit(":", 1)[1])


CLOSE = b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
KEEP_ALIVE = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"


async def test_quart_trio_leaves_connections_open_without_the_fix(nursery: trio.Nursery) -> None:
    port = await serve_plain(nursery, plain_app())
    # Patience well past the 0.2 s keep-alive timeout: neither closes it.
    assert not await read_until_eof(port, CLOSE, patience=1.0)
    assert not await read_until_eof(port, KEEP_ALIVE, patience=1.0)


async def test_the_fix_closes_them(nursery: trio.Nursery) -> None:
    app = plain_app()
    app.asgi_app = close_http_connections(app.asgi_app)  # type: ignore[method-assign,assignment,arg-type]
    port = await serve_plain(nursery, app)
    assert await read_until_eof(port, CLOSE, patience=5.0)
    assert await read_until_eof(port, KEEP_ALIVE, patience=5.0)


async def test_felix_closes_http_connections(start_server: StartServer) -> None:
    server = await start_server(keep_alive_timeout=0.2)
    port = int(server.http.rsplit(":", 1)[1])
    request = b"GET /api/v1/workflows HTTP/1.1\r\nHost: t\r\n"
    assert await read_until_eof(port, request + b"Connection: close\r\n\r\n", patience=5.0)
    assert await read_until_eof(port, request + b"\r\n", patience=5.0)


# --- trio-websocket: client sockets leaked ----------------------------------------------


@pytest.fixture
def unpatched_trio_websocket(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in fix_trio_websocket_leaks.PATCHED:
        method = getattr(WebSocketConnection, name)
        monkeypatch.setattr(WebSocketConnection, name, method.__wrapped__)
    assert not fix_trio_websocket_leaks.installed()
    yield
    monkeypatch.undo()
    assert fix_trio_websocket_leaks.installed()


async def refuse_once(server: Server) -> None:
    try:
        async with server.open_ws("no-such-workflow"):
            pass
    except ConnectionRejected:
        return
    raise AssertionError("the handshake was not refused")


async def read_until_closed(server: Server, workflow_id: str) -> None:
    async with server.open_ws(workflow_id, "after=0") as ws:
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass


async def leaked_sockets(server: Server, workflow_id: str) -> int:
    """Open one refused and one server-closed connection; count ResourceWarnings.

    Each runs in its own function, and exceptions are not kept, so nothing
    but a leak keeps a socket alive until the collection below.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await refuse_once(server)
        await read_until_closed(server, workflow_id)
        gc.collect()
    return sum(issubclass(w.category, ResourceWarning) for w in caught)


async def finished_workflow(server: Server) -> str:
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        await publish(client, workflow_id, {"type": "completed"})
    return workflow_id


@pytest.mark.usefixtures("unpatched_trio_websocket")
async def test_trio_websocket_leaks_without_the_fix(server: Server) -> None:
    assert await leaked_sockets(server, await finished_workflow(server)) == 2


async def test_trio_websocket_fixed(server: Server) -> None:
    assert fix_trio_websocket_leaks.installed()
    assert await leaked_sockets(server, await finished_workflow(server)) == 0


# --- Hypercorn's access log: secrets in query strings and headers ------------------------


async def test_access_log_never_shows_keys(
    start_server: StartServer, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = "super-secret-key-1234"
    server = await start_server(api_keys=(secret,), access_log=True)
    async with server.client(api_key=secret) as client:
        workflow_id = await create_workflow(client)
        await client.get("/api/v1/workflows", headers={"Authorization": f"Bearer {secret}"})
        await client.get(f"/api/v1/workflows?api_key={secret}&token={secret}")
    async with server.open_ws(workflow_id, f"api_key={secret}&after=0") as ws:
        await receive_json(ws)
    with pytest.raises(ConnectionRejected):
        async with server.open_ws(workflow_id, "api_key=wrong-key-5678"):
            pass
    out, err = capfd.readouterr()
    assert "/api/v1/ws/workflows" in out  # the access log did run
    assert "api_key=%5Bredacted%5D" in out or "api_key=[redacted]" in out
    for leaked in (secret, "wrong-key-5678"):
        assert leaked not in out
        assert leaked not in err
