"""The restart storm: thousands of subscribers come back after the server restarts.

One run: start the server (Felix on a private redis-server, so its workflows
and their history outlive the process; the seed-style server as it is), create
the workflows, connect the subscribers (Python clients in a few processes on
the generator CPU, :mod:`felix_bench._restart_clients`), publish at a steady
rate, stop the server with SIGTERM, start it again on the same port, and wait
until every subscriber has a connection to the new process. Publishing goes on
throughout (a failed publish is retried, so the published sequence is known);
a few seconds after all are live it stops, and every subscriber's events are
checked against it: Felix's clients resume, so they must lose nothing; the
seed's cannot, and what they miss is counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from felix_bench._procs import (
    BenchError,
    NodeProc,
    cpu_seconds,
    free_port,
    wait_events,
    wait_listening,
)
from felix_bench._scenarios import EVENT_PAD, Context, Plan, RunResult
from felix_bench._servers import Server, create_workflows, server_command, start_redis

__all__ = ["run_restart"]

#: Seconds the subscribers may take to be live again after the restart.
LIVE_TIMEOUT_S: Final = 60.0
#: Seconds they may take to catch up once publishing stops.
DRAIN_S: Final = 15.0
#: Seconds the old server may take to stop after SIGTERM (Felix drains for
#: FELIX_SHUTDOWN_GRACE, 1 s in the bench) before it is killed.
STOP_GRACE_S: Final = 10.0


@dataclass
class _Storm:
    """What one run has started and learned, handed from step to step."""

    ctx: Context
    plan: Plan
    side: str
    tag: str
    result: RunResult
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    generators: list[NodeProc] = field(default_factory=list)
    subs: list[NodeProc] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)


def run_restart(ctx: Context, scenario: str, plan: Plan, side: str, round_number: int) -> RunResult:
    """Run the restart storm once against ``side`` (``felix`` or ``seed``); never
    raises BenchError."""
    tag = f"{scenario}-{side}-r{round_number}"
    result = RunResult(scenario=scenario, server=side, round=round_number)
    result.check.lossy = side != "felix"
    started = time.monotonic()
    storm = _Storm(ctx, plan, side, tag, result)
    try:
        with contextlib.ExitStack() as stack:
            if side == "felix":
                redis, url = start_redis(
                    ctx.children, ctx.pinning.server_cpu, ctx.logs / f"{tag}-redis.log"
                )
                stack.callback(ctx.children.stop, redis, 5.0)
                storm.env["FELIX_BROKER"] = url
            stack.callback(lambda: ctx.children.stop_all(storm.servers, 5.0))
            # Registered after the servers, so it runs first: clients stop first.
            stack.callback(lambda: ctx.children.stop_all([g.proc for g in storm.generators], 3.0))
            _run(storm)
    except BenchError as error:
        result.error = str(error)
    result.wall_s = time.monotonic() - started
    return result


def _run(storm: _Storm) -> None:
    storm.marks["start"] = time.monotonic()
    storm.port = free_port()
    server = _start_server(storm, "server")
    workflows = create_workflows(server, storm.plan.workflows)
    _start_subscribers(storm, workflows)
    storm.marks["connected"] = time.monotonic()
    pub = _spawn(storm, "pub", {"role": "pub", "workflows": workflows, "rate": storm.plan.rate})
    wait_events([pub], "ready", 60)
    generator_pids = [g.pid for g in storm.generators]
    generator_cpu = sum(cpu_seconds(pid) for pid in generator_pids)
    pub.send({"cmd": "go"})
    storm.marks["go"] = time.monotonic()
    time.sleep(storm.plan.duration_s)
    lives = _restart(storm)
    storm.marks["live"] = time.monotonic()
    time.sleep(storm.plan.duration_s)
    pub.send({"cmd": "stop"})
    (published,) = wait_events([pub], "published", 60)
    counts = {wf: int(n) for wf, n in published["counts"].items()}
    for node in storm.subs:
        node.send({"cmd": "expect", "counts": counts, "drain_s": DRAIN_S})
    storm.marks["stopped"] = time.monotonic()
    dones = wait_events(storm.subs, "done", DRAIN_S + 30)
    storm.marks["done"] = time.monotonic()
    seconds = time.monotonic() - storm.marks["go"]
    generator_cpu = sum(cpu_seconds(pid) for pid in generator_pids) - generator_cpu
    storm.result.metrics["generator_cpu_pct"] = 100 * generator_cpu / seconds
    _audit(storm, published, counts, dones, lives)


def _start_server(storm: _Storm, name: str) -> Server:
    """Start the side's server on the run's one port; wait until it listens."""
    ctx = storm.ctx
    command, env, cwd = server_command(storm.side, ctx.setup, storm.port)
    log = ctx.logs / f"{storm.tag}-{name}.log"
    proc = ctx.children.spawn(
        command, cpu=ctx.pinning.server_cpu, log=log, env={**env, **storm.env}, cwd=cwd
    )
    storm.servers.append(proc)
    wait_listening(proc, storm.port, timeout=60.0, log=log)
    return Server(name=storm.side, port=storm.port, proc=proc, log=log)


def _spawn(storm: _Storm, name: str, config: dict[str, Any]) -> NodeProc:
    """One client process of :mod:`felix_bench._restart_clients`, on the generator CPU."""
    ctx = storm.ctx
    log = ctx.logs / f"{storm.tag}-{name}.log"
    bench_dir = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, (bench_dir, os.environ.get("PYTHONPATH"))))
    full = {
        **config,
        "server": storm.side,
        "url": f"http://127.0.0.1:{storm.port}",
        "pad": EVENT_PAD,
        "connect_concurrency": storm.plan.connect_concurrency,
    }
    proc = ctx.children.spawn(
        [sys.executable, "-m", "felix_bench._restart_clients", json.dumps(full)],
        cpu=ctx.pinning.generator_cpu,
        log=log,
        env={**os.environ, "PYTHONPATH": path},
        pipes=True,
    )
    node = NodeProc(f"{storm.tag}-{name}", proc, log)
    storm.generators.append(node)
    return node


def _start_subscribers(storm: _Storm, workflows: list[str]) -> None:
    """Deal the workflows over the subscriber processes; every one connects at once."""
    procs = max(1, storm.plan.sub_procs)
    for index in range(procs):
        mine = [[wf, storm.plan.subscribers] for wf in workflows[index::procs]]
        storm.subs.append(_spawn(storm, f"sub{index}", {"role": "sub", "workflows": mine}))
    ready = wait_events(storm.subs, "ready", 180)
    failed = sum(int(event["failed"]) for event in ready)
    if failed:
        errors = [message for event in ready for message in event["errors"]]
        raise BenchError(f"{failed} subscribers could not connect: {'; '.join(errors[:3])}")


def _restart(storm: _Storm) -> list[dict[str, Any]]:
    """SIGTERM, wait for the exit, start again on the same port; wait until all are live."""
    old = storm.servers[-1]
    storm.marks["term"] = time.monotonic()
    storm.ctx.children.stop(old, grace=STOP_GRACE_S)
    storm.marks["down"] = time.monotonic()
    for node in storm.subs:
        node.send({"cmd": "down", "timeout_s": LIVE_TIMEOUT_S})
    storm.marks["restart"] = time.monotonic()
    _start_server(storm, "server-restarted")
    storm.marks["listening"] = time.monotonic()
    try:
        return wait_events(storm.subs, "live", LIVE_TIMEOUT_S + 15)
    except BenchError:
        _dump_stacks(storm.subs)
        raise


def _dump_stacks(nodes: list[NodeProc]) -> None:
    """Ask silent client processes for their stacks (faulthandler, into their logs)."""
    for node in nodes:
        if node.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, signal.SIGUSR1)
    time.sleep(0.5)


def _audit(
    storm: _Storm,
    published: dict[str, Any],
    counts: dict[str, int],
    dones: list[dict[str, Any]],
    lives: list[dict[str, Any]],
) -> None:
    """The check and the metrics of the run."""
    check, metrics, info = storm.result.check, storm.result.metrics, storm.result.info
    check.expected = sum(counts.values()) * storm.plan.subscribers
    check.publish_errors = len(published["errors"])
    check.errors.extend(f"publish: {message}" for message in published["errors"])
    for done in dones:
        check.add(done)
        check.connect_failures += int(done["failed"])
    missing = sum(int(live["missing"]) for live in lives)
    check.connect_failures += missing
    if missing:
        check.errors.append(
            f"{missing} subscribers not live {LIVE_TIMEOUT_S:g} s after the restart"
        )
    del check.errors[12:]
    times = sorted(t for live in lives for t in live["times"])
    marks = storm.marks
    metrics["restart_listen_s"] = marks["listening"] - marks["restart"]
    metrics["restart_stop_s"] = marks["down"] - marks["term"]
    if times and not missing:
        metrics["restart_live_s"] = times[-1] - marks["restart"]
        metrics["restart_live_p50_s"] = statistics.median(times) - marks["restart"]
        metrics["restart_outage_s"] = times[-1] - marks["term"]
    metrics["restart_lost"] = check.lost
    metrics["restart_dup_reordered"] = check.duplicates + check.reordered
    seconds = max(1e-3, float(published["end"]) - float(published["start"]))
    metrics["events_per_s"] = sum(counts.values()) / seconds
    info.update(
        events_published=sum(counts.values()),
        publish_retries=int(published["retries"]),
        workflows_recreated=int(published["recreated"]),
        gaps=sum(int(done["gaps"]) for done in dones),
        subscribers_live=len(times),
        # Where the run's time went, for keeping the scenario short.
        phases_s={name: round(at - marks["start"], 2) for name, at in marks.items()},
    )
