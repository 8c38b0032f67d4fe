"""Hostile input the Hypercorn adapter answers (issue 15), each over real sockets.

Where the defect can be shown, a plain ``hypercorn.Config`` app in the same
process (which ``felix.web.hypercorn.install()`` leaves on Hypercorn's own
classes) shows it: that test starts failing when upstream fixes it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from typing import Any

import hypercorn.trio
import pytest
import trio
from hypercorn.config import Config
from trio_websocket import WebSocketConnection
from wsproto.events import CloseConnection

import felix.web.hypercorn as adapter
from felix.web.hypercorn.listeners import AcceptErrorFilter
from tests.conftest import (
    Server,
    StartServer,
    create_workflow,
    exchange,
    port_of,
    receive_json,
)

# --- helpers -------------------------------------------------------------------------


async def plain_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A framework-free ASGI app: 200 ``ok`` to any request, without reading the body."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": f"{message['type']}.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def serve_plain(nursery: trio.Nursery, app: Any = plain_app) -> int:
    """Serve ``app`` with a plain Hypercorn Config, Felix's install() in effect."""
    adapter.install()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.keep_alive_timeout = 0.3
    config.accesslog = None
    binds: list[str] = await nursery.start(hypercorn.trio.serve, app, config)
    return port_of(binds[0])


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

# --- a. idle HTTP/2 by prior knowledge -----------------------------------------------------


async def test_idle_http2_prior_knowledge_is_kept_without_the_fix(nursery: trio.Nursery) -> None:
    port = await serve_plain(nursery)
    _, closed = await exchange(port, PREFACE, patience=1.5)  # five keep-alive timeouts
    assert not closed


async def test_idle_http2_prior_knowledge_is_closed(start_server: StartServer) -> None:
    server = await start_server(keep_alive_timeout=0.3)
    started = trio.current_time()
    answer, closed = await exchange(port_of(server.http), PREFACE, patience=5)
    assert closed
    assert trio.current_time() - started < 2
    assert answer.startswith(b"\x00")  # the server's own SETTINGS: HTTP/2 did start


async def test_http2_still_serves_requests(start_server: StartServer) -> None:
    import httpx

    server = await start_server()
    async with httpx.AsyncClient(http1=False, http2=True, base_url=server.http) as client:
        response = await client.get("/healthz")
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200


# --- b. framing RFC 9112 refuses ------------------------------------------------------------

SMUGGLE = (
    b"POST /api/v1/workflows HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
)
TE_IN_HTTP10 = (
    b"POST /api/v1/workflows HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\n{}\r\n0\r\n\r\n"
)


async def test_content_length_with_transfer_encoding_is_served_without_the_fix(
    nursery: trio.Nursery,
) -> None:
    port = await serve_plain(nursery)
    answer, _ = await exchange(port, SMUGGLE, patience=1)
    assert answer.count(b"HTTP/1.1 200") == 2  # the hidden request was answered too


@pytest.mark.parametrize("request_bytes", [SMUGGLE, TE_IN_HTTP10], ids=["cl-and-te", "te-1.0"])
async def test_ambiguous_framing_is_refused_and_closed(
    server: Server, request_bytes: bytes
) -> None:
    answer, closed = await exchange(port_of(server.http), request_bytes, patience=5)
    assert closed
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"] == "bad_request"
    assert b"HTTP/1.1" not in body  # nothing hidden in the body was answered
    async with server.client() as client:
        assert (await client.get("/api/v1/workflows")).json()["total"] == 0  # never reached


async def test_h11_protocol_errors_get_a_json_body(server: Server) -> None:
    answer, closed = await exchange(port_of(server.http), b"GARBAGE\r\n\r\n", patience=5)
    assert closed
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body)["error"] == "bad_request"


# --- c. accept() errors ----------------------------------------------------------------------


def test_the_accept_error_filter_folds_a_second_into_one_line() -> None:
    tick = [0]
    folded = AcceptErrorFilter(interval=1.0, clock=lambda: tick[0] * 0.1)

    def record() -> Any:
        import logging

        return logging.LogRecord(
            "trio.serve_listeners", 40, "", 0, "accept returned %s (%s)", ("EMFILE", "x"), None
        )

    passed = []
    for _ in range(25):  # 2.5 s of trio's retries, one every 0.1 s
        rec = record()
        if folded.filter(rec):
            passed.append(rec.getMessage())
        tick[0] += 1
    assert len(passed) == 3
    assert passed[1].endswith("(9 more since the last such line)")


SERVER_SCRIPT = textwrap.dedent(
    """
    import logging, resource, sys
    import trio, felix
    import felix.web.hypercorn.listeners as listeners
    from felix.web import serve

    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    if sys.argv[1] == "stock":
        listeners.install = lambda: None
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    async def main():
        settings = felix.Settings(host="127.0.0.1", port=0)
        async with trio.open_nursery() as nursery:
            async with felix.open_hub(settings) as hub:
                binds = await nursery.start(serve, hub, settings)
                print(binds[0], flush=True)
                await trio.sleep(float(sys.argv[2]))
                nursery.cancel_scope.cancel()

    trio.run(main)
    """
)


def accept_error_lines(mode: str, seconds: float) -> list[str]:
    """Run a server with 48 file descriptors, exhaust them, and return its accept errors."""
    import socket

    process = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, mode, str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    clients = []
    try:
        for _ in range(80):
            clients.append(socket.create_connection(("127.0.0.1", port_of(url))))
        _, err = process.communicate(timeout=seconds + 30)
    finally:
        for client in clients:
            client.close()
        process.kill()
    return [line for line in err.splitlines() if "accept returned" in line]


async def test_accept_errors_flood_the_log_without_the_fix() -> None:
    lines = await trio.to_thread.run_sync(accept_error_lines, "stock", 2.5)
    assert len(lines) >= 10


async def test_accept_errors_are_logged_once_a_second() -> None:
    started = time.monotonic()
    lines = await trio.to_thread.run_sync(accept_error_lines, "felix", 2.5)
    assert 1 <= len(lines) <= 1 + int(time.monotonic() - started)
    assert "EMFILE" in lines[0]
    assert all("more since the last such line" in line for line in lines)


# --- d. the client's close code is echoed -------------------------------------------------


@pytest.mark.parametrize("code", [1000, 4001])
async def test_a_client_close_is_answered_with_its_own_code(
    server: Server, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    echoed: list[int] = []
    original: Any = WebSocketConnection._handle_close_connection_event

    async def recording(self: WebSocketConnection, event: CloseConnection) -> None:
        echoed.append(event.code)
        await original(self, event)

    monkeypatch.setattr(WebSocketConnection, "_handle_close_connection_event", recording)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
    async with server.open_ws(workflow_id) as ws:
        assert (await receive_json(ws))["type"] == "connected"
        await ws.aclose(code=code, reason="bye")
    assert echoed == [code]
