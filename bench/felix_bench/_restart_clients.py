"""The restart storm's client processes: subscribers that follow workflows across a
server restart, and the producer that keeps publishing through it.

``python -m felix_bench._restart_clients '<json config>'`` plays one role and
talks to the orchestrator in JSON lines, like ``bench/node/loadgen.js``:
commands on stdin, events on stdout.

- ``sub``: subscribers, each following one workflow. On Felix they are
  :func:`felix.client.open_workflow_stream` streams (reconnect with
  :data:`~felix.client.DEFAULT_BACKOFF`, resume after the last seq); on the
  seed-style server, which cannot resume, a plain reconnect loop with the same
  backoff over the same WebSocket code. Events: ``ready`` (all connected),
  ``live`` (every subscriber connected again after ``down``), ``done`` (the
  audit, after ``expect``).
- ``pub``: one task per workflow publishing ``rate`` events/s, numbered
  ``n = 1, 2, ...``, one POST in flight; a failed POST is retried with the same
  body (and, on Felix, the same ``Idempotency-Key``) until accepted, so each
  workflow's published sequence is exactly ``1..N``. On the seed a 404 means
  the restart forgot the workflow: it is created again first. Events:
  ``ready``, ``published`` (after ``stop``).

Times are ``time.monotonic()`` (CLOCK_MONOTONIC), comparable with the orchestrator's.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from wsproto.utilities import RemoteProtocolError

from felix.client import (
    DEFAULT_BACKOFF,
    ApiError,
    ClientError,
    FelixClient,
    Gap,
    WorkflowStream,
    open_workflow_stream,
)
from felix.client._websocket import ConnectionClosed, HandshakeRejected, open_connection

__all__ = ["Subscriber", "Tally", "audit", "main"]

#: Seconds between two looks at the subscribers while waiting for them to be live.
POLL_S: Final = 0.02
#: Seconds before a failed publish is tried again.
RETRY_S: Final = 0.1
MAX_ERRORS: Final = 8
#: Whatever ends a seed connection or refuses one: the loop connects again. (A
#: reset during the handshake is anyio's BrokenResourceError, not an OSError.)
_DROPS: Final = (
    ConnectionClosed,
    HandshakeRejected,
    RemoteProtocolError,
    OSError,
    TimeoutError,
    anyio.BrokenResourceError,
)


def emit(event: str, **fields: Any) -> None:
    """One event line to the orchestrator."""
    print(json.dumps({"event": event, **fields}), flush=True)


@dataclass
class Tally:
    """What one subscriber got of its workflow's events, by the producer's ``n``."""

    seen: set[int] = field(default_factory=set)
    highest: int = 0
    duplicates: int = 0
    reordered: int = 0
    gaps: int = 0

    def take(self, n: int) -> None:
        """Count event ``n``: new, a duplicate, or new but after a later one."""
        if n in self.seen:
            self.duplicates += 1
            return
        self.seen.add(n)
        if n < self.highest:
            self.reordered += 1
        self.highest = max(self.highest, n)

    def lost(self, expected: int) -> int:
        """Events ``1..expected`` never seen."""
        return expected - sum(1 for n in self.seen if 1 <= n <= expected)

    def unexpected(self, expected: int) -> int:
        """Events seen that were never published (``n`` outside ``1..expected``)."""
        return sum(1 for n in self.seen if not 1 <= n <= expected)


class Subscriber:
    """One subscriber of one workflow; :meth:`connections` counts its ``connected`` frames."""

    def __init__(self, url: str, workflow_id: str) -> None:
        self.url = url
        self.workflow_id = workflow_id
        self.tally = Tally()
        self.error: str | None = None
        self.first_connect = anyio.Event()

    def connections(self) -> int:
        """``connected`` frames received so far."""
        raise NotImplementedError

    async def run(self) -> None:
        """Follow the workflow until cancelled."""
        raise NotImplementedError

    def _frame(self, frame: dict[str, Any]) -> None:
        n = frame.get("n")
        if isinstance(n, int) and not isinstance(n, bool):
            self.tally.take(n)


class FelixSubscriber(Subscriber):
    """Felix's own client: reconnects with its backoff and resumes after the last seq."""

    stream: WorkflowStream | None = None

    def connections(self) -> int:
        """``connected`` frames received so far."""
        return 0 if self.stream is None else self.stream.statistics().connections

    async def run(self) -> None:
        """Follow the workflow from its first event (``after=0``) until cancelled."""
        try:
            async with open_workflow_stream(self.url, self.workflow_id, after=0) as stream:
                self.stream = stream
                await stream.wait_connected()
                self.first_connect.set()
                async for item in stream:
                    if isinstance(item, Gap):
                        self.tally.gaps += 1
                    else:
                        self._frame(item)
        except Exception as error:
            # Not only ClientError: what else the client raises ends the stream
            # as well, and the audit should say so rather than the process die.
            self.error = f"{self.workflow_id}: {type(error).__name__}: {error}"
        finally:
            self.first_connect.set()


class SeedSubscriber(Subscriber):
    """A plain reconnecting client: the seed-style server cannot resume, so after a
    drop it only connects again, with the same backoff as Felix's client."""

    _connections = 0

    def connections(self) -> int:
        """``connected`` frames received so far."""
        return self._connections

    async def run(self) -> None:
        """Connect, read, and after any drop sleep the backoff's delay and connect again."""
        failures = 0
        url = self.url.replace("http://", "ws://") + f"/api/v1/ws/workflows/{self.workflow_id}"
        while True:
            delivered = False
            try:
                async with open_connection(
                    url, ssl_context=None, headers=[], max_message_size=1 << 20, connect_timeout=10
                ) as ws:
                    while True:
                        frame = _parse(await ws.get_message())
                        if frame.get("type") == "connected":
                            self._connections += 1
                            self.first_connect.set()
                        elif "n" in frame:
                            self._frame(frame)
                            delivered = True
            except _DROPS:
                pass
            # As Felix's client: a connection that delivered ends the run of failures.
            failures = 1 if delivered else failures + 1
            await anyio.sleep(DEFAULT_BACKOFF.delay(failures))


def _parse(message: str | bytes) -> dict[str, Any]:
    # The seed also sends a plain-text "pong"; anything not a JSON object is no event.
    try:
        frame = json.loads(message)
    except ValueError:
        return {}
    return frame if isinstance(frame, dict) else {}


async def _commands(send: MemoryObjectSendStream[dict[str, Any]]) -> None:
    """Read commands from stdin; ``quit`` or a closed stdin (the orchestrator is gone)
    ends the process at once, as the Node generators do: nothing is left to report."""
    async with send:
        # Abandoned on cancel: a blocked readline must not hold up the error report.
        while line := await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True):
            command = json.loads(line)
            if command.get("cmd") == "quit":
                break
            await send.send(command)
    sys.stdout.flush()
    os._exit(0)


async def _next(commands: MemoryObjectReceiveStream[dict[str, Any]], name: str) -> dict[str, Any]:
    command = await commands.receive()
    if command.get("cmd") != name:
        raise RuntimeError(f"expected command {name!r}, got {command!r}")
    return command


async def _connect_all(subs: list[Subscriber], group: anyio.abc.TaskGroup, at_once: int) -> None:
    """Start every subscriber, at most ``at_once`` handshakes in flight."""
    gate = anyio.Semaphore(at_once)

    async def start(sub: Subscriber) -> None:
        async with gate:
            group.start_soon(sub.run)
            with anyio.move_on_after(30):
                await sub.first_connect.wait()

    async with anyio.create_task_group() as starting:
        for sub in subs:
            starting.start_soon(start, sub)


async def _wait_live(subs: list[Subscriber], before: list[int], timeout: float) -> list[float]:
    """When each subscriber had a connection newer than ``before`` (polled); the missing
    ones, and those whose stream ended (it will not come back), are left out."""
    times: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    waiting = len(subs)
    while waiting and time.monotonic() < deadline:
        now = time.monotonic()
        for index, sub in enumerate(subs):
            if index not in times and sub.connections() > before[index]:
                times[index] = now
        waiting = sum(1 for i, s in enumerate(subs) if i not in times and s.error is None)
        await anyio.sleep(POLL_S)
    return sorted(times.values())


async def _settle(subs: list[Subscriber], counts: dict[str, int], drain_s: float) -> None:
    """Wait until every subscriber has its workflow's last published event, or
    ``drain_s`` passes.

    The last event, not every event: events come in order, so nothing but a
    duplicate can follow the last one, and a subscriber that cannot resume
    (the seed's) would otherwise keep the run waiting for what it lost.
    """
    with anyio.move_on_after(drain_s):
        while any(sub.tally.highest < counts.get(sub.workflow_id, 0) for sub in subs):
            await anyio.sleep(0.05)
    await anyio.sleep(0.2)  # late duplicates would arrive now


def audit(subs: list[Subscriber], counts: dict[str, int]) -> dict[str, Any]:
    """Every subscriber's tally against what was published, summed."""
    report: dict[str, Any] = dict.fromkeys(
        ("delivered", "lost", "duplicates", "reordered", "unexpected", "gaps", "failed"), 0
    )
    report["subscribers"] = len(subs)
    errors: list[str] = []
    for sub in subs:
        expected = counts.get(sub.workflow_id, 0)
        report["delivered"] += len(sub.tally.seen) - sub.tally.unexpected(expected)
        report["lost"] += sub.tally.lost(expected)
        report["duplicates"] += sub.tally.duplicates
        report["reordered"] += sub.tally.reordered
        report["unexpected"] += sub.tally.unexpected(expected)
        report["gaps"] += sub.tally.gaps
        if sub.error is not None:
            report["failed"] += 1
            errors.append(sub.error)
    report["errors"] = errors[:MAX_ERRORS]
    return report


async def run_sub(config: dict[str, Any], commands: MemoryObjectReceiveStream[Any]) -> None:
    """The ``sub`` role: connect, report when live again after ``down``, then audit."""
    kind: Callable[[str, str], Subscriber] = (
        FelixSubscriber if config["server"] == "felix" else SeedSubscriber
    )
    subs = [kind(config["url"], wf) for wf, count in config["workflows"] for _ in range(count)]
    async with anyio.create_task_group() as group:
        await _connect_all(subs, group, int(config["connect_concurrency"]))
        failed = [
            sub.error or f"{sub.workflow_id}: no connection within 30 s"
            for sub in subs
            if sub.connections() == 0
        ]
        emit("ready", connected=len(subs) - len(failed), failed=len(failed), errors=failed[:8])
        down = await _next(commands, "down")
        before = [sub.connections() for sub in subs]
        times = await _wait_live(subs, before, float(down["timeout_s"]))
        emit("live", times=times, missing=len(subs) - len(times))
        expect = await _next(commands, "expect")
        counts = {wf: int(n) for wf, n in expect["counts"].items()}
        await _settle(subs, counts, float(expect["drain_s"]))
        emit("done", **audit(subs, counts))
        group.cancel_scope.cancel()


@dataclass
class Producer:
    """The ``pub`` role's state: what each workflow has published, and what went wrong."""

    client: FelixClient
    felix: bool
    rate: float
    pad: str
    published: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    recreated: int = 0
    errors: list[str] = field(default_factory=list)

    async def publish(self, workflow_id: str, n: int) -> None:
        """Publish event ``n`` of ``workflow_id``, retrying the same body until accepted."""
        event: dict[str, Any] = {"type": "agent_output", "agent_id": "bench", "content": self.pad}
        event.update(confidence=0.5, n=n, t=time.monotonic() * 1000)
        key = f"{workflow_id}.{n}" if self.felix else None
        while True:
            try:
                await self.client.publish(workflow_id, event, idempotency_key=key)
                return
            except ApiError as error:
                if error.status == 404 and not self.felix:
                    await self._recreate(workflow_id)
                elif error.status < 500 and error.status not in (408, 409, 429):
                    raise  # the bench's own mistake: retrying would not help
            except ClientError:
                pass  # the server is down or restarting: the same publish again
            self.retries += 1
            await anyio.sleep(RETRY_S)

    async def _recreate(self, workflow_id: str) -> None:
        # The seed keeps workflows in memory: after its restart they are gone.
        try:
            await self.client.create_workflow(workflow_id=workflow_id, task="felix bench")
            self.recreated += 1
        except ClientError:
            pass

    async def workflow(self, workflow_id: str, offset: float) -> None:
        """Publish ``rate`` events/s to one workflow, one in flight, until cancelled."""
        period = 1 / self.rate
        due = time.monotonic() + offset * period
        self.published[workflow_id] = 0
        while True:
            await anyio.sleep(max(0.0, due - time.monotonic()))
            n = self.published[workflow_id] + 1
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                # Shielded: a stop must not leave an event half published.
                await self.publish(workflow_id, n)
                self.published[workflow_id] = n
            # After an outage the schedule restarts from now: no burst of catch-up.
            due = max(due + period, time.monotonic())


async def run_pub(config: dict[str, Any], commands: MemoryObjectReceiveStream[Any]) -> None:
    """The ``pub`` role: publish from ``go`` until ``stop``, then say what was published."""
    workflows: list[str] = config["workflows"]
    async with FelixClient(config["url"], timeout=2.0) as client:
        producer = Producer(
            client, config["server"] == "felix", float(config["rate"]), "x" * int(config["pad"])
        )
        emit("ready")
        await _next(commands, "go")
        start = time.monotonic()
        try:
            async with anyio.create_task_group() as group:
                for index, workflow_id in enumerate(workflows):
                    group.start_soon(producer.workflow, workflow_id, index / len(workflows))
                await _next(commands, "stop")
                group.cancel_scope.cancel()
        except* (ClientError, RuntimeError) as failures:
            producer.errors.extend(str(error) for error in failures.exceptions[:MAX_ERRORS])
        emit(
            "published",
            counts=producer.published,
            start=start,
            end=time.monotonic(),
            retries=producer.retries,
            recreated=producer.recreated,
            errors=producer.errors,
        )


async def _main(config: dict[str, Any]) -> None:
    send, receive = anyio.create_memory_object_stream[dict[str, Any]](16)
    role = {"sub": run_sub, "pub": run_pub}[config["role"]]
    async with anyio.create_task_group() as group:
        group.start_soon(_commands, send)
        await role(config, receive)
        group.cancel_scope.cancel()


def main(argv: list[str]) -> int:
    """Run one role; errors become an ``error`` event (the orchestrator shows it)."""
    config = json.loads(argv[1])
    # A process that stops answering gets SIGUSR1 from the orchestrator: its
    # threads' stacks then go to its log (stderr), to show where it hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        anyio.run(_main, config)
    except BaseException as error:  # reported to the orchestrator, then exit 1
        emit("error", message=f"{type(error).__name__}: {error}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
