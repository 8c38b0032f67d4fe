"""The bench's lean Node clients against a real server.

The bench (``nox -s bench``) reads events with its own minimal WebSocket, Server-Sent
Events and HTTP clients (``bench/node/lean-ws.js``, ``lean-sse.js``, ``lean-http.js``) so
that the load generator is not the bottleneck. Every correctness check of the bench rests
on them, so they are checked here on what the bench does not exercise: each size of the
frame length field, several frames in one read, a masked client frame, a message over
several reads, ``data:`` inside a string, comments, the server's close code and a refused
handshake or stream.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Final

import pytest
import trio

from tests.conftest import StartServer, create_workflow

pytestmark = pytest.mark.node

SCRIPT: Final = Path(__file__).resolve().parent.parent / "node" / "bench_clients.js"


async def test_lean_clients_read_every_frame_and_the_close(start_server: StartServer) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is needed: install Node.js 18 or newer to run this test")
    server = await start_server(max_event_bytes=256 * 1024)
    async with server.client() as http:
        workflow_id = await create_workflow(http)
    with trio.fail_after(20):
        done = await trio.run_process(
            [node, str(SCRIPT), server.http, workflow_id, "missing-workflow"],
            capture_stdout=True,
            check=False,
        )
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert done.returncode == 0, lines
    assert not [line for line in lines if "error" in line], lines
    assert lines[0] == {"refused": 404}
    assert lines[1]["type"] == "connected"
    assert lines[2] == {"text": "pong"}
    statuses = [line["status"] for line in lines if "status" in line]
    assert statuses == [202] * 5
    events = [line for line in lines if line.get("seq") is not None and "status" not in line]
    assert [event["seq"] for event in events] == list(range(1, 8))
    # The pong had a 7-bit length; these a 16-bit and a 64-bit one.
    sizes = [event["bytes"] for event in events[1:3]]
    assert 126 <= sizes[0] < 65536 < sizes[1]
    assert [event["type"] for event in events[3:]] == ["synthesis"] * 3 + ["workflow_status"]
    assert not any(event["binary"] for event in events)
    assert lines[-1] == {"close": 1000, "reason": "workflow cancelled"}


SSE_SCRIPT: Final = Path(__file__).resolve().parent.parent / "node" / "bench_sse_client.js"


async def test_lean_sse_client_reads_every_message_and_the_close(
    start_server: StartServer,
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is needed: install Node.js 18 or newer to run this test")
    # Pings while the events come: comments between messages are skipped.
    server = await start_server(max_event_bytes=256 * 1024, ping_interval=0.01)
    async with server.client() as http:
        workflow_id = await create_workflow(http)
    with trio.fail_after(20):
        done = await trio.run_process(
            [node, str(SSE_SCRIPT), server.http, workflow_id, "missing-workflow"],
            capture_stdout=True,
            check=False,
        )
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert done.returncode == 0, lines
    assert not [line for line in lines if "error" in line], lines
    assert lines[0] == {"refused": 404}
    assert lines[1]["type"] == "connected"
    assert [line["status"] for line in lines if "status" in line] == [202] * 4
    events = [line for line in lines if line.get("seq") is not None]
    assert [event["seq"] for event in events] == list(range(1, 7))
    assert events[0]["content"] == "x data: y"
    assert events[1]["bytes"] > 200_000
    assert [event["type"] for event in events[2:]] == ["synthesis"] * 3 + ["workflow_status"]
    assert lines[-1] == {"close": 1000, "reason": "workflow cancelled"}
