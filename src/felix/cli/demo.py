"""``felix demo``: the whole pipeline in one command.

Starts an embedded server on a free port, watches a new workflow over a real
WebSocket, drives a simulated multi-agent run through the REST API, and prints
each frame the watcher receives as it arrives. The watcher is a bare
trio-websocket client (it shows the frames and the close as they are), so this
command, and only it, installs Felix's trio-websocket fixes (``felix._patches``).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from felix._logging import configure_logging
from felix._patches import trio_websocket_leaks, trio_websocket_pong
from felix._runtime.hub import open_hub
from felix.cli._common import EXIT_USAGE, Subparsers, fail
from felix.settings import Settings, SettingsError
from felix.web import serve

__all__ = ["AGENTS", "add_parser", "demo_events", "run", "run_demo"]

AGENTS = [
    ("research-1", "research", "Found three prior studies on retrieval-augmented planning.", 0.82),
    ("critic-1", "critic", "Study two has a small sample; weigh it less.", 0.74),
    ("analyst-1", "analysis", "Planning with retrieval cuts failed steps by about a third.", 0.88),
    ("writer-1", "writer", "Drafted a one-page summary for the team.", 0.91),
]


def helix_spawn_time(index: int, count: int) -> float:
    """Spawn times along a helix wound once around 0..1: dense at the ends."""
    if count == 1:
        return 0.0
    return round((1 - math.cos(math.pi * index / (count - 1))) / 2, 3)


def demo_events() -> list[dict[str, Any]]:
    """The events of the simulated run, in the order they are published."""
    events: list[dict[str, Any]] = [{"type": "workflow_status", "status": "running"}]
    for index, (agent_id, agent_type, _, _) in enumerate(AGENTS):
        events.append(
            {
                "type": "agent_spawned",
                "agent_id": agent_id,
                "agent_type": agent_type,
                "spawn_time": helix_spawn_time(index, len(AGENTS)),
            }
        )
    for agent_id, _, content, confidence in AGENTS:
        events.append(
            {
                "type": "agent_output",
                "agent_id": agent_id,
                "content": content,
                "confidence": confidence,
            }
        )
    events.append(
        {
            "type": "synthesis",
            "content": (
                "Retrieval-augmented planning is worth adopting; start with the analyst's setup."
            ),
            "confidence": 0.86,
            "agents_synthesized": len(AGENTS),
            "final": True,
        }
    )
    events.append(
        {"type": "completed", "result": {"recommendation": "adopt", "agents": len(AGENTS)}}
    )
    return events


def describe(event: dict[str, Any]) -> str:
    """One human line for a frame a watcher received."""
    kind = event.get("type")
    seq = f"#{event['seq']:<3}" if "seq" in event else "    "
    if kind == "connected":
        detail = f"status={event.get('status')} last_seq={event.get('last_seq')}"
    elif kind == "workflow_status":
        detail = f"status -> {event['status']}"
    elif kind == "agent_spawned":
        detail = f"{event['agent_id']} ({event['agent_type']}) spawned at t={event['spawn_time']}"
    elif kind == "agent_output":
        bar = "#" * round(event["confidence"] * 10)
        detail = f"{event['agent_id']} [{bar:<10}] {event['confidence']:.2f}  {event['content']}"
    elif kind == "synthesis":
        detail = f"{event['content']} (confidence {event.get('confidence')})"
    elif kind == "completed":
        detail = f"result {json.dumps(event.get('result'))}"
    else:
        detail = json.dumps(event)
    return f"  {seq} {kind:<16} {detail}"


def add_parser(subparsers: Subparsers) -> None:
    """Add ``felix demo``."""
    parser = subparsers.add_parser(
        "demo", help="run a simulated multi-agent workflow against an embedded server"
    )
    parser.add_argument(
        "--delay", type=float, default=0.15, help="seconds between published events"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo on an embedded server; 0 if the watcher saw every event."""
    try:
        settings = Settings.from_env(host="127.0.0.1", port=0, api_keys=())
    except SettingsError as error:
        return fail("demo", str(error), EXIT_USAGE)
    configure_logging("WARNING", settings.log_format)
    status: int = trio.run(run_demo, settings, args.delay)
    return status


async def run_demo(settings: Settings, delay: float = 0.15) -> int:
    """Run the demo; returns the process exit status (0 on success)."""
    # This process's own watcher is a bare trio-websocket client: see the module's doc.
    trio_websocket_leaks.install()
    trio_websocket_pong.install()
    async with open_hub(settings) as hub, trio.open_nursery() as nursery:
        binds = await nursery.start(serve, hub, settings)
        base = binds[0]
        print(f"Felix is serving on {base} (embedded, in memory)")
        async with httpx.AsyncClient(base_url=base) as client:
            response = await client.post(
                "/api/v1/workflows", json={"task": "Should we adopt retrieval-augmented planning?"}
            )
            response.raise_for_status()
            workflow_id = response.json()["workflow_id"]
            print(f"Created workflow {workflow_id}; a WebSocket client is watching it:\n")
            ws_url = base.replace("http://", "ws://") + f"/api/v1/ws/workflows/{workflow_id}"
            received: list[dict[str, Any]] = []
            async with trio.open_nursery() as watchers:
                await watchers.start(_watch, ws_url, received)
                await _drive(client, workflow_id, delay)
            final = (await client.get(f"/api/v1/workflows/{workflow_id}")).json()
        print(
            f"\nREST view: status={final['status']} agents={len(final['agents'])} "
            f"last_seq={final['last_seq']}"
        )
        nursery.cancel_scope.cancel()
    expected = len(demo_events()) + 1
    return 0 if len(received) == expected else 1


async def _watch(
    ws_url: str,
    received: list[dict[str, Any]],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Print every frame of one workflow's WebSocket until the server closes it."""
    async with open_websocket_url(ws_url) as ws:
        task_status.started()
        try:
            while True:
                event = json.loads(await ws.get_message())
                received.append(event)
                print(describe(event), flush=True)
        except ConnectionClosed as closed:
            reason = closed.reason
            if reason is not None:
                print(f"\n  connection closed: {reason.code} {reason.reason}")


async def _drive(client: httpx.AsyncClient, workflow_id: str, delay: float) -> None:
    for event in demo_events():
        await trio.sleep(delay)
        answer = await client.post(f"/api/v1/workflows/{workflow_id}/events", json=event)
        answer.raise_for_status()
