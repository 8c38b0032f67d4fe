"""Shared fixtures: a real Felix server on port 0, real HTTP and WebSocket clients."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

import felix
from felix._patches import trio_websocket_leaks, trio_websocket_pong
from felix.web import serve

# Refused handshakes and server-side closes would otherwise leak a client
# socket into a ResourceWarning,
# which filterwarnings=error turns into a failure far from its cause.
trio_websocket_leaks.install()
trio_websocket_pong.install()

pytest_plugins: list[str] = []


@attrs.define
class Server:
    """A Felix server started for one test."""

    hub: felix.Hub
    settings: felix.Settings
    http: str
    ws: str

    def client(self, api_key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client for this server (with the key, if given)."""
        headers = {"X-API-Key": api_key} if api_key else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.AsyncClient(base_url=self.http, headers=headers, **kwargs)

    def ws_url(self, workflow_id: str, query: str = "") -> str:
        """The WebSocket URL of a workflow, with an optional query string."""
        url = f"{self.ws}/api/v1/ws/workflows/{workflow_id}"
        return f"{url}?{query}" if query else url

    def open_ws(self, workflow_id: str, query: str = "", **kwargs: Any) -> Any:
        """Open a trio-websocket client on a workflow's stream."""
        return open_websocket_url(self.ws_url(workflow_id, query), **kwargs)


async def run_hub(
    settings: felix.Settings, *, task_status: trio.TaskStatus[felix.Hub] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run a hub until cancelled; ``nursery.start`` returns it once it is open."""
    async with felix.open_hub(settings) as hub:
        task_status.started(hub)
        await trio.sleep_forever()


StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> StartServer:
    """Start a server with settings overridden by keyword; cancelled after the test."""

    async def start(**overrides: Any) -> Server:
        settings = felix.Settings(host="127.0.0.1", port=0, **overrides)
        hub: felix.Hub = await nursery.start(run_hub, settings)
        binds: list[str] = await nursery.start(serve, hub, settings)
        http = binds[0]
        return Server(hub=hub, settings=settings, http=http, ws=http.replace("http://", "ws://"))

    return start


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    """A server with default settings and no API key (development mode)."""
    return await start_server()


@pytest.fixture
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of :func:`server`."""
    async with server.client() as http:
        yield http


async def create_workflow(http: httpx.AsyncClient, **body: Any) -> str:
    """Create a workflow over REST and return its id."""
    response = await http.post("/api/v1/workflows", json=body)
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["workflow_id"]
    return workflow_id


async def publish(http: httpx.AsyncClient, workflow_id: str, events: Any) -> httpx.Response:
    """POST one event or a batch to a workflow."""
    return await http.post(f"/api/v1/workflows/{workflow_id}/events", json=events)


async def receive_json(ws: WebSocketConnection) -> dict[str, Any]:
    """The next message of a WebSocket, parsed."""
    import json

    # Bounded, so a frame that never comes fails the test instead of hanging it.
    with trio.fail_after(5):
        message = await ws.get_message()
    assert isinstance(message, str)
    parsed: dict[str, Any] = json.loads(message)
    return parsed


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition the server reaches on its own (e.g. after a peer vanished).

    Checks every 5 ms and fails loudly after ``timeout`` seconds; used only
    where the event comes from the kernel (a socket closing), which no trio
    primitive of the test can observe.
    """
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


def _all_tasks() -> list[trio.lowlevel.Task]:
    def walk(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
        tasks = [task]
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                tasks += walk(child)
        return tasks

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


def task_names() -> list[str]:
    """The names of every task alive in this Trio run."""
    return [task.name for task in _all_tasks()]


def _serves_a_websocket(task: trio.lowlevel.Task) -> bool:
    if "felix.web.edge.websocket" in task.name or "WSStream" in task.name:
        return True
    # Each connection's app runs in Hypercorn's _handle, which holds the ASGI scope.
    frame = getattr(task.coro, "cr_frame", None)
    if task.name != "hypercorn.trio.task_group._handle" or frame is None:
        return False
    scope = frame.f_locals.get("scope")
    return isinstance(scope, dict) and scope.get("type") == "websocket"


def websocket_tasks() -> list[str]:
    """Server-side tasks that belong to a WebSocket connection."""
    return [task.name for task in _all_tasks() if _serves_a_websocket(task)]


async def raw_websocket(
    server_url: str, path: str, *, headers: str = "", rcvbuf: int | None = None
) -> tuple[trio.socket.SocketType, bytes]:
    """Open a WebSocket by hand and return the socket and the handshake answer.

    For peers no library will play: one that stops reading, one that never
    answers pings. The socket is the caller's to close.
    """
    host, port = server_url.rsplit("//", 1)[1].rsplit(":", 1)
    sock = trio.socket.socket()
    if rcvbuf is not None:
        import socket as stdlib_socket

        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, rcvbuf)
    await sock.connect((host, int(port)))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{headers}\r\n"
    )
    await sock.send(request.encode())
    answer = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in answer:
            chunk = await sock.recv(1)
            assert chunk, "the server closed during the handshake"
            answer += chunk
    return sock, answer


# --- raw HTTP over a plain socket ------------------------------------------------------


def port_of(url: str) -> int:
    """The port of ``http://host:port``."""
    return int(url.rsplit(":", 1)[1])


async def exchange(port: int, request: bytes, patience: float = 5) -> tuple[bytes, bool]:
    """Send raw bytes; return everything answered and whether the server closed in time."""
    sock = trio.socket.socket()
    with sock:
        await sock.connect(("127.0.0.1", port))
        await sock.send(request)
        answer = b""
        with trio.move_on_after(patience):
            while chunk := await sock.recv(65536):
                answer += chunk
            return answer, True
        return answer, False


async def read_response(stream: trio.SocketStream) -> bytes:
    """One whole response with a Content-Length, from a keep-alive connection."""
    answer = b""
    with trio.fail_after(5):
        while True:
            head, found, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if found and length and len(body) >= int(length[1]):
                return answer
            chunk = await stream.receive_some()
            assert chunk, f"closed after {answer!r}"
            answer += chunk
