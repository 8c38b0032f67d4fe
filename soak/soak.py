"""A bounded soak: hundreds of clients joining, leaving, stalling and resuming.

Run with ``nox -s soak`` (or ``python soak/soak.py``). It starts ``felix
serve`` in a subprocess, drives it from this process over real sockets, and
finishes by itself (about a minute by default). It fails (exit 1) if any
well-behaved client misses or repeats an event, if the server's memory leaves
its bound while a client stalls on a 50,000-event workflow, or if tasks and
connections do not return to their baseline once the clients leave.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import struct
import sys
import tempfile
from typing import Any

import attrs
import httpx
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url

from felix._patches import trio_websocket_leaks, trio_websocket_pong

MIB = 1024 * 1024
#: FELIX_SUBSCRIBER_BUFFER_BYTES as the soak configures it (the default).
BUFFER_BUDGET = MIB
#: What the server may grow by while the big workflow runs: its retained
#: history (50,000 events of about 1 KiB each in memory, all kept since
#: FELIX_HISTORY_SIZE is 60,000), the other workflows' histories, and slack.
#: A stalled reader that was not bounded would add the whole stream (10 MB+).
RSS_BOUND = 160 * MIB


@attrs.define
class Totals:
    clients: int = 0
    connections: int = 0
    events: int = 0
    deliveries: int = 0
    kicks: int = 0
    stalls: int = 0
    vanished: int = 0
    peak_rss: int = 0
    peak_buffered: int = 0
    failures: list[str] = attrs.Factory(list)

    def fail(self, message: str) -> None:
        self.failures.append(message)
        print("FAIL:", message, flush=True)


async def start_server(env: dict[str, str], log: Any) -> tuple[trio.Process, str]:
    # The log goes to a file, so a chatty server can never block on a full pipe.
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "felix.cli", "serve", "--port", "0"],
        stderr=log,
        env={**os.environ, **env},
    )
    path = trio.Path(log.name)
    with trio.fail_after(30):
        while (match := re.search(r"Running on (http://\S+)", await path.read_text())) is None:
            if process.poll() is not None:
                raise RuntimeError(f"felix serve exited: {await path.read_text()}")
            await trio.sleep(0.05)
    return process, match[1]


async def stats(http: httpx.AsyncClient) -> dict[str, Any]:
    answer: dict[str, Any] = (await http.get("/api/v1/stats")).json()
    return answer


class GoodClient:
    """Reads everything, resumes with after= after any drop, checks each seq."""

    def __init__(self, base: str, workflow_id: str, totals: Totals) -> None:
        self.url = base.replace("http://", "ws://") + f"/api/v1/ws/workflows/{workflow_id}"
        self.workflow_id = workflow_id
        self.totals = totals
        self.last = 0
        self.finished = False

    async def run(self, stop_at: float, rng: random.Random) -> None:
        while not self.finished:
            leave_at = (
                trio.current_time() + rng.uniform(1, 10) if rng.random() < 0.5 else float("inf")
            )
            try:
                await self.session(leave_at)
            except (HandshakeError, ConnectionRejected, OSError, trio.BrokenResourceError):
                await trio.sleep(0.2)
            if not self.finished and trio.current_time() > stop_at + 30:
                self.totals.fail(
                    f"client of {self.workflow_id} never saw the end (last {self.last})"
                )
                return

    async def session(self, leave_at: float) -> None:
        async with open_websocket_url(
            f"{self.url}?after={self.last}", message_queue_size=256
        ) as ws:
            self.totals.connections += 1
            with trio.move_on_at(leave_at):
                try:
                    while True:
                        message = json.loads(await ws.get_message())
                        if message["type"] == "connected":
                            if message.get("recovered") is False:
                                self.totals.fail(
                                    f"{self.workflow_id}: history lost after {self.last}"
                                )
                            continue
                        seq = message["seq"]
                        if seq != self.last + 1:
                            self.totals.fail(f"{self.workflow_id}: seq {seq} after {self.last}")
                        self.last = seq
                        self.totals.deliveries += 1
                        if message["type"] == "completed":
                            self.finished = True
                except ConnectionClosed as closed:
                    reason = closed.reason
                    if reason is not None and reason.code == 4008:
                        self.totals.kicks += 1
                    if reason is not None and reason.code == 1000:
                        self.finished = True


async def raw_client(base: str, workflow_id: str) -> trio.socket.SocketType:
    """A WebSocket opened by hand: for peers no library will play."""
    host, port = base.rsplit("//", 1)[1].rsplit(":", 1)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((host, int(port)))
    await sock.send(
        (
            f"GET /api/v1/ws/workflows/{workflow_id} HTTP/1.1\r\nHost: {host}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    return sock


async def stalled_client(base: str, workflow_id: str, hold: float, totals: Totals) -> None:
    """Completes the handshake, then never reads a byte."""
    with await raw_client(base, workflow_id):
        totals.stalls += 1
        await trio.sleep(hold)


async def vanishing_client(base: str, workflow_id: str, totals: Totals) -> None:
    """Reads a little, then drops its TCP connection with a reset, no close handshake."""
    sock = await raw_client(base, workflow_id)
    with sock:
        with trio.move_on_after(5):
            received = 0
            while received < 2000 and (chunk := await sock.recv(4096)):
                received += len(chunk)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        totals.vanished += 1


async def producer(http: httpx.AsyncClient, workflow_id: str, until: float, totals: Totals) -> None:
    n = 0
    while trio.current_time() < until:
        batch = [
            {
                "type": "agent_output",
                "agent_id": f"a{n % 5}",
                "content": "x" * 100,
                "confidence": 0.5,
                "n": n + i,
            }
            for i in range(10)
        ]
        response = await http.post(f"/api/v1/workflows/{workflow_id}/events", json=batch)
        if response.status_code == 202:
            n += 10
            totals.events += 10
        elif response.status_code != 503:
            totals.fail(f"publish answered {response.status_code}: {response.text}")
        await trio.sleep(0.1)
    await http.post(f"/api/v1/workflows/{workflow_id}/events", json={"type": "completed"})
    totals.events += 1


async def stalled_big_workflow(
    http: httpx.AsyncClient, base: str, totals: Totals, bound: int
) -> None:
    """50,000 events to a workflow with one stalled reader and three good ones."""
    workflow_id = (await http.post("/api/v1/workflows", json={"workflow_id": "big"})).json()[
        "workflow_id"
    ]
    rss_before = (await stats(http))["rss_bytes"]
    good = [GoodClient(base, workflow_id, totals) for _ in range(3)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stalled_client, base, workflow_id, 60.0, totals)
        for client in good:
            nursery.start_soon(client.run, trio.current_time() + 60, random.Random(1))
        await trio.sleep(1)
        for start in range(0, 50_000, 500):
            batch = [
                {"type": "synthesis", "content": "y" * 100, "n": start + i} for i in range(500)
            ]
            response = await http.post(f"/api/v1/workflows/{workflow_id}/events", json=batch)
            if response.status_code != 202:
                totals.fail(f"big publish answered {response.status_code}")
            totals.events += 500
            rss = (await stats(http))["rss_bytes"]
            totals.peak_rss = max(totals.peak_rss, rss)
            if rss - rss_before > bound:
                totals.fail(
                    f"RSS grew {(rss - rss_before) / MIB:.1f} MiB, "
                    f"over the {bound / MIB:.0f} MiB bound"
                )
            # The stalled reader holds at most its budget plus one publish.
            listing = (await http.get("/api/v1/connections")).json()["connections"]
            held = max(
                (c["buffered_bytes"] for c in listing if c["workflow_id"] == workflow_id),
                default=0,
            )
            totals.peak_buffered = max(totals.peak_buffered, held)
            if held > BUFFER_BUDGET + 500 * 300:
                totals.fail(f"a connection holds {held} bytes, over its budget")
        await http.post(f"/api/v1/workflows/{workflow_id}/events", json={"type": "completed"})
        totals.events += 1
        with trio.move_on_after(60):
            while not all(client.finished for client in good):
                await trio.sleep(0.1)
        # The stalled reader has made its point; let it go.
        nursery.cancel_scope.cancel()
    print(
        f"big workflow: 50,000 events, peak RSS {totals.peak_rss / MIB:.1f} MiB, "
        f"most held for one connection {totals.peak_buffered / 1024:.0f} KiB",
        flush=True,
    )
    for client in good:
        if client.last != 50_001:
            totals.fail(f"big workflow: a good client stopped at {client.last}")


async def progress(http: httpx.AsyncClient, totals: Totals, good: list[GoodClient]) -> None:
    """Print a line every few seconds, so a long run shows it is alive."""
    while True:
        await trio.sleep(5)
        now = await stats(http)
        waiting = sum(not client.finished for client in good)
        if os.environ.get("SOAK_DEBUG"):

            def walk(task: Any, depth: int = 0) -> None:
                print("  " * depth + task.name)
                for nursery in task.child_nurseries:
                    for child in nursery.child_tasks:
                        walk(child, depth + 1)

            walk(trio.lowlevel.current_root_task())
        print(
            f"  {totals.events} events, {totals.deliveries} deliveries, {now['connections']} open, "
            f"{waiting} clients still reading, RSS {now['rss_bytes'] / MIB:.0f} MiB",
            flush=True,
        )


async def main(duration: float, clients: int, workflows: int) -> int:
    # The soak's clients are bare trio-websocket ones: this program, not Felix's
    # client library, opts in to the fixes of felix._patches.
    trio_websocket_leaks.install()
    trio_websocket_pong.install()
    totals = Totals()
    env = {
        "FELIX_SEND_TIMEOUT": "2",
        "FELIX_PING_INTERVAL": "5",
        "FELIX_PING_TIMEOUT": "3",
        "FELIX_HISTORY_SIZE": "60000",
        "FELIX_LOG_LEVEL": "INFO",
        "FELIX_SHUTDOWN_GRACE": "2",
    }
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept for the reader after exit
        "w+", prefix="felix-soak-", suffix=".log", delete=False
    )
    process, base = await start_server(env, log)
    print(f"server log: {log.name}", flush=True)
    try:
        # Idle connections expire on the client before the server's 5 s
        # keep-alive timeout closes them; with both at 5 s (httpx's default),
        # a publish sent just as the server closes its connection fails.
        limits = httpx.Limits(keepalive_expiry=2.0)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
            baseline = await stats(http)
            print(
                f"server {base}: baseline {baseline['tasks']} tasks, "
                f"{baseline['rss_bytes'] / MIB:.1f} MiB",
                flush=True,
            )
            ids = [
                (await http.post("/api/v1/workflows")).json()["workflow_id"]
                for _ in range(workflows)
            ]
            good = await run_load(
                http, base, ids, duration=duration, clients=clients, totals=totals
            )
            for client in good:
                if not client.finished:
                    totals.fail(
                        f"a client of {client.workflow_id} did not finish (last {client.last})"
                    )
            await check_baseline(http, baseline, totals)
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
    print(
        f"soak: {totals.clients} clients, {totals.connections} connections, "
        f"{totals.events} events, {totals.deliveries} deliveries, "
        f"{totals.kicks} slow-consumer kicks, {totals.stalls} stalled, "
        f"{totals.vanished} vanished, peak RSS {totals.peak_rss / MIB:.1f} MiB, "
        f"{len(totals.failures)} failures"
    )
    return 1 if totals.failures else 0


async def run_load(
    http: httpx.AsyncClient,
    base: str,
    ids: list[str],
    *,
    duration: float,
    clients: int,
    totals: Totals,
) -> list[GoodClient]:
    """Producers on every workflow and ``clients`` clients of three kinds, joining
    over the first half of ``duration``; returns once all have finished."""
    stop_at = trio.current_time() + duration
    rng = random.Random(2026)
    good: list[GoodClient] = []
    async with trio.open_nursery() as watch:
        watch.start_soon(progress, http, totals, good)
        async with trio.open_nursery() as nursery:
            for workflow_id in ids:
                nursery.start_soon(producer, http, workflow_id, stop_at, totals)
            nursery.start_soon(stalled_big_workflow, http, base, totals, RSS_BOUND)
            for index in range(clients):
                workflow_id = rng.choice(ids)
                roll = rng.random()
                if roll < 0.7:
                    client = GoodClient(base, workflow_id, totals)
                    good.append(client)
                    nursery.start_soon(client.run, stop_at, random.Random(index))
                elif roll < 0.85:
                    nursery.start_soon(
                        stalled_client, base, workflow_id, rng.uniform(1, duration), totals
                    )
                else:
                    nursery.start_soon(vanishing_client, base, workflow_id, totals)
                totals.clients += 1
                await trio.sleep(duration / 2 / clients)
        watch.cancel_scope.cancel()
    return good


async def check_baseline(http: httpx.AsyncClient, baseline: dict[str, Any], totals: Totals) -> None:
    """Everyone has left: the server must be back to its baseline."""
    with trio.move_on_after(30):
        while (now := await stats(http))["connections"]:
            await trio.sleep(0.2)
    now = await stats(http)
    # Actors of finished workflows live on until their retention ends.
    tasks = now["tasks"] - now["workflows"]
    if now["connections"] or tasks > baseline["tasks"] - baseline["workflows"] + 2:
        totals.fail(f"not back to baseline: {now['connections']} connections, {tasks} tasks")
    totals.peak_rss = max(totals.peak_rss, now["rss_bytes"])
    print(
        f"after: {now['connections']} connections, {tasks} tasks besides actors "
        f"(baseline {baseline['tasks']}), RSS {now['rss_bytes'] / MIB:.1f} MiB",
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=45.0, help="seconds of publishing")
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--workflows", type=int, default=20)
    args = parser.parse_args()
    sys.exit(trio.run(main, args.duration, args.clients, args.workflows))
