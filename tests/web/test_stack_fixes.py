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

import felix
import felix.web.hypercorn as hypercorn_patches
from felix._patches import trio_websocket_leaks, trio_websocket_pong
from felix.web.hypercorn import close_http_connections
from tests.conftest import (
    Server,
    StartServer,
    create_workflow,
    publish,
    raw_websocket,
    receive_json,
    wait_until,
)

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
    for name in trio_websocket_leaks.PATCHED:
        method = getattr(WebSocketConnection, name)
        monkeypatch.setattr(WebSocketConnection, name, method.__wrapped__)
    assert not trio_websocket_leaks.installed()
    yield
    monkeypatch.undo()
    assert trio_websocket_leaks.installed()


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
    assert trio_websocket_leaks.installed()
    assert await leaked_sockets(server, await finished_workflow(server)) == 0


async def test_trio_websocket_fix_can_be_limited_to_felix_connections(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As felix.client should install it: a program's own connections keep
    # trio-websocket's behaviour (here, its leaks); Felix's get the fix.
    from felix._patches import felix_connections

    monkeypatch.setattr(trio_websocket_leaks, "_everywhere", False)
    trio_websocket_leaks.install(everywhere=False)
    assert not trio_websocket_leaks._everywhere
    workflow_id = await finished_workflow(server)
    assert await leaked_sockets(server, workflow_id) == 2
    with felix_connections():
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


# --- Hypercorn: writes without deadline, pongs ignored, deflate always accepted ----------


@pytest.fixture
def stock_hypercorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve with the Hypercorn fixes switched off (their classes act as stock)."""
    import felix.web.app

    original = felix.web.app.hypercorn_config

    def without_fixes(settings: felix.Settings) -> Any:
        config = original(settings)
        config.felix_send_timeout = None
        config.felix_ping_timeout = None
        config.felix_compression = True
        return config

    monkeypatch.setattr(felix.web.app, "hypercorn_config", without_fixes)


#: Every upstream method Felix's classes override or call, with the signature it
#: was written against (Hypercorn 0.18.0). A changed signature fails here, loudly,
#: instead of a fix silently doing nothing after an upgrade.
UPSTREAM_SIGNATURES = {
    "hypercorn.trio.tcp_server.TCPServer.__init__": (
        "(self, app: 'AppWrapper', config: 'Config', context: 'WorkerContext', "
        "state: 'LifespanState', stream: 'trio.SSLStream[trio.SocketStream]') -> 'None'"
    ),
    "hypercorn.trio.tcp_server.TCPServer.protocol_send": "(self, event: 'Event') -> 'None'",
    "hypercorn.trio.tcp_server.TCPServer._read_data": "(self) -> 'None'",
    "hypercorn.trio.tcp_server.TCPServer._close": "(self) -> 'None'",
    "hypercorn.trio.tcp_server.TCPServer._idle_timeout": "(self) -> 'None'",
    "hypercorn.protocol.ws_stream.WSStream.handle": "(self, event: 'Event') -> 'None'",
    "hypercorn.protocol.ws_stream.WSStream._handle_events": "(self) -> 'None'",
    "hypercorn.protocol.ws_stream.WSStream._accept": (
        "(self, message: 'WebsocketAcceptEvent') -> 'None'"
    ),
    "hypercorn.protocol.ws_stream.WSStream._send_pings": "(self) -> 'None'",
    "hypercorn.protocol.ws_stream.WSStream._send_wsproto_event": (
        "(self, event: 'WSProtoEvent') -> 'None'"
    ),
    "hypercorn.protocol.h11.H11Protocol.handle": "(self, event: 'Event') -> 'None'",
    "hypercorn.protocol.h11.H11Protocol._handle_events": "(self) -> 'None'",
    "hypercorn.protocol.h11.H11Protocol._create_stream": "(self, request: 'h11.Request') -> 'None'",
    "hypercorn.protocol.h11.H11Protocol._send_h11_event": (
        "(self, event: 'H11SendableEvent') -> 'None'"
    ),
    "hypercorn.protocol.h11.H11Protocol._send_error_response": (
        "(self, status_code: 'int') -> 'None'"
    ),
    "hypercorn.protocol.h11.H11Protocol._maybe_recycle": "(self) -> 'None'",
    "hypercorn.protocol.h11.H11Protocol._check_protocol": "(self, event: 'h11.Request') -> 'None'",
    "hypercorn.protocol.h11.H11Protocol._close_stream": "(self) -> 'None'",
    "hypercorn.trio.task_group.TaskGroup.spawn_app": (
        "(self, app: 'AppWrapper', config: 'Config', scope: 'Scope', "
        "send: 'Callable[[ASGISendEvent | None], Awaitable[None]]') "
        "-> 'Callable[[ASGIReceiveEvent], Awaitable[None]]'"
    ),
    "hypercorn.trio.task_group._handle": (
        "(app: 'AppWrapper', config: 'Config', scope: 'Scope', "
        "receive: 'ASGIReceiveCallable', "
        "send: 'Callable[[ASGISendEvent | None], Awaitable[None]]', "
        "sync_spawn: 'Callable', call_soon: 'Callable') -> 'None'"
    ),
    "hypercorn.logging.Logger.atoms": (
        "(self, request: 'WWWScope', response: 'ResponseSummary | None', "
        "request_time: 'float') -> 'Mapping[str, str]'"
    ),
}

#: Other upstream names the adapter reads (attributes set in __init__ are checked
#: on a live object in test_a_plain_hypercorn_app_gets_stock_behaviour).
UPSTREAM_NAMES = (
    "hypercorn.trio.tcp_server.MAX_RECV",
    "hypercorn.protocol.h11.STREAM_ID",
    "hypercorn.protocol.h11.H2ProtocolAssumedError",
    "hypercorn.protocol.h11.H11WSConnection",
    "hypercorn.protocol.ws_stream.FrameTooLargeError",
    "hypercorn.protocol.ws_stream.ASGIWebsocketState",
    "hypercorn.trio.worker_context.TrioSingleTask.restart",
    "hypercorn.trio.worker_context.TrioSingleTask.stop",
    "trio._highlevel_serve_listeners.LOGGER",
    "trio.socket.SocketType",
)


def _resolve(dotted: str) -> Any:
    import importlib

    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            target = getattr(target, part)
        return target
    raise AssertionError(dotted)


def test_every_upstream_name_overridden_still_exists_as_written_against() -> None:
    import inspect

    for dotted, expected in UPSTREAM_SIGNATURES.items():
        assert str(inspect.signature(_resolve(dotted))) == expected, dotted
    for dotted in UPSTREAM_NAMES:
        _resolve(dotted)
    # And every method a Felix class overrides is in the list above.
    from felix.web.hypercorn import h11_protocol, logger, task_group, tcp_server, ws_stream

    for module, cls in (
        (tcp_server, hypercorn_patches.FelixTCPServer),
        (ws_stream, hypercorn_patches.FelixWSStream),
        (h11_protocol, hypercorn_patches.FelixH11Protocol),
        (task_group, hypercorn_patches.LeanTaskGroup),
        (logger, hypercorn_patches.RedactingLogger),
    ):
        upstream = cls.__mro__[1]
        overridden = {
            name
            for name, value in vars(cls).items()
            if callable(value) and name in vars(upstream) and name != "__init_subclass__"
        }
        assert overridden <= set(module.OVERRIDES), (cls, overridden)
        for name in module.OVERRIDES:
            key = f"{upstream.__module__}.{upstream.__qualname__}.{name}"
            assert key in UPSTREAM_SIGNATURES, key


async def test_serving_installs_the_patches(server: Server) -> None:
    # If a Hypercorn upgrade renames what install() rebinds, this fails
    # rather than the fixes silently doing nothing.
    assert hypercorn_patches.installed()
    for module, name, ours, upstream in hypercorn_patches.REBINDS:
        assert getattr(module, name) is ours, (module, name)
        # What was replaced is the upstream class, still defined where it was.
        assert getattr(importlib_module(upstream.__module__), upstream.__name__) is upstream


def importlib_module(name: str) -> Any:
    import importlib

    return importlib.import_module(name)


async def fill_until_stalled(server: Server, client: Any, workflow_id: str) -> None:
    """Publish large events until the subscriber's writer is stuck in a write."""
    [subscription] = server.hub._connections.values()
    with trio.fail_after(30):
        sent = 0
        while subscription.buffered_bytes < 2_000_000:
            await publish(
                client, workflow_id, [{"type": "synthesis", "content": "x" * 30_000}] * 10
            )
            sent += 10


@pytest.mark.usefixtures("stock_hypercorn")
async def test_stalled_reader_pins_its_connection_without_the_fix(
    start_server: StartServer,
) -> None:
    server = await start_server(send_timeout=0.2, subscriber_buffer_bytes=64 * 1024 * 1024)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        sock, _ = await raw_websocket(
            server.http, f"/api/v1/ws/workflows/{workflow_id}", rcvbuf=4096
        )
        with sock:
            await fill_until_stalled(server, client, workflow_id)
            await trio.sleep(1)  # five send timeouts: nothing ends it
            assert server.hub.connection_count() == 1
        # Closing the client's socket is what finally frees the task.


async def test_stalled_reader_is_freed_with_the_fix(start_server: StartServer) -> None:
    server = await start_server(send_timeout=0.2, subscriber_buffer_bytes=64 * 1024 * 1024)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        sock, _ = await raw_websocket(
            server.http, f"/api/v1/ws/workflows/{workflow_id}", rcvbuf=4096
        )
        with sock:
            await fill_until_stalled(server, client, workflow_id)
            await wait_until(lambda: server.hub.connection_count() == 0, timeout=3)


@pytest.mark.usefixtures("stock_hypercorn")
async def test_silent_peer_is_kept_without_the_fix(start_server: StartServer) -> None:
    server = await start_server(ping_interval=0.1, ping_timeout=0.1)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
    sock, _ = await raw_websocket(server.http, f"/api/v1/ws/workflows/{workflow_id}")
    with sock:
        await trio.sleep(1)  # ten pings unanswered
        assert server.hub.connection_count() == 1


@pytest.mark.usefixtures("stock_hypercorn")
async def test_deflate_is_accepted_without_the_fix(start_server: StartServer) -> None:
    server = await start_server(ws_compression=False)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
    sock, answer = await raw_websocket(
        server.http,
        f"/api/v1/ws/workflows/{workflow_id}",
        headers="Sec-WebSocket-Extensions: permessage-deflate\r\n",
    )
    with sock:
        assert b"permessage-deflate" in answer.lower()


# --- trio-websocket: a ping crossing the client's Close crashes the reader -----------------


async def ping_during_close_server(
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A one-shot server that answers the client's Close with a Ping first."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    task_status.started(listener.getsockname()[1])
    sock, _ = await listener.accept()
    with sock, listener:
        ws = WSConnection(ConnectionType.SERVER)
        while True:
            data = await sock.recv(65536)
            if not data:
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Request):
                    await sock.send(ws.send(AcceptConnection()))
                elif isinstance(event, CloseConnection):
                    # As if the ping had left before the Close arrived (wsproto
                    # itself would refuse to build it now): FIN + ping, 4 bytes.
                    await sock.send(b"\x89\x04late")
                    await sock.send(ws.send(event.response()))
                    return


async def leave_while_pinged(nursery: trio.Nursery) -> None:
    from trio_websocket import open_websocket_url

    port = await nursery.start(ping_during_close_server)
    async with open_websocket_url(f"ws://127.0.0.1:{port}/"):
        pass


@pytest.fixture
def unpatched_ping_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    original: Any = WebSocketConnection._handle_ping_event
    monkeypatch.setattr(WebSocketConnection, "_handle_ping_event", original.__wrapped__)


async def leaves_cleanly() -> bool:
    """True if the client returns normally and its caller's nursery survives."""
    returned = False
    with trio.move_on_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)  # a neighbour of the client
            await leave_while_pinged(nursery)
            returned = True
            nursery.cancel_scope.cancel()
    return returned


@pytest.mark.usefixtures("unpatched_ping_handler")
async def test_late_ping_cancels_the_callers_nursery_without_the_fix() -> None:
    assert not await leaves_cleanly()


async def test_late_ping_is_ignored_with_the_fix() -> None:
    assert trio_websocket_pong.installed()
    assert await leaves_cleanly()


# --- the adapter leaves other Hypercorn apps in the process alone ---------------------------


def _live(cls: type, config: Any) -> list[type]:
    """The exact types of the live instances of ``cls`` serving ``config``."""
    return [
        type(o)
        for o in gc.get_objects()
        if isinstance(o, cls) and getattr(o, "config", None) is config
    ]


async def test_a_plain_hypercorn_app_gets_stock_behaviour(nursery: trio.Nursery) -> None:
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.protocol.ws_stream import WSStream
    from hypercorn.trio.tcp_server import TCPServer

    hypercorn_patches.install()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": f"{message['type']}.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen[scope["type"]] = {
            "connection": hypercorn_patches.current_connection(),
            "inbox": type(receive.__self__),
            "classes": _live(TCPServer, config) + _live(H11Protocol, config),
            "streams": _live(WSStream, config),
        }
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    binds: list[str] = await nursery.start(hypercorn.trio.serve, app, config)
    port = int(binds[0].rsplit(":", 1)[1])
    sock = trio.socket.socket()
    with sock:
        await sock.connect(("127.0.0.1", port))
        await sock.send(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
        )
        with trio.fail_after(5):
            first = await sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 100 ")  # stock: before the app answered
    sock, _ = await raw_websocket(binds[0], "/")
    sock.close()
    assert hypercorn_patches.installed()
    for kind in ("http", "websocket"):
        assert seen[kind]["connection"] is None
        assert seen[kind]["inbox"] is trio.MemoryReceiveChannel
        assert set(seen[kind]["classes"]) == {TCPServer, H11Protocol}
    assert set(seen["websocket"]["streams"]) == {WSStream}
