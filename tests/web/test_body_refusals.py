"""A request refused before its body was read: every client reads the refusal.

``felix.web.hypercorn.h11_protocol`` (no ``100 Continue`` for a body the app
refuses; ``Connection: close`` and a lingering close) and ``tcp_server`` (the
half-close and the time bound). Each client runs in a thread (asyncio's under
``asyncio.run``, curl as a process) against a real server on port 0; each
case is tried several times, fresh and on a connection already used.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import Server, StartServer, create_workflow

KEY = "the-key"
MIB = 1024 * 1024
SIZES = {"1.1MB": 1_100_000, "8MiB": 8 * MIB}
TRIES = 3

#: (the status, the error code, how to make the request refused).
CASES = {
    "413": (413, "too_large"),
    "401": (401, "unauthorized"),
    "404": (404, "workflow_not_found"),
}

Answer = tuple[int, dict[str, Any]]


def _target(server: Server, workflow_id: str, case: str) -> tuple[str, dict[str, str]]:
    key = "wrong-key" if case == "401" else KEY
    if case == "404":
        workflow_id = "wf_unknown"
    url = f"{server.http}/api/v1/workflows/{workflow_id}/events"
    return url, {"X-API-Key": key, "Content-Type": "application/json"}


def _asyncio_client(url: str, headers: dict[str, str], body: bytes, reuse: bool) -> Answer:
    async def main() -> Answer:
        async with httpx.AsyncClient(timeout=30) as client:
            if reuse:
                base = url.split("/api/", maxsplit=1)[0]
                assert (await client.get(f"{base}/healthz")).status_code == 200
            response = await client.post(url, content=body, headers=headers)
            return response.status_code, response.json()

    return asyncio.run(main())


def _sync_client(url: str, headers: dict[str, str], body: bytes, reuse: bool) -> Answer:
    with httpx.Client(timeout=30) as client:
        if reuse:
            assert client.get(url.split("/api/", maxsplit=1)[0] + "/healthz").status_code == 200
        response = client.post(url, content=body, headers=headers)
        return response.status_code, response.json()


def _curl(url: str, headers: dict[str, str], body: bytes, reuse: bool) -> Answer:
    with tempfile.NamedTemporaryFile() as file:
        file.write(body)
        file.flush()
        command = ["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}"]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        command += ["--data-binary", f"@{file.name}", url]
        done = subprocess.run(command, capture_output=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    text, _, status = done.stdout.decode().rpartition("\n")
    return int(status), json.loads(text)


CLIENTS: dict[str, Callable[[str, dict[str, str], bytes, bool], Answer]] = {
    "asyncio-httpx": _asyncio_client,
    "sync-httpx": _sync_client,
    "curl": _curl,
}


@pytest.fixture
async def refusing_server(start_server: StartServer) -> tuple[Server, str]:
    server = await start_server(api_keys=(KEY,), max_body_bytes=MIB)
    async with server.client(api_key=KEY) as client:
        workflow_id = await create_workflow(client)
    return server, workflow_id


async def _try(
    client: str, server: Server, workflow_id: str, case: str, *, size: int, reuse: bool
) -> None:
    if client == "curl" and shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    url, headers = _target(server, workflow_id, case)
    body = b"[" + b" " * (size - 2) + b"]"
    status, error = CASES[case]
    for _ in range(TRIES):
        answer = await trio.to_thread.run_sync(CLIENTS[client], url, headers, body, reuse)
        assert answer[0] == status, answer
        assert answer[1]["error"] == error, answer


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("client", CLIENTS)
async def test_a_body_too_large_gets_its_413(
    refusing_server: tuple[Server, str], client: str, size: int
) -> None:
    server, workflow_id = refusing_server
    await _try(client, server, workflow_id, "413", size=size, reuse=False)


@pytest.mark.parametrize("client", ["asyncio-httpx", "sync-httpx"])
async def test_on_a_connection_already_used_too(
    refusing_server: tuple[Server, str], client: str
) -> None:
    server, workflow_id = refusing_server
    for size in SIZES.values():
        await _try(client, server, workflow_id, "413", size=size, reuse=True)


@pytest.mark.parametrize("case", ["401", "404"])
@pytest.mark.parametrize("client", CLIENTS)
async def test_other_early_refusals_are_read_too(
    refusing_server: tuple[Server, str], client: str, case: str
) -> None:
    server, workflow_id = refusing_server
    await _try(client, server, workflow_id, case, size=8 * MIB, reuse=False)


async def test_a_429_before_the_body_is_read_too(start_server: StartServer) -> None:
    server = await start_server(api_keys=(KEY,), rate_publish=0.001, rate_publish_burst=1)
    async with server.client(api_key=KEY) as client:
        workflow_id = await create_workflow(client)
        accepted = await client.post(
            f"/api/v1/workflows/{workflow_id}/events", json={"type": "completed"}
        )
        assert accepted.status_code == 202
    url, headers = _target(server, workflow_id, "413")
    for _ in range(TRIES):
        status, error = await trio.to_thread.run_sync(
            _asyncio_client, url, headers, b" " * (8 * MIB), False
        )
        assert (status, error["error"]) == (429, "rate_limited")
    path = f"/api/v1/workflows/{workflow_id}/events"
    answer = await _head(int(server.http.rsplit(":", 1)[1]), _expecting(path, 8 * MIB))
    assert answer.startswith(b"HTTP/1.1 429 "), answer  # and no 100 Continue before it


async def test_a_chunked_body_refused_half_way_is_read_too(
    refusing_server: tuple[Server, str],
) -> None:
    server, workflow_id = refusing_server
    url, headers = _target(server, workflow_id, "413")

    def chunked() -> Answer:
        async def body() -> Any:
            for _ in range(8):
                yield b" " * MIB

        async def main() -> Answer:
            async with httpx.AsyncClient(timeout=30) as client:
                response = await client.post(url, content=body(), headers=headers)
                return response.status_code, response.json()

        return asyncio.run(main())

    for _ in range(TRIES):
        status, error = await trio.to_thread.run_sync(chunked)
        assert (status, error["error"]) == (413, "too_large")


# --- 100 Continue ------------------------------------------------------------------------


async def _head(port: int, request: bytes, patience: float = 5.0) -> bytes:
    """Send a request head; return what the server answers first (up to a blank line)."""
    sock = trio.socket.socket()
    with sock:
        await sock.connect(("127.0.0.1", port))
        await sock.send(request)
        answer = b""
        with trio.move_on_after(patience):
            while b"\r\n\r\n" not in answer:
                chunk = await sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        return answer


def _expecting(path: str, length: int, key: str = KEY) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()


async def test_no_100_continue_before_a_refusal(refusing_server: tuple[Server, str]) -> None:
    server, workflow_id = refusing_server
    port = int(server.http.rsplit(":", 1)[1])
    path = f"/api/v1/workflows/{workflow_id}/events"
    for request in (
        _expecting(path, 2 * MIB),  # 413 by Content-Length
        _expecting(path, 10, key="wrong"),  # 401
        _expecting("/api/v1/workflows/wf_nope/events", 10),  # 404
    ):
        answer = await _head(port, request)
        assert answer.startswith(b"HTTP/1.1 4"), answer
        assert b" 100 " not in answer.split(b"\r\n")[0]


async def test_100_continue_when_the_app_reads_the_body(
    refusing_server: tuple[Server, str],
) -> None:
    server, workflow_id = refusing_server
    port = int(server.http.rsplit(":", 1)[1])
    body = b'{"type": "completed"}'
    sock = trio.socket.socket()
    with sock:
        await sock.connect(("127.0.0.1", port))
        await sock.send(_expecting(f"/api/v1/workflows/{workflow_id}/events", len(body)))
        with trio.fail_after(5):
            assert (await sock.recv(65536)).startswith(b"HTTP/1.1 100 ")
            await sock.send(body)
            assert (await sock.recv(65536)).startswith(b"HTTP/1.1 202 ")
