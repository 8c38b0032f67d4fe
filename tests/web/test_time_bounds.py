"""Every state a connection can be in has a time bound, the one documented.

docs/reference/stack-fixes.md ("Time bounds") lists them; each test holds a
connection in one state over a real socket, with a short setting, and checks
the server closes it after that bound and not long before.

| state                                   | bound                                       |
|-----------------------------------------|---------------------------------------------|
| a request head that never completes     | ``FELIX_KEEP_ALIVE_TIMEOUT``                |
| idle HTTP/1.1 between requests          | ``FELIX_KEEP_ALIVE_TIMEOUT``                |
| idle HTTP/2 (no open stream)            | ``FELIX_KEEP_ALIVE_TIMEOUT``                |
| a request body that never finishes      | ``FELIX_BODY_TIMEOUT`` (then 408)           |
| a refused body still arriving (linger)  | ``FELIX_LINGER_SECONDS``                    |
| an idle WebSocket whose peer is gone    | ``FELIX_PING_INTERVAL + FELIX_PING_TIMEOUT`` |
"""

from __future__ import annotations

import json

import pytest
import trio

from tests.conftest import Server, StartServer, create_workflow, raw_websocket, wait_until

BOUND = 0.5
KEY = "k"


def port_of(server: Server) -> int:
    return int(server.http.rsplit(":", 1)[1])


async def closed_after(server: Server, request: bytes) -> tuple[float, bytes]:
    """Send ``request`` and then nothing; how long until the server closes, and its answer."""
    sock = trio.socket.socket()
    with sock:
        await sock.connect(("127.0.0.1", port_of(server)))
        started = trio.current_time()
        await sock.send(request)
        answer = b""
        with trio.fail_after(BOUND + 5):
            try:
                while chunk := await sock.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass
        return trio.current_time() - started, answer


def within_bound(elapsed: float) -> bool:
    # Not long before the bound (something else would have closed it), and
    # not long after (the bound is what closed it).
    return BOUND * 0.8 <= elapsed <= BOUND + 1.0


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    return await start_server(
        keep_alive_timeout=BOUND,
        body_timeout=BOUND,
        linger_seconds=BOUND,
        api_keys=(KEY,),
        ping_interval=BOUND / 2,
        ping_timeout=BOUND / 2,
    )


async def test_a_request_head_that_never_completes(server: Server) -> None:
    elapsed, answer = await closed_after(server, b"GET /api/v1/workflows HTTP/1.1\r\nHost:")
    assert within_bound(elapsed)
    assert answer == b""


async def test_idle_http11_between_requests(server: Server) -> None:
    elapsed, answer = await closed_after(server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert within_bound(elapsed)
    assert answer.startswith(b"HTTP/1.1 200 ")


async def test_idle_http2(server: Server) -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    elapsed, _ = await closed_after(server, preface)
    assert within_bound(elapsed)


async def test_a_body_that_never_finishes(server: Server) -> None:
    async with server.client(api_key=KEY) as client:
        workflow_id = await create_workflow(client)
    head = (
        f"POST /api/v1/workflows/{workflow_id}/events HTTP/1.1\r\nHost: t\r\n"
        f"X-API-Key: {KEY}\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    elapsed, answer = await closed_after(server, head + b'{"type": "comp')
    assert within_bound(elapsed)
    head_out, _, body = answer.partition(b"\r\n\r\n")
    assert head_out.startswith(b"HTTP/1.1 408 ")
    assert json.loads(body)["error"] == "request_timeout"


async def test_a_refused_body_still_arriving(server: Server) -> None:
    head = (
        b"POST /api/v1/workflows/wf_x/events HTTP/1.1\r\nHost: t\r\n"
        b"X-API-Key: wrong\r\nContent-Length: 8000000\r\n\r\n"
    )
    sock = trio.socket.socket()
    with sock:
        await sock.connect(("127.0.0.1", port_of(server)))
        started = trio.current_time()
        await sock.send(head + b" " * 1000)
        answer = b""
        with trio.fail_after(5):
            while chunk := await sock.recv(65536):
                answer += chunk
        # The answer is whole and the server half-closed at once (lingering).
        assert answer.startswith(b"HTTP/1.1 401 ")
        assert trio.current_time() - started < BOUND * 0.8
        # It still reads the body, until the bound: then a byte more meets a reset.
        with trio.fail_after(BOUND + 5):
            try:
                while True:
                    await sock.send(b" ")
                    await trio.sleep(0.02)
            except (BrokenPipeError, ConnectionResetError):
                pass
        assert within_bound(trio.current_time() - started)


async def test_an_idle_websocket_whose_peer_is_gone(server: Server) -> None:
    async with server.client(api_key=KEY) as client:
        workflow_id = await create_workflow(client)
    sock, _ = await raw_websocket(server.http, f"/api/v1/ws/workflows/{workflow_id}?api_key={KEY}")
    with sock:  # never reads, never answers a ping
        started = trio.current_time()
        await wait_until(lambda: server.hub.connection_count() == 1)
        await wait_until(lambda: server.hub.connection_count() == 0, timeout=BOUND + 2)
        # A round pings, the next drops: within interval + timeout of the first round.
        assert trio.current_time() - started <= BOUND + BOUND / 2 + 1.0
