"""``felix demo``: the whole pipeline in one command.

Starts an embedded server (port 8000, or a free port when 8000 is busy), or
with ``--url`` uses a running one; watches a new workflow over a real
WebSocket, drives a simulated multi-agent run through the REST API, prints
each frame the watcher receives as it arrives, and the dashboard link of the
workflow. ``--keep`` leaves the embedded server up afterwards, until SIGINT
or SIGTERM, so the dashboard can be looked at. The watcher is a bare
trio-websocket client (it shows the frames and the close as they are), so this
command, and only it, installs Felix's trio-websocket fixes (``felix._patches``).
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import math
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from felix._logging import configure_logging
from felix._patches import trio_websocket_leaks, trio_websocket_pong
from felix._runtime.hub import Hub, open_hub
from felix.cli._common import (
    EXIT_ERROR,
    EXIT_USAGE,
    Subparsers,
    UsageError,
    fail,
    leaf,
    run_command,
)
from felix.cli.serve import StartupError, listen_error
from felix.client import FelixClient
from felix.settings import Settings, SettingsError
from felix.web import serve

__all__ = ["AGENTS", "DEFAULT_PORT", "add_parser", "dashboard_link", "demo_events", "run"]

#: The embedded server's port unless ``--port`` says otherwise: the README's.
DEFAULT_PORT: Final = 8000
_TASK: Final = "Should we adopt retrieval-augmented planning?"

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


def dashboard_link(base: str, workflow_id: str) -> str:
    """The dashboard's page of one workflow on the server at ``base``."""
    return f"{base.rstrip('/')}/#/workflows/{workflow_id}"


def add_parser(subparsers: Subparsers) -> None:
    """Add ``felix demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="run a simulated multi-agent workflow (embedded server, or --url)",
        description=(
            "Run a simulated multi-agent workflow and watch it over a WebSocket: on an "
            "embedded server, or with --url on a running one. Exits 0 when the watcher "
            "saw every event, 1 when not or when the server cannot be used."
        ),
    )
    parser.add_argument(
        "--delay", type=float, default=0.15, help="seconds between published events"
    )
    parser.add_argument(
        "--url", help="publish into the running server at URL instead of an embedded one"
    )
    parser.add_argument(
        "--api-key", metavar="KEY", help="with --url: its API key (default: $FELIX_API_KEY)"
    )
    parser.add_argument(
        "--port",
        type=int,
        help=f"the embedded server's port (default {DEFAULT_PORT}, else a free one if busy)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the embedded server up after the demo, until Ctrl-C",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo: 0 if the watcher saw every event, 1 if not or the server
    could not be used or started, 2 for a bad command line, 128 + the signal
    number after SIGINT or SIGTERM during the run (with ``--keep``, a signal
    after it ends the wait with the run's status)."""
    if args.url is not None and (args.keep or args.port is not None):
        return fail("demo", "--keep and --port are for the embedded server, not --url", EXIT_USAGE)
    try:
        settings = Settings.from_env(host="127.0.0.1", port=args.port, api_keys=())
    except SettingsError as error:
        return fail("demo", str(error), EXIT_USAGE)
    configure_logging("WARNING", settings.log_format)
    key = args.api_key or os.environ.get("FELIX_API_KEY") or None
    try:
        return run_command("demo", functools.partial(_main, settings, key), args)
    except BaseException as raised:
        problem = leaf(raised)
        if isinstance(problem, StartupError):
            return fail("demo", f"cannot start: {problem}")
        raise


async def _main(settings: Settings, key: str | None, args: argparse.Namespace) -> int:
    """The demo under a signal receiver: SIGINT or SIGTERM cancels it as a whole,
    as ``felix serve`` does, rather than surfacing in whichever task runs."""
    outcome: list[int] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def interrupt() -> None:
                async for signum in signals:
                    outcome.append(128 + signum)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(interrupt)
            async with _server(settings, args) as (base, client_key):
                outcome.insert(0, await _demo(base, client_key or key, args.delay))
                if args.keep:
                    print(f"\nStill serving on {base} (dashboard: {base}/); Ctrl-C to stop.")
                    await trio.sleep_forever()
            nursery.cancel_scope.cancel()
    return outcome[0]


@asynccontextmanager
async def _server(
    settings: Settings, args: argparse.Namespace
) -> AsyncIterator[tuple[str, str | None]]:
    """``(base URL, API key)`` of the server to use: ``--url``'s, or an embedded
    one served in memory until the block ends. Raises :class:`StartupError`."""
    if args.url is not None:
        yield args.url.rstrip("/"), None
        return
    async with open_hub(settings) as hub, trio.open_nursery() as nursery:
        base = await _listen(nursery, hub, settings, fall_back=args.port is None)
        print(f"Felix is serving on {base} (embedded, in memory)")
        yield base, None
        nursery.cancel_scope.cancel()


async def _listen(nursery: trio.Nursery, hub: Hub, settings: Settings, *, fall_back: bool) -> str:
    """Start serving ``hub`` in ``nursery``; the base URL. On a busy default port,
    and only then, a free port instead, saying so."""
    try:
        binds: list[str] = await nursery.start(serve, hub, settings)
    except BaseException as raised:
        # Before it listens, an OSError can only come from binding.
        error = leaf(raised)
        if not isinstance(error, OSError):
            raise
        if not (fall_back and error.errno == errno.EADDRINUSE):
            raise listen_error(error, settings.host, settings.port) from None
        print(
            f"Port {settings.port} is in use (a `felix serve`? `felix demo --url "
            f"http://{settings.host}:{settings.port}` publishes into it); using a free port."
        )
        binds = await nursery.start(serve, hub, attrs.evolve(settings, port=0))
    return binds[0]


async def _demo(base: str, key: str | None, delay: float) -> int:
    """Create, watch and drive one workflow on the server at ``base``; 0 if the
    watcher saw every event, else 1. Raises :class:`felix.client.ClientError`."""
    # This process's own watcher is a bare trio-websocket client: see the module's doc.
    trio_websocket_leaks.install()
    trio_websocket_pong.install()
    try:
        felix = FelixClient(base, key)
    except ValueError as error:
        raise UsageError(f"--url: {error}") from None
    async with felix:
        workflow_id = (await felix.create_workflow(task=_TASK))["workflow_id"]
        print(f"Created workflow {workflow_id}; a WebSocket client is watching it.")
        print(f"Dashboard: {dashboard_link(base, workflow_id)}\n", flush=True)
        ws_url = base.replace("http", "ws", 1) + f"/api/v1/ws/workflows/{workflow_id}"
        headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
        received: list[dict[str, Any]] = []
        async with trio.open_nursery() as watchers:
            await watchers.start(_watch, ws_url, headers, received)
            for event in demo_events():
                await trio.sleep(delay)
                await felix.publish(workflow_id, event)
        final = await felix.get_workflow(workflow_id)
    print(
        f"\nREST view: status={final['status']} agents={len(final['agents'])} "
        f"last_seq={final['last_seq']}"
    )
    print(f"Dashboard: {dashboard_link(base, workflow_id)}")
    return 0 if len(received) == len(demo_events()) + 1 else EXIT_ERROR


async def _watch(
    ws_url: str,
    headers: list[tuple[bytes, bytes]],
    received: list[dict[str, Any]],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Print every frame of one workflow's WebSocket until the server closes it."""
    async with open_websocket_url(ws_url, extra_headers=headers) as ws:
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
