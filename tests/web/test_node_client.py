"""The contract as a different client stack sees it: a browser-style page under Node.

``tests/node/watch.js`` is written the way the seed's JavaScript client is:
``new WebSocket(url)`` and an ``onmessage`` that switches on ``data.type``. Under
Node the ``ws`` package stands in for the browser's WebSocket. It prints one JSON
line per message it receives and one for the close, so these tests drive a real
server over REST and check what a foreign client actually got.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
import trio

from tests.conftest import Server, create_workflow, publish

if TYPE_CHECKING:
    import httpx

pytestmark = pytest.mark.node

NODE_DIR: Final = Path(__file__).resolve().parent.parent / "node"
WATCH_JS: Final = NODE_DIR / "watch.js"
#: Bounds every test's dealings with Node; watch.js gives up by itself after 20 s.
NODE_TIMEOUT: Final = 15.0
TIMESTAMP: Final = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
ENVELOPE: Final = ("type", "workflow_id", "seq", "timestamp")


@pytest.fixture(scope="module")
def node_client() -> Path:
    """The path of watch.js, with its ``ws`` dependency installed (``npm ci``)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed: install Node.js 18 or newer to run these tests")
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300
        )
    return WATCH_JS


def _node_command(script: Path, url: str) -> list[str]:
    node = shutil.which("node")
    assert node is not None
    return [node, str(script), url]


class Watch:
    """A running ``node watch.js``: its stdout read line by line, each line parsed."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdout is not None
        self.process = process
        self._stdout = process.stdout
        self._buffer = bytearray()
        self.seen: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        """The next line node printed; fails if node ended its output first."""
        while (end := self._buffer.find(b"\n")) < 0:
            chunk = await self._stdout.receive_some()
            if not chunk:
                raise AssertionError(f"node's output ended early; it printed {self.seen}")
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        parsed: dict[str, Any] = json.loads(line)
        self.seen.append(parsed)
        return parsed

    async def until(self, *wanted: dict[str, Any] | str) -> None:
        """Read lines until each wanted one is seen: a ``type``, or an exact object."""
        missing = list(wanted)
        while missing:
            line = await self.next()
            for want in missing:
                if line == want or (isinstance(want, str) and line.get("type") == want):
                    missing.remove(want)
                    break

    async def finish(self) -> int:
        """Read the rest of node's output and return its exit status."""
        while chunk := await self._stdout.receive_some():
            self._buffer += chunk
        for line in self._buffer.splitlines():
            self.seen.append(json.loads(line))
        self._buffer.clear()
        return await self.process.wait()


async def start_watch(nursery: trio.Nursery, script: Path, url: str) -> Watch:
    """Start ``node watch.js url`` in ``nursery`` (cancelling the nursery kills it)."""
    process: trio.Process = await nursery.start(
        partial(trio.run_process, _node_command(script, url), stdout=subprocess.PIPE, check=False)
    )
    return Watch(process)


def events_of(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The workflow events among node's lines (no connected, pongs or close)."""
    return [line for line in lines if "seq" in line and line.get("type") != "connected"]


def assert_envelope(event: dict[str, Any], workflow_id: str) -> None:
    """A flat event: envelope fields beside the event's own, nothing nested under data."""
    for name in ENVELOPE:
        assert name in event, f"{name} missing from {event}"
    assert event["workflow_id"] == workflow_id
    assert isinstance(event["seq"], int)
    assert TIMESTAMP.match(event["timestamp"]), event["timestamp"]
    assert "data" not in event, event


def assert_pongs(lines: list[dict[str, Any]]) -> None:
    """The answers to the plain-text and the JSON ping, each exactly once."""
    assert lines.count({"text": "pong"}) == 1, lines
    pongs = [line for line in lines if line.get("type") == "pong"]
    assert len(pongs) == 1, lines
    assert set(pongs[0]) == {"type", "timestamp"}, pongs[0]
    assert TIMESTAMP.match(pongs[0]["timestamp"]), pongs[0]


LIVE_EVENTS: Final[list[dict[str, Any]]] = [
    {"type": "workflow_status", "status": "running"},
    {"type": "agent_spawned", "agent_id": "research-1", "agent_type": "research",
     "spawn_time": 0.25, "model": "kept-as-extra"},
    {"type": "agent_output", "agent_id": "research-1", "content": "found 3 sources",
     "confidence": 0.82},
    {"type": "synthesis", "content": "summary", "confidence": 0.9,
     "agents_synthesized": ["research-1"], "final": True},
    {"type": "completed", "result": {"answer": 42}},
]  # fmt: skip


async def test_node_client_sees_the_live_stream(
    server: Server, client: httpx.AsyncClient, node_client: Path
) -> None:
    workflow_id = await create_workflow(client, task="watched from node")
    with trio.fail_after(NODE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            watch = await start_watch(nursery, node_client, server.ws_url(workflow_id))
            # node prints connected only once the server has subscribed it, so
            # nothing published from here on can be missed; no polling needed.
            connected = await watch.next()
            assert server.hub.connection_count(workflow_id) == 1
            # Both pings answered before the terminal event, which closes the socket.
            await watch.until({"text": "pong"}, "pong")
            for seq, event in enumerate(LIVE_EVENTS, start=1):
                response = await publish(client, workflow_id, event)
                assert response.status_code == 202, response.text
                assert response.json() == {"accepted": 1, "first_seq": seq, "last_seq": seq}
            status = await watch.finish()

    lines = watch.seen
    assert status == 0, lines
    assert connected["type"] == "connected", lines
    assert connected["workflow_id"] == workflow_id
    assert connected["status"] == "pending"
    assert connected["last_seq"] == 0
    assert isinstance(connected["connection_id"], str)
    assert connected["connection_id"]
    assert TIMESTAMP.match(connected["timestamp"]), connected
    assert "recovered" not in connected, connected
    assert_pongs(lines)

    events = events_of(lines)
    assert [event["seq"] for event in events] == [1, 2, 3, 4, 5], lines
    for sent, got in zip(LIVE_EVENTS, events, strict=True):
        assert_envelope(got, workflow_id)
        assert {name: got[name] for name in sent} == sent, got
        assert set(got) == set(sent) | set(ENVELOPE), got
    assert lines[-1] == {"closed": True, "code": 1000, "reason": "workflow completed"}, lines
    assert [line for line in lines if "closed" in line or "error" in line] == [lines[-1]]


async def test_node_client_replays_after_seq_before_live_events(
    server: Server, client: httpx.AsyncClient, node_client: Path
) -> None:
    workflow_id = await create_workflow(client)
    response = await publish(client, workflow_id, LIVE_EVENTS[:3])
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 3, "first_seq": 1, "last_seq": 3}
    live = {"type": "agent_output", "agent_id": "research-1", "content": "live", "confidence": 0.5}

    with trio.fail_after(NODE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            watch = await start_watch(nursery, node_client, server.ws_url(workflow_id, "after=1"))
            connected = await watch.next()
            # Published while node may still be reading the replay: it must come after.
            response = await publish(client, workflow_id, live)
            assert response.status_code == 202, response.text
            await watch.until({"text": "pong"}, "pong")
            while 4 not in [event["seq"] for event in events_of(watch.seen)]:
                await watch.next()
            response = await publish(client, workflow_id, {"type": "completed"})
            assert response.status_code == 202, response.text
            status = await watch.finish()

    lines = watch.seen
    assert status == 0, lines
    assert connected["type"] == "connected", lines
    assert connected["recovered"] is True, connected
    assert connected["status"] == "running"
    assert connected["last_seq"] == 3
    assert_pongs(lines)
    events = events_of(lines)
    assert [event["seq"] for event in events] == [2, 3, 4, 5], lines
    assert [event["type"] for event in events] == [
        "agent_spawned",
        "agent_output",
        "agent_output",
        "completed",
    ]
    assert events[1]["content"] == LIVE_EVENTS[2]["content"]
    assert events[2]["content"] == "live"
    for event in events:
        assert_envelope(event, workflow_id)
    assert lines[-1] == {"closed": True, "code": 1000, "reason": "workflow completed"}, lines


@pytest.mark.parametrize(
    ("path_and_query", "refusal"),
    [
        pytest.param("wf_000000000000", (404, "workflow_not_found"), id="unknown-workflow"),
        pytest.param("{workflow_id}?after=-1", (400, "bad_request"), id="bad-after"),
    ],
)
async def test_node_client_sees_a_refused_handshake(
    server: Server,
    client: httpx.AsyncClient,
    node_client: Path,
    path_and_query: str,
    refusal: tuple[int, str],
) -> None:
    status, code = refusal
    workflow_id = await create_workflow(client)
    url = f"{server.ws}/api/v1/ws/workflows/{path_and_query.format(workflow_id=workflow_id)}"
    with trio.fail_after(NODE_TIMEOUT):
        result = await trio.run_process(
            _node_command(node_client, url), capture_stdout=True, check=False
        )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 1, lines
    assert len(lines) == 1, lines
    refused = lines[0]
    assert refused["handshake_refused"] is True
    assert refused["status"] == status, refused
    assert refused["content_type"] == "application/json", refused
    assert refused["body"]["error"] == code, refused
    assert isinstance(refused["body"]["message"], str)
    assert refused["body"]["message"]
    assert server.hub.connection_count() == 0
