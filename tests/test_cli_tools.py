"""``felix watch``, ``felix publish`` and ``felix workflows`` as real subprocesses
against a server started in the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable

import httpx
import pytest
import trio

from felix.cli._common import parse_fields
from felix.cli.demo import AGENTS, demo_events
from tests.conftest import Server, StartServer, create_workflow, publish, wait_until
from tests.test_client import closed_port

FELIX = [sys.executable, "-m", "felix.cli"]
SYNTHESIS = str(demo_events()[-2]["content"])


def environment(**extra: str) -> dict[str, str]:
    """The child's environment: no FELIX_URL or FELIX_API_KEY leaking in from ours."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"FELIX_URL", "FELIX_API_KEY", "FORCE_COLOR"}
    }
    env.update({"COLUMNS": "120", "NO_COLOR": "1", **extra})
    return env


async def felix(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    """Run one command to its end and capture what it printed."""
    with trio.fail_after(20):
        return await trio.run_process(
            [*FELIX, *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=environment(**env),
        )


async def felix_while(
    args: list[str], meanwhile: Callable[[], Awaitable[None]]
) -> subprocess.CompletedProcess[bytes]:
    """Run a command and, while it runs, ``meanwhile``; return how it ended."""
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def run() -> None:
        results.append(await felix(*args))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await meanwhile()
    return results[0]


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    """The error a failed command printed: one line on stderr, no traceback."""
    stderr = result.stderr.decode()
    assert result.returncode in (1, 2), stderr
    assert "Traceback" not in stderr
    assert stderr.count("\n") == 1, stderr
    assert result.stdout == b""
    return stderr.strip()


# --- key=value ---------------------------------------------------------------------------


def test_fields_are_json_when_they_parse() -> None:
    assert parse_fields(
        [
            "confidence=0.8",
            "final=true",
            "content=hello",
            "n=3",
            "none=null",
            'result={"a": [1, 2]}',
            "text=hello world",
            "empty=",
            "equation=a=b",
            "nan=NaN",
        ]
    ) == {
        "confidence": 0.8,
        "final": True,
        "content": "hello",
        "n": 3,
        "none": None,
        "result": {"a": [1, 2]},
        "text": "hello world",
        "empty": "",
        "equation": "a=b",
        "nan": "NaN",  # JSON cannot carry NaN: it stays a string
    }
    with pytest.raises(ValueError, match="not key=value"):
        parse_fields(["oops"])
    with pytest.raises(ValueError, match="not key=value"):
        parse_fields(["=value"])


# --- felix watch -------------------------------------------------------------------------


async def test_watch_json_prints_every_event_and_exits_0_after_the_terminal_one(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    events = demo_events()

    async def drive() -> None:
        # Live events: published once the watcher's stream is open.
        await wait_until(lambda: server.hub.connection_count(workflow_id) == 1, timeout=15)
        for event in events:
            assert (await publish(client, workflow_id, event)).status_code == 202

    result = await felix_while(["watch", workflow_id, "--json", "--url", server.http], drive)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    printed = [json.loads(line) for line in lines]
    assert [event["seq"] for event in printed] == list(range(1, len(events) + 1))
    assert [event["type"] for event in printed] == [event["type"] for event in events]
    assert printed[-1]["type"] == "completed"
    assert all(event["workflow_id"] == workflow_id for event in printed)
    assert result.stderr == b""


async def test_watch_json_after_replays_from_there(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client)
    await publish(client, workflow_id, demo_events())
    result = await felix("watch", workflow_id, "--json", "--after", "8", "--url", server.http)
    assert result.returncode == 0, result.stderr.decode()
    seqs = [json.loads(line)["seq"] for line in result.stdout.decode().splitlines()]
    assert seqs == list(range(9, len(demo_events()) + 1))


async def test_watch_renders_the_live_view_and_exits_0(
    server: Server, client: httpx.AsyncClient
) -> None:
    workflow_id = await create_workflow(client, task="Adopt retrieval planning?")
    events = demo_events()
    # Half the run before the watcher starts (it comes from the REST view),
    # the rest live.
    await publish(client, workflow_id, events[:5])

    async def drive() -> None:
        await wait_until(lambda: server.hub.connection_count(workflow_id) == 1, timeout=15)
        await publish(client, workflow_id, events[5:])

    result = await felix_while(["watch", workflow_id, "--url", server.http], drive)
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    for agent_id, agent_type, _, _ in AGENTS:
        assert agent_id in out
        assert agent_type in out
    assert SYNTHESIS in out
    assert "completed" in out
    assert "Adopt retrieval planning?" in out
    assert "█" in out  # confidence bars


async def test_watch_uses_felix_url_and_felix_api_key(start_server: StartServer) -> None:
    server = await start_server(api_keys=("sesame",))
    async with server.client("sesame") as client:
        workflow_id = await create_workflow(client)
        await publish(client, workflow_id, [{"type": "completed"}])
    result = await felix(
        "watch", workflow_id, "--json", FELIX_URL=server.http, FELIX_API_KEY="sesame"
    )
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout)["type"] == "completed"


async def test_watch_unknown_workflow_is_a_clear_error(server: Server) -> None:
    for mode in ([], ["--json"]):
        result = await felix("watch", "wf_nope", *mode, "--url", server.http)
        assert one_line_error(result) == (
            "felix watch: error: workflow wf_nope not found (HTTP 404 workflow_not_found)"
        )
        assert result.returncode == 1


async def test_watch_bad_key_is_a_clear_error(start_server: StartServer) -> None:
    server = await start_server(api_keys=("sesame",))
    result = await felix("watch", "wf_any", "--url", server.http, "--api-key", "wrong")
    assert one_line_error(result) == (
        "felix watch: error: missing or invalid API key (HTTP 401 unauthorized); "
        "pass --api-key or set FELIX_API_KEY"
    )


async def test_watch_connection_refused_is_a_clear_error() -> None:
    with closed_port() as port:
        result = await felix("watch", "wf_any", "--url", f"http://127.0.0.1:{port}")
    assert one_line_error(result) == (
        f"felix watch: error: cannot connect to http://127.0.0.1:{port}: connection refused "
        "(is the server running? set --url or FELIX_URL)"
    )
    assert result.returncode == 1


# --- felix publish -------------------------------------------------------------------------


async def test_publish_parses_key_value(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    result = await felix(
        "publish",
        workflow_id,
        "agent_output",
        "agent_id=a1",
        "content=hello",
        "confidence=0.8",
        "final=true",
        "tags=[1, 2]",
        "--url",
        server.http,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == f"published agent_output to {workflow_id} as seq 1\n"
    (event,) = (await client.get(f"/api/v1/workflows/{workflow_id}/events")).json()["events"]
    assert event["content"] == "hello"
    assert event["confidence"] == 0.8
    assert event["final"] is True
    assert event["tags"] == [1, 2]


async def test_publish_errors_are_clear(server: Server, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    usage = await felix("publish", workflow_id, "synthesis", "oops", "--url", server.http)
    assert one_line_error(usage) == "felix publish: error: 'oops' is not key=value"
    assert usage.returncode == 2
    invalid = await felix(
        "publish", workflow_id, "agent_output", "agent_id=a1", "--url", server.http
    )
    message = one_line_error(invalid)
    assert message.startswith("felix publish: error: ")
    assert message.endswith("(HTTP 422 invalid)")
    assert invalid.returncode == 1
    unknown = await felix("publish", "wf_nope", "synthesis", "content=x", "--url", server.http)
    assert one_line_error(unknown) == (
        "felix publish: error: workflow wf_nope not found (HTTP 404 workflow_not_found)"
    )


# --- felix workflows -----------------------------------------------------------------------


async def test_workflows_lists_them_with_their_status(
    server: Server, client: httpx.AsyncClient
) -> None:
    running = await create_workflow(client, task="research")
    await publish(client, running, {"type": "workflow_status", "status": "running"})
    pending = await create_workflow(client)
    result = await felix("workflows", "--url", server.http)
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert running in out
    assert pending in out
    assert "running" in out
    assert "pending" in out
    assert "2 of 2 workflows" in out
    only_running = await felix("workflows", "--status", "running", FELIX_URL=server.http)
    assert only_running.returncode == 0, only_running.stderr.decode()
    assert running in only_running.stdout.decode()
    assert pending not in only_running.stdout.decode()


async def test_workflows_bad_key_is_a_clear_error(start_server: StartServer) -> None:
    server = await start_server(api_keys=("sesame",))
    result = await felix("workflows", "--url", server.http, FELIX_API_KEY="wrong")
    assert one_line_error(result) == (
        "felix workflows: error: missing or invalid API key (HTTP 401 unauthorized); "
        "pass --api-key or set FELIX_API_KEY"
    )
    assert result.returncode == 1


@pytest.mark.parametrize(
    ("command", "args"),
    [("publish", ["wf_any", "synthesis", "content=x"]), ("workflows", [])],
)
async def test_every_command_reports_an_unreachable_server_in_one_line(
    command: str, args: list[str]
) -> None:
    with closed_port() as port:
        result = await felix(command, *args, "--url", f"http://127.0.0.1:{port}")
    assert one_line_error(result) == (
        f"felix {command}: error: cannot connect to http://127.0.0.1:{port}: connection refused "
        "(is the server running? set --url or FELIX_URL)"
    )
    assert result.returncode == 1
