"""Every Server-Sent Events line of the contract, with httpx streaming over real sockets."""

from __future__ import annotations

import gc
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import h11
import httpx
import pytest
import trio

from felix._core.events import Frame, sse_message
from felix.web.hypercorn.tcp_server import FelixTCPServer
from tests.conftest import (
    Server,
    StartServer,
    create_workflow,
    publish,
    receive_json,
    task_names,
    wait_until,
)

RUNNING = {"type": "workflow_status", "status": "running"}
KEY = "sse-test-key"


def synthesis(i: int, content: str = "draft") -> dict[str, Any]:
    return {"type": "synthesis", "content": f"{content} {i}"}


@attrs.define
class Message:
    """One SSE message as an ``EventSource`` would dispatch it."""

    event: str
    data: str
    id: str | None = None
    retry: int | None = None

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed


@attrs.define
class Stream:
    """A client of one ``text/event-stream`` response over a raw socket, parsed as
    the WHATWG rules say (h11 reads the HTTP; httpx's nested stream iterators
    cannot be closed half-way without leaking)."""

    sock: trio.SocketStream
    conn: h11.Connection
    status: int = 0
    headers: dict[str, str] = attrs.field(factory=dict)
    comments: list[str] = attrs.field(factory=list)
    _buffer: str = ""
    _ended: bool = False

    async def _event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if isinstance(event, h11.Event):
                return event
            self.conn.receive_data(await self.sock.receive_some(65536))

    async def start(self) -> None:
        with trio.fail_after(5):
            response = await self._event()
        assert isinstance(response, h11.Response)
        self.status = response.status_code
        self.headers = {k.decode(): v.decode() for k, v in response.headers}

    async def line(self) -> str | None:
        """The next line of the body; None at its end."""
        while "\n" not in self._buffer:
            if self._ended:
                return None
            event = await self._event()
            if isinstance(event, h11.Data):
                self._buffer += bytes(event.data).decode()
            else:
                assert isinstance(event, h11.EndOfMessage | h11.ConnectionClosed), event
                self._ended = True
        line, self._buffer = self._buffer.split("\n", 1)
        return line

    async def next(self) -> Message | None:
        """The next message; None at the end of the response. Bounded in time."""
        fields: dict[str, str] = {}
        data: list[str] = []
        with trio.fail_after(5):
            while (line := await self.line()) is not None:
                if line == "":
                    if data or fields:
                        retry = fields.get("retry")
                        return Message(
                            fields.get("event", "message"),
                            "\n".join(data),
                            fields.get("id"),
                            int(retry) if retry is not None else None,
                        )
                    continue
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                else:
                    fields[name] = value
        return None

    async def until_end(self) -> list[Message]:
        seen: list[Message] = []
        while (message := await self.next()) is not None:
            seen.append(message)
        return seen


@asynccontextmanager
async def open_sse(
    server: Server, path: str, headers: dict[str, str] | None = None, *, version: str = "1.1"
) -> AsyncIterator[Stream]:
    """GET ``path`` and stream the answer; the socket closes on leaving.

    HTTP/1.1 gets a chunked body, which Felix writes straight to the socket;
    HTTP/1.0 (no chunks) takes the ASGI path that HTTP/2 and TLS take too.
    """
    host, port = server.http.rsplit("//", 1)[1].rsplit(":", 1)
    sock = await trio.open_tcp_stream(host, int(port))
    async with sock:
        conn = h11.Connection(h11.CLIENT)
        head = [("Host", f"{host}:{port}"), ("Accept", "text/event-stream")]
        head += list((headers or {}).items())
        data = conn.send(h11.Request(method="GET", target=path, headers=head))
        if version != "1.1":  # h11 sends only HTTP/1.1; it reads a 1.0 answer all the same
            data = data.replace(b" HTTP/1.1\r\n", f" HTTP/{version}\r\n".encode(), 1)
        await sock.send_all(data)
        await sock.send_all(conn.send(h11.EndOfMessage()))
        stream = Stream(sock, conn)
        await stream.start()
        yield stream


def sse_path(workflow_id: str, query: str = "") -> str:
    return f"/api/v1/sse/workflows/{workflow_id}" + (f"?{query}" if query else "")


SYSTEM = "/api/v1/sse/system/events"


async def test_the_stream_head_retry_connected_then_events(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    async with (
        open_sse(server, sse_path(workflow_id)) as stream,
        server.open_ws(workflow_id) as ws,
    ):
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.headers["x-accel-buffering"] == "no"
        connected = await stream.next()
        assert connected is not None
        assert connected.retry == server.settings.sse_retry_ms
        assert (connected.event, connected.id) == ("connected", None)
        body = connected.json()
        assert body["type"] == "connected"
        assert body["workflow_id"] == workflow_id
        assert (body["status"], body["last_seq"]) == ("pending", 0)
        assert body["connection_id"].startswith("conn_")
        assert "recovered" not in body
        await receive_json(ws)
        await publish(client, workflow_id, [RUNNING, synthesis(1)])
        for seq in (1, 2):
            message = await stream.next()
            assert message is not None
            frame = await ws.get_message()
            # The very text of the WebSocket frame, with its seq as the id.
            assert message.data == frame
            assert message.id == str(seq)
            assert message.event == message.json()["type"]


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_both_write_paths_stream_alike(start_server: StartServer, version: str) -> None:
    server = await start_server(ping_interval=0.05)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        async with open_sse(server, sse_path(workflow_id), version=version) as stream:
            assert stream.status == 200
            assert ("transfer-encoding" in stream.headers) == (version == "1.1")
            connected = await stream.next()
            assert connected is not None
            assert connected.retry == server.settings.sse_retry_ms
            assert connected.event == "connected"
            with trio.fail_after(5):
                while await stream.line() != ": ping":
                    pass
            await publish(client, workflow_id, [RUNNING, synthesis(1), {"type": "completed"}])
            seen = await stream.until_end()
    assert [(m.event, m.id) for m in seen] == [
        ("workflow_status", "1"),
        ("synthesis", "2"),
        ("completed", "3"),
        ("close", "3"),
    ]


def test_a_frame_is_one_sse_message_built_once() -> None:
    frame = Frame.of("synthesis", '{"type":"synthesis","seq":7}', seq=7)
    assert frame.sse == b'id: 7\nevent: synthesis\ndata: {"type":"synthesis","seq":7}\n\n'
    assert frame.sse is frame.sse  # kept: every subscriber sends the same bytes
    # The same message as one HTTP/1.1 chunk, for the direct writer.
    assert frame.sse_chunk == b"%x\r\n%b\r\n" % (len(frame.sse), frame.sse)
    assert frame.sse_chunk is frame.sse_chunk
    assert Frame.of("note", "{}").sse == b"event: note\ndata: {}\n\n"
    # Text with line breaks (never Felix's JSON) still makes one message.
    assert sse_message("x", "a\r\nb") == b"event: x\ndata: a\ndata: b\n\n"


@pytest.mark.parametrize(("after", "expected"), [(0, [1, 2, 3]), (2, [3]), (3, [])])
async def test_after_replays_then_goes_live(
    server: Server, client: httpx.AsyncClient, after: int, expected: list[int]
) -> None:
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, [RUNNING, synthesis(1), synthesis(2)])
    async with open_sse(server, sse_path(workflow_id, f"after={after}")) as stream:
        connected = await stream.next()
        assert connected is not None
        assert connected.json()["recovered"] is True
        for seq in expected:
            message = await stream.next()
            assert message is not None
            assert message.id == str(seq)
        await publish(client, workflow_id, synthesis(3))
        message = await stream.next()
        assert message is not None
        assert message.id == "4"


async def test_last_event_id_resumes_and_wins_over_after(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, [RUNNING, synthesis(1), synthesis(2)])
    headers = {"Last-Event-ID": "2"}
    async with open_sse(server, sse_path(workflow_id, "after=0"), headers=headers) as stream:
        connected = await stream.next()
        assert connected is not None
        assert connected.json()["recovered"] is True
        message = await stream.next()
        assert message is not None
        assert message.id == "3"  # not 1 and 2 again


async def test_resume_past_the_history_is_not_recovered(start_server: StartServer) -> None:
    server = await start_server(history_size=3)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        await publish(client, workflow_id, [RUNNING] + [synthesis(i) for i in range(4)])
        headers = {"Last-Event-ID": "1"}
        async with open_sse(server, sse_path(workflow_id), headers=headers) as stream:
            connected = await stream.next()
            assert connected is not None
            assert connected.json()["recovered"] is False
            ids = []
            for _ in range(3):
                message = await stream.next()
                assert message is not None
                ids.append(message.id)
            assert ids == ["3", "4", "5"]


async def test_types_filter_then_close_1000_and_the_end(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    async with open_sse(server, sse_path(workflow_id, "types=synthesis")) as stream:
        assert (await stream.next()) is not None
        await publish(client, workflow_id, [RUNNING, synthesis(1), RUNNING, {"type": "completed"}])
        seen = await stream.until_end()
    assert [message.event for message in seen] == ["synthesis", "close"]
    close = seen[-1]
    assert close.json() == {"code": 1000, "reason": "workflow completed"}
    # The workflow's last seq, though the filter held the terminal event back:
    # an EventSource that reconnects anyway sends it and gets the 204.
    assert close.id == "4"
    response = await client.get(sse_path(workflow_id), headers={"Last-Event-ID": close.id})
    assert response.status_code == 204
    assert response.content == b""


async def test_a_finished_workflow_answers_204_only_at_its_end(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, [RUNNING, synthesis(1), {"type": "completed"}])
    for last_id in ("3", "9"):
        response = await client.get(sse_path(workflow_id), headers={"Last-Event-ID": last_id})
        assert response.status_code == 204
    # Before its end, the rest and then the close.
    async with open_sse(server, sse_path(workflow_id), headers={"Last-Event-ID": "1"}) as stream:
        seen = await stream.until_end()
    assert [(m.event, m.id) for m in seen] == [
        ("connected", None),
        ("synthesis", "2"),
        ("completed", "3"),
        ("close", "3"),
    ]
    # Without a Last-Event-ID, a finished workflow's stream is its connected and close.
    async with open_sse(server, sse_path(workflow_id)) as stream:
        assert [m.event for m in await stream.until_end()] == ["connected", "close"]


async def test_system_stream_broadcasts_have_no_id(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    async with open_sse(server, SYSTEM) as stream:
        connected = await stream.next()
        assert connected is not None
        assert connected.json()["workflow_id"] is None
        assert "status" not in connected.json()
        await client.post("/api/v1/broadcast", json={"type": "maintenance", "note": "soon"})
        broadcast = await stream.next()
        assert broadcast is not None
        assert (broadcast.event, broadcast.id) == ("maintenance", None)
        assert broadcast.json()["note"] == "soon"
        await publish(client, workflow_id, RUNNING)
        event = await stream.next()
        assert event is not None
        assert (event.event, event.id) == ("workflow_status", "1")
        assert event.json()["workflow_id"] == workflow_id


async def test_ping_comments_at_the_ping_interval(start_server: StartServer) -> None:
    server = await start_server(ping_interval=0.05)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        async with open_sse(server, sse_path(workflow_id)) as stream:
            assert (await stream.next()) is not None
            # Waits for the comments themselves; pings go out only while idle.
            with trio.fail_after(5):
                while await stream.line() != ": ping":
                    pass
            await publish(client, workflow_id, RUNNING)
            message = await stream.next()
            assert message is not None
            assert message.id == "1"


async def test_shutdown_closes_with_1001(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    async with open_sse(server, sse_path(workflow_id)) as stream:
        assert (await stream.next()) is not None
        await server.hub.shutdown(grace=1)
        seen = await stream.until_end()
    assert [(m.event, m.json()) for m in seen] == [
        ("close", {"code": 1001, "reason": "server shutting down"})
    ]
    assert seen[0].id is None


async def test_a_client_that_leaves_ends_the_stream(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    async with open_sse(server, sse_path(workflow_id)) as stream:
        assert (await stream.next()) is not None
        assert server.hub.connection_count(workflow_id) == 1
    # Closing the socket ends the stream: the server lets go at once, and no
    # task of the stream is left behind.
    await wait_until(lambda: server.hub.connection_count() == 0)
    await wait_until(lambda: not [name for name in task_names() if "edge.sse" in name])


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux only")
async def test_a_peer_that_stops_acknowledging_is_dropped(start_server: StartServer) -> None:
    # No pongs on an event stream: the kernel drops a connection whose sent
    # bytes (a ": ping" at least every interval) go unacknowledged this long.
    server = await start_server(ping_interval=2.0, ping_timeout=1.5)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        async with open_sse(server, sse_path(workflow_id)) as stream:
            assert (await stream.next()) is not None
            ours = stream.sock.socket.getsockname()
            (served,) = [sock for sock in _server_sockets() if _peer(sock) == ours]
            timeout = served.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
    assert timeout == 3500


def _server_sockets() -> list[trio.socket.SocketType]:
    """The sockets of every connection handler alive (earlier tests' ones too)."""
    handlers = [obj for obj in gc.get_objects() if isinstance(obj, FelixTCPServer)]
    return [handler.stream.socket for handler in handlers]


def _peer(sock: trio.socket.SocketType) -> Any:
    try:
        return sock.getpeername()
    except OSError:
        return None  # closed


async def test_head_answers_the_stream_head_without_a_stream(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    response = await client.head(sse_path(workflow_id))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.content == b""
    await wait_until(lambda: server.hub.connection_count() == 0)


async def test_over_the_connection_limit_is_503(start_server: StartServer) -> None:
    server = await start_server(max_connections=1)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        async with open_sse(server, sse_path(workflow_id)) as stream:
            assert stream.status == 200
            assert await refused(client, sse_path(workflow_id)) == (503, "over_capacity")
            # The refused request holds nothing.
            assert server.hub.connection_count() == 1


BIG = "x" * 8000


async def test_slow_consumer_gets_close_4008_and_resumes_without_a_duplicate(
    start_server: StartServer,
) -> None:
    server = await start_server(subscriber_buffer_bytes=128 * 1024, history_size=5000)
    async with server.client() as client:
        workflow_id = await create_workflow(client)
        async with open_sse(server, sse_path(workflow_id)) as stream:
            assert (await stream.next()) is not None
            published = 0
            # This client reads nothing: kernel buffers fill, then its backlog
            # passes the budget and the next publish ends it.
            with trio.fail_after(30):
                while server.hub.actor_statistics()[0]["subscribers"] == 1:
                    batch = [synthesis(published + i, BIG) for i in range(10)]
                    await publish(client, workflow_id, batch)
                    published += 10
            seen = await stream.until_end()
        close = seen.pop()
        assert (close.event, close.json(), close.id) == (
            "close",
            {"code": 4008, "reason": "slow consumer"},
            None,
        )
        ids = [int(message.id or 0) for message in seen]
        assert ids == list(range(1, len(ids) + 1))
        headers = {"Last-Event-ID": str(ids[-1])}
        async with open_sse(server, sse_path(workflow_id), headers=headers) as stream:
            connected = await stream.next()
            assert connected is not None
            assert connected.json()["recovered"] is True
            rest = []
            for _ in range(published - len(ids)):
                message = await stream.next()
                assert message is not None
                rest.append(int(message.id or 0))
        assert ids + rest == list(range(1, published + 1))


# --- refusals: before any stream byte, the WebSocket's statuses and JSON bodies ----------


async def refused(client: httpx.AsyncClient, path: str, **kwargs: Any) -> tuple[int, str]:
    response = await client.get(path, **kwargs)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) >= {"error", "message"}
    return response.status_code, body["error"]


async def test_refusals_in_development_mode(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    assert await refused(client, sse_path("wf_nope")) == (404, "workflow_not_found")
    status, _ = await refused(client, sse_path("bad%20id"))
    assert status == 404
    assert (await refused(client, sse_path(workflow_id, "after=x")))[0] == 400
    assert (await refused(client, sse_path(workflow_id, "types=a%20b")))[0] == 400
    assert (await refused(client, sse_path(workflow_id, "after=1&after=2")))[0] == 400
    bad_id = {"Last-Event-ID": "seven"}
    assert (await refused(client, sse_path(workflow_id), headers=bad_id))[0] == 400
    assert (await refused(client, f"{SYSTEM}?after=0"))[0] == 400
    response = await client.post(sse_path(workflow_id))
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]


async def test_credentials_as_on_the_websocket(start_server: StartServer) -> None:
    server = await start_server(api_keys=(KEY,))
    async with server.client(KEY) as keyed, server.client() as anonymous:
        workflow_id = await create_workflow(keyed)
        other = await create_workflow(keyed)
        # 401 before anything else: an unknown workflow is not revealed.
        assert await refused(anonymous, sse_path(workflow_id)) == (401, "unauthorized")
        assert (await refused(anonymous, sse_path("wf_nope")))[0] == 401
        assert (await refused(anonymous, sse_path(workflow_id, "api_key=wrong")))[0] == 401
        assert (await refused(anonymous, SYSTEM))[0] == 401
        token = (await keyed.post(f"/api/v1/workflows/{workflow_id}/tokens", json={})).json()
        for path in (
            sse_path(workflow_id, f"api_key={KEY}"),
            sse_path(workflow_id, f"token={token['token']}"),
            f"{SYSTEM}?api_key={KEY}",
        ):
            async with open_sse(server, path) as stream:
                assert stream.status == 200
                message = await stream.next()
                assert message is not None
                assert message.event == "connected"
        async with open_sse(server, sse_path(workflow_id), {"X-API-Key": KEY}) as stream:
            assert stream.status == 200
        # A token opens its own workflow's stream and nothing else.
        foreign = sse_path(other, f"token={token['token']}")
        assert (await refused(anonymous, foreign))[0] == 401
        assert (await refused(anonymous, f"{SYSTEM}?token={token['token']}"))[0] == 401


async def test_refusals_are_counted_with_the_handshakes(start_server: StartServer) -> None:
    server = await start_server(api_keys=(KEY,))
    async with server.client(KEY) as keyed, server.client() as anonymous:
        assert (await refused(anonymous, sse_path("wf_nope")))[0] == 401
        assert (await refused(keyed, sse_path("wf_nope")))[0] == 404
        assert (await refused(keyed, f"{SYSTEM}?after=1"))[0] == 400
    assert server.hub.counters.handshakes_refused == {
        "unauthorized": 1,
        "workflow_not_found": 1,
        "bad_request": 1,
    }


async def test_origin_and_rate_limit_refusals(start_server: StartServer) -> None:
    server = await start_server(
        api_keys=(KEY,),
        allowed_origins=("https://app.example",),
        rate_handshake=0.001,
        rate_handshake_burst=2,
    )
    async with server.client(KEY) as keyed:
        workflow_id = await create_workflow(keyed)
        evil = {"Origin": "https://evil.example"}
        assert (await refused(keyed, sse_path(workflow_id), headers=evil))[0] == 403
        async with open_sse(server, sse_path(workflow_id), {"X-API-Key": KEY}) as stream:
            assert stream.status == 200
        response = await keyed.get(sse_path(workflow_id))
        assert response.status_code == 429
        assert response.json()["error"] == "rate_limited"
        assert "retry-after" in response.headers


async def test_shutting_down_refuses_with_503(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    await server.hub.shutdown(grace=0)
    assert (await refused(client, sse_path(workflow_id)))[0] == 503


async def test_the_dashboard_session_opens_the_system_stream(start_server: StartServer) -> None:
    server = await start_server(api_keys=(KEY,))
    async with server.client() as browser:
        signed_in = await browser.post(
            "/dashboard/session",
            headers={"X-API-Key": KEY, "X-Felix-Dashboard": "1", "Origin": server.http},
        )
        assert signed_in.status_code in (200, 201, 204), signed_in.text
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
        same_origin = {"Sec-Fetch-Site": "same-origin", "Cookie": cookie}
        async with open_sse(server, SYSTEM, headers=same_origin) as stream:
            assert stream.status == 200
        # A cross-site page's request does not count the cookie.
        cross_site = {"Sec-Fetch-Site": "cross-site", "Cookie": cookie}
        assert (await refused(browser, SYSTEM, headers=cross_site))[0] == 401
