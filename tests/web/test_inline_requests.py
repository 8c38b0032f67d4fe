"""Plain publishes served in their connection's task (``h11_protocol``, section 7).

The parser takes only the plainest whole request and leaves everything else
to h11; the server answers an inline request byte for byte as Hypercorn's
path does, keeps the keep-alive timeout counting from the last request, and
closes after an answer at shutdown or after an app that failed.
"""

from __future__ import annotations

import re
from typing import Any

import hypercorn.trio
import pytest
import trio

from felix.web.hypercorn import FelixConfig, install
from felix.web.hypercorn.h11_protocol import FelixH11Protocol
from felix.web.hypercorn.plain_request import parse_plain_request, response_bytes
from tests.conftest import Server, StartServer, read_response

BODY = b'{"type": "agent_spawned", "agent_id": "a1", "agent_type": "r", "spawn_time": 0.1}'


def publish(workflow_id: str, *, extra: bytes = b"", body: bytes = BODY) -> bytes:
    return (
        b"POST /api/v1/workflows/%s/events HTTP/1.1\r\nHost: t\r\n%sContent-Length: %d\r\n\r\n"
        % (workflow_id.encode(), extra, len(body))
        + body
    )


# --- the parser -----------------------------------------------------------------------


def test_a_plain_request_is_parsed() -> None:
    request = parse_plain_request(publish("wf_1", extra=b"X-API-Key:  k \r\n"), 16384)
    assert request is not None
    assert (request.method, request.target, request.body) == (
        b"POST",
        b"/api/v1/workflows/wf_1/events",
        BODY,
    )
    assert request.headers == [
        (b"host", b"t"),
        (b"x-api-key", b"k"),
        (b"content-length", str(len(BODY)).encode()),
    ]


@pytest.mark.parametrize(
    "data",
    [
        publish("wf_1")[:-1],  # the body is not all here
        publish("wf_1") + b"GET / HTTP/1.1\r\n",  # pipelined
        publish("wf_1").replace(b"HTTP/1.1", b"HTTP/1.0"),
        publish("wf_1").replace(b"Host: t\r\n", b""),
        publish("wf_1", extra=b"Host: u\r\n"),
        publish("wf_1", extra=b"Content-Length: 3\r\n"),
        publish("wf_1", extra=b"Transfer-Encoding: chunked\r\n"),
        publish("wf_1", extra=b"Expect: 100-continue\r\n"),
        publish("wf_1", extra=b"Connection: close\r\n"),
        publish("wf_1", extra=b"Connection: keep-alive, Upgrade\r\n"),
        publish("wf_1", extra=b"X-A: b\r\n folded\r\n"),
        publish("wf_1", extra=b"X-A: caf\xc3\xa9\r\n"),
        publish("wf_1", extra=b"X-A: b\x00\r\n"),
        publish("wf_1", extra=b"Bad Name: b\r\n"),
        publish("wf_1").replace(b"POST /", b"POST http://t/"),
        publish("wf_1").replace(b"Content-Length: 81", b"Content-Length: +81"),
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: " + b"9" * 19 + b"\r\n\r\n",
    ],
)
def test_anything_unusual_is_left_to_h11(data: bytes) -> None:
    assert parse_plain_request(data, 16384) is None


def test_keep_alive_said_out_loud_is_still_plain() -> None:
    request = parse_plain_request(publish("wf_1", extra=b"Connection: Keep-Alive\r\n"), 16384)
    assert request is not None
    assert (b"connection", b"Keep-Alive") in request.headers


def test_a_head_over_the_limit_is_left_to_h11() -> None:
    assert parse_plain_request(publish("wf_1"), 40) is None


def test_the_answer_is_written_as_h11_writes_it() -> None:
    written = response_bytes(202, [(b"content-type", b"application/json")], b"{}", close=False)
    assert written == (
        b"HTTP/1.1 202 \r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        False,
    )
    closing = response_bytes(200, [(b"Connection", b"Close")], b"", close=False)
    assert closing == (b"HTTP/1.1 200 \r\ncontent-length: 0\r\nconnection: close\r\n\r\n", True)


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (204, []),
        (101, []),
        (200, [(b"content-length", b"3")]),
        (200, [(b"transfer-encoding", b"chunked")]),
        (200, [(b"x-a", b"b\r\nx-injected: 1")]),
    ],
)
def test_an_answer_h11_would_frame_otherwise_is_refused(
    status: int, headers: list[tuple[bytes, bytes]]
) -> None:
    assert response_bytes(status, headers, b"{}", close=False) is None


# --- the server -----------------------------------------------------------------------


@pytest.fixture
def inline_served(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The targets of the requests served inline."""
    served: list[bytes] = []
    original = FelixH11Protocol._felix_serve_inline

    async def recording(self: Any, request: Any) -> None:
        served.append(request.target)
        await original(self, request)

    monkeypatch.setattr(FelixH11Protocol, "_felix_serve_inline", recording)
    return served


async def open_workflow(server: Server) -> str:
    async with server.client() as client:
        answer = await client.post("/api/v1/workflows", json={"task": "t"})
    workflow_id: str = answer.json()["workflow_id"]
    return workflow_id


async def connect(server: Server) -> trio.SocketStream:
    host, port = server.http.removeprefix("http://").split(":")
    return await trio.open_tcp_stream(host, int(port))


async def test_a_plain_publish_is_served_inline_like_any_other(
    start_server: StartServer, inline_served: list[bytes]
) -> None:
    server = await start_server()
    workflow_id = await open_workflow(server)
    async with await connect(server) as stream:
        await stream.send_all(publish(workflow_id))
        inline = await read_response(stream)
        # The same request in a form the parser leaves to h11, on the same connection.
        await stream.send_all(publish(workflow_id, extra=b"Expect: 100-continue\r\n"))
        stock = await read_response(stream)
    assert inline_served == [f"/api/v1/workflows/{workflow_id}/events".encode()]
    strip = re.compile(rb"date: [^\r]*\r\n|_seq\":\d")
    assert strip.sub(b"", inline) == strip.sub(b"", stock)
    assert inline.startswith(b"HTTP/1.1 202 \r\ncontent-type: application/json\r\n")
    assert inline.endswith(b'{"accepted":1,"first_seq":1,"last_seq":1}')


async def test_refusals_are_answered_inline_in_the_contracts_words(
    start_server: StartServer, inline_served: list[bytes]
) -> None:
    server = await start_server()
    workflow_id = await open_workflow(server)
    async with await connect(server) as stream:
        await stream.send_all(publish(workflow_id, body=b"{x}"))
        answer = await read_response(stream)
        await stream.send_all(publish("wf_000000000000"))
        missing = await read_response(stream)
    assert len(inline_served) == 2
    assert answer.startswith(b"HTTP/1.1 422 ")
    assert b'"error":"invalid"' in answer
    assert missing.startswith(b"HTTP/1.1 404 ")


async def test_the_keep_alive_timeout_counts_from_the_last_inline_request(
    start_server: StartServer, inline_served: list[bytes]
) -> None:
    # Real time: the clock must not jump while bytes cross the socket.
    server = await start_server(keep_alive_timeout=1.0)
    workflow_id = await open_workflow(server)
    async with await connect(server) as stream:
        started = trio.current_time()
        for _ in range(4):
            await stream.send_all(publish(workflow_id))
            assert (await read_response(stream)).startswith(b"HTTP/1.1 202 ")
            await trio.sleep(0.5)
        assert trio.current_time() - started > 1.5  # outlived a timeout from the first
        with trio.fail_after(5):
            assert await stream.receive_some() == b""  # then closed for being idle
        closed_after = trio.current_time() - started
    assert len(inline_served) == 4
    assert closed_after >= 2.0  # 1 s after the fourth request, not after the first


async def serve_adapter(nursery: trio.Nursery, app: Any) -> int:
    """Hypercorn with a Felix config serving ``app``, every request inline."""
    install()
    config = FelixConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.felix_inline = lambda method, target: True
    binds: list[str] = await nursery.start(hypercorn.trio.serve, app, config)
    return int(binds[0].rsplit(":", 1)[1])


async def serve_lifespan(receive: Any, send: Any) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def test_an_app_that_fails_inline_gets_a_500_and_the_connection_closes(
    nursery: trio.Nursery,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        assert (await receive())["body"] == b"{}"
        assert (await receive())["type"] == "http.disconnect"
        raise RuntimeError("the app failed")

    port = await serve_adapter(nursery, app)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}")
        answer = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 500 \r\ncontent-length: 0\r\nconnection: close\r\n")
