"""The scenarios, and how one run of a scenario against one server goes.

A run: start a fresh server (pinned to its CPU), create the workflows, start
the subscriber processes and connect them, start the publisher (whose canary
subscribers bound how far it runs ahead in ``max`` mode), measure CPU from
``go`` until every subscriber has checked its last event, then stop
everything. Each subscriber checks that it got every event exactly once and
in order, by the publisher's own sequence number ``n`` (the seed-style
server assigns no ``seq``); on Felix it also checks ``seq`` against ``n``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from felix_bench._procs import (
    BenchError,
    Children,
    NodeProc,
    Pinning,
    cpu_seconds,
    rss_bytes,
    runqueue_wait_seconds,
    wait_events,
)
from felix_bench._servers import (
    SERVERS,
    Server,
    ServerSetup,
    create_workflows,
    running_server,
)
from felix_bench._stats import percentiles, read_samples

__all__ = [
    "SCENARIOS",
    "Check",
    "Context",
    "Metric",
    "Plan",
    "RunResult",
    "Scenario",
    "run_once",
    "side_server",
]

#: Characters of padding in each event's ``content``: with the other fields an
#: event body is ~100 bytes, the size the calibration notes measured.
EVENT_PAD: Final = 24
MIB: Final = 1024 * 1024
#: How long subscribers may take to catch up once the publisher stops.
DRAIN_MS: Final = 20_000


@dataclass(frozen=True)
class Metric:
    """One measured quantity; ``target`` bounds the ratio of the scenario's two sides.

    With ``absolute``, the target bounds the first side's own value instead (a
    ratio measured within one run, like the producer stream against POST).
    With ``every_round``, the target bounds the ratio of every round (the two
    sides' runs of that round), not the ratio of the medians: the worst
    round's ratio is what is judged.
    """

    key: str
    label: str
    unit: str
    higher_is_better: bool
    target: float | None = None
    digits: int = 0
    absolute: bool = False
    every_round: bool = False

    def __post_init__(self) -> None:
        if self.absolute and self.every_round:
            raise ValueError(f"{self.key}: a target is absolute or per round, not both")

    def target_text(self) -> str:
        """The target as the table shows it, e.g. ``>= 2.0x`` or ``<= 1x every round``."""
        if self.target is None:
            return ""
        text = f"{'>=' if self.higher_is_better else '<='} {self.target:g}{self._suffix}"
        return text + " every round" if self.every_round else text

    def judged_text(self, value: float) -> str:
        """A judged value as the verdicts print it: ``1.20x``, or ``3 events``
        for an absolute target on a quantity that is not a ratio."""
        return f"{value:.2f}x" if self._suffix == "x" else f"{value:g}{self._suffix}"

    @property
    def _suffix(self) -> str:
        # Targets are ratios (``2x``) except an absolute one on a count or a time.
        return f" {self.unit}" if self.absolute and self.unit != "x" else "x"

    def worst(self, values: Sequence[float]) -> float:
        """The least favourable of ``values`` (per-round ratios); NaN if any is
        missing, since a round without a figure cannot be said to hold."""
        if not values or not all(math.isfinite(value) for value in values):
            return math.nan
        return min(values) if self.higher_is_better else max(values)

    def meets(self, value: float) -> bool | None:
        """Whether ``value`` (the ratio, or the first side's value when
        ``absolute``) meets the target; None without a target or a value."""
        if self.target is None or not math.isfinite(value):
            return None
        return value >= self.target if self.higher_is_better else value <= self.target


@dataclass(frozen=True)
class Plan:
    """What one run of a scenario does (the quick profile makes it shorter)."""

    workflows: int
    #: Subscribers per workflow, the publisher's canary included (idle: the
    #: measured connections, canaries come after the measurement).
    subscribers: int
    #: ``max``: as fast as the window allows; ``rate``: events/s per
    #: workflow; ``count``: ``count`` events per workflow, one request at a time.
    mode: str
    batch: int = 1
    #: Publisher streams per workflow, each with one request in flight and
    #: its own numbering; several keep a server busy between requests.
    streams: int = 1
    duration_s: float = 0.0
    rate: float = 0.0
    count: int = 0
    #: ``max`` mode: events the publisher may be ahead of its canary.
    window: int = 0
    idle: bool = False
    storm_clients: int = 0
    sub_procs: int = 2
    connect_concurrency: int = 32
    warmup: int = 0
    settle_s: float = 2.0
    #: How subscribers (the canaries included) follow a workflow: ``ws`` or ``sse``.
    transport: str = "ws"
    #: ``post``: one POST per publish; ``both``: POSTs for ``duration_s``, then
    #: the producer stream (WS /api/v1/ws/publish) for as long again;
    #: ``stream``: the producer stream only, for ``duration_s``.
    publisher: str = "post"
    #: With the producer stream: frames the publisher keeps unanswered.
    stream_in_flight: int = 512
    #: The publisher on Felix's side when it differs from the seed's (which has
    #: no producer stream): ``stream`` publishes over the producer stream only.
    felix_publisher: str = ""
    #: The restart storm (felix_bench._restart): ``subscribers`` Python clients
    #: per workflow, ``rate`` events/s per workflow, the server restarted after
    #: ``duration_s`` and publishing on for ``duration_s`` after all are live.
    restart: bool = False

    def describe(self) -> str:
        """A one-line summary for the report."""
        if self.restart:
            return (
                f"{self.workflows} workflow(s) x {self.subscribers} subscriber(s), Python clients "
                f"in {self.sub_procs} processes, {self.rate * self.workflows:g} events/s in all; "
                f"the server restarted (SIGTERM, same port) after {self.duration_s:g} s, "
                f"publishing on until {self.duration_s:g} s after all are live again"
            )
        parts = [f"{self.workflows} workflow(s) x {self.subscribers} subscriber(s)"]
        if self.transport == "sse":
            parts[0] += " over Server-Sent Events"
        if self.publisher == "both":
            parts.append(
                f"one POST per event for {self.duration_s:g} s, then the producer stream for "
                f"{self.duration_s:g} s ({self.stream_in_flight} frames in flight)"
            )
        elif self.mode == "max":
            parts.append(f"as fast as possible for {self.duration_s:g} s")
            if self.felix_publisher == "stream":
                parts.append(
                    f"Felix over the producer stream ({self.stream_in_flight} frames in flight "
                    "per workflow), the seed one POST per event"
                )
            parts.append(f"{self.batch} event(s)/publish, window {self.window} events")
        elif self.mode == "rate":
            parts.append(f"{self.rate:g} events/s per workflow for {self.duration_s:g} s")
        else:
            parts.append(f"then {self.count} event(s) per workflow to check them")
        if self.streams > 1:
            parts.append(f"{self.streams} publishes in flight per workflow")
        if self.storm_clients:
            parts.append(f"{self.storm_clients} clients connecting and disconnecting")
        return ", ".join(parts)


@dataclass(frozen=True)
class Scenario:
    """A named scenario: what it shows, its metrics, its plan per profile."""

    name: str
    title: str
    summary: str
    metrics: tuple[Metric, ...]
    full: Plan
    quick: Plan
    #: What it runs against, each ``server`` or ``server:transport``: two
    #: sides are compared (the report's ratio is first / second), one side is
    #: measured alone (what only Felix has; targets are then ``absolute``).
    #: Most scenarios compare Felix with the seed-style server; ``sse-fanout``
    #: compares Felix's two transports; the producer scenarios run Felix alone.
    sides: tuple[str, ...] = SERVERS

    def __post_init__(self) -> None:
        if not 1 <= len(self.sides) <= 2:
            raise ValueError(f"{self.name}: a scenario has one or two sides, not {self.sides}")

    def plan(self, quick: bool) -> Plan:
        """The plan of the chosen profile."""
        return self.quick if quick else self.full

    @property
    def against_seed(self) -> bool:
        """Whether this scenario compares Felix with the seed-style server."""
        return self.sides == SERVERS


def side_server(side: str) -> tuple[str, str | None]:
    """The server a side runs and the transport it forces (``felix:sse`` -> felix, sse)."""
    server, _, transport = side.partition(":")
    return server, transport or None


#: The counts a generator process reports when it is done, summed by Check.add.
_TALLIED: Final = (
    "subscribers",
    "delivered",
    "lost",
    "duplicates",
    "reordered",
    "unexpected",
    "seq_errors",
    "closed_early",
)


@dataclass
class Check:
    """The correctness audit of one run, summed over every subscriber."""

    subscribers: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    reordered: int = 0
    unexpected: int = 0
    seq_errors: int = 0
    closed_early: int = 0
    connect_failures: int = 0
    publish_errors: int = 0
    errors: list[str] = field(default_factory=list)
    #: A server that cannot resume (the seed in the restart storm): what its
    #: subscribers lost, got twice or out of order is measured, not a failure.
    lossy: bool = False

    def add(self, done: Mapping[str, Any]) -> None:
        """Add one generator process's final counts (a count it does not report is 0)."""
        for name in _TALLIED:
            setattr(self, name, getattr(self, name) + int(done.get(name, 0)))
        self.errors.extend(done.get("errors", ()))

    @property
    def ok(self) -> bool:
        """Every subscriber got every event exactly once, in order, and nothing broke
        (``lossy``: nothing broke, and every subscriber got events)."""
        problems = [
            self.unexpected,
            self.seq_errors,
            self.closed_early,
            self.connect_failures,
            self.publish_errors,
        ]
        if self.lossy:
            return self.expected > 0 and self.delivered > 0 and not any(problems)
        problems += [self.lost, self.duplicates, self.reordered]
        return self.expected > 0 and self.delivered == self.expected and not any(problems)

    def describe(self) -> str:
        """``ok`` or what went wrong, in numbers."""
        if self.ok and self.lossy:
            return f"ok, no resume: {self.lost} lost, {self.duplicates + self.reordered} dup/reord"
        if self.ok:
            return f"ok: {self.delivered} deliveries to {self.subscribers} subscribers"
        parts = [
            f"{value} {name}"
            for name, value in (
                ("lost", self.lost),
                ("duplicated", self.duplicates),
                ("reordered", self.reordered),
                ("unexpected", self.unexpected),
                ("seq errors", self.seq_errors),
                ("closed by the server", self.closed_early),
                ("connect failures", self.connect_failures),
                ("publish errors", self.publish_errors),
            )
            if value
        ]
        return "FAILED: " + (", ".join(parts) or f"{self.delivered}/{self.expected} delivered")


@dataclass
class RunResult:
    """One run of one scenario against one server."""

    scenario: str
    server: str
    round: int
    metrics: dict[str, float] = field(default_factory=dict)
    check: Check = field(default_factory=Check)
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        """The run completed and its correctness check passed."""
        return self.error is None and self.check.ok


@dataclass
class Context:
    """What every run needs: processes, pinning, servers, paths, options."""

    children: Children
    pinning: Pinning
    setup: ServerSetup
    node: str
    loadgen: Path
    logs: Path
    scratch: Path
    deflate: bool
    say: Callable[[str], None]

    def spawn_node(self, name: str, config: Mapping[str, Any]) -> NodeProc:
        """Start one generator process (pinned to the generator CPU)."""
        log = self.logs / f"{name}.log"
        proc = self.children.spawn(
            [self.node, str(self.loadgen), json.dumps(dict(config))],
            cpu=self.pinning.generator_cpu,
            log=log,
            pipes=True,
        )
        return NodeProc(name, proc, log)


# ---- the scenarios ------------------------------------------------------------

_DELIVERIES = Metric("deliveries_per_s", "deliveries/s", "1/s", higher_is_better=True)
_P50 = Metric("latency_p50_ms", "latency p50", "ms", higher_is_better=False, digits=2)
_P90 = Metric("latency_p90_ms", "latency p90", "ms", higher_is_better=False, digits=2)
_P99 = Metric("latency_p99_ms", "latency p99", "ms", higher_is_better=False, digits=2)
_MAX = Metric("latency_max_ms", "latency max", "ms", higher_is_better=False, digits=2)
_EVENTS = Metric("events_per_s", "events published/s", "1/s", higher_is_better=True)
_LAG = Metric(
    "publish_lag_max_ms",
    "publisher behind schedule, max",
    "ms",
    higher_is_better=False,
)
_US_PER_DELIVERY = Metric(
    "server_us_per_delivery", "server CPU per delivery", "us", higher_is_better=False, digits=1
)
#: Every scenario but the producer ones publishes one event per POST, so this
#: is the server's cost of taking one POST in and fanning its event out.
_US_PER_EVENT = Metric(
    "server_us_per_event", "server CPU per POST", "us", higher_is_better=False, digits=1
)
_SERVER_CPU = Metric("server_cpu_pct", "server CPU", "% of a core", higher_is_better=False)
_SERVER_WAIT = Metric(
    "server_wait_pct", "server waiting for its CPU", "% of time", higher_is_better=False
)
_GENERATOR_CPU = Metric(
    "generator_cpu_pct", "generator CPU (all procs)", "% of a core", higher_is_better=False
)
#: Shown for every scenario after its own metrics.
COMMON_METRICS: Final = (_SERVER_CPU, _SERVER_WAIT, _GENERATOR_CPU)

_FANOUT = Plan(workflows=1, subscribers=100, mode="max", streams=4, duration_s=5.0, window=100)
_FANOUT_BATCH = replace(_FANOUT, batch=10, window=200)
_MANY = Plan(workflows=100, subscribers=5, mode="max", duration_s=5.0, window=20)
_LATENCY = Plan(workflows=1, subscribers=100, mode="rate", rate=200.0, streams=4, duration_s=10.0)
_IDLE = Plan(workflows=30, subscribers=100, mode="count", count=3, idle=True, warmup=20)
#: The canary (the only subscriber) is one event per frame behind at most the window.
_PRODUCER = Plan(
    workflows=1, subscribers=1, mode="max", duration_s=5.0, window=4000, publisher="both"
)
#: As many-workflows, Felix's publisher on one producer connection for all 100
#: workflows (answers in the order sent); the seed's one POST per event.
_MANY_STREAM = replace(_MANY, felix_publisher="stream", stream_in_flight=32)
_STREAM_EVENTS = Metric(
    "stream_events_per_s", "producer stream: events/s", "1/s", higher_is_better=True
)
_POST_EVENTS = Metric("post_events_per_s", "one POST per event: events/s", "1/s", True)
_STREAM_VS_POST = Metric(
    "stream_vs_post", "stream / POST", "x", higher_is_better=True, target=3.0, digits=2,
    absolute=True,
)  # fmt: skip
_STORM = Plan(
    workflows=1,
    subscribers=5,
    mode="rate",
    rate=20.0,
    duration_s=5.0,
    storm_clients=50,
    sub_procs=1,
)


#: 2,000 subscribers (20 on each of 100 workflows), 150 events/s in all.
_RESTART = Plan(
    workflows=100,
    subscribers=20,
    mode="rate",
    rate=1.5,
    duration_s=2.5,
    sub_procs=4,
    connect_concurrency=32,
    restart=True,
)
_RESTART_METRICS: Final = (
    Metric(
        "restart_live_s",
        "restart to all subscribers live",
        "s",
        higher_is_better=False,
        target=1.0,
        digits=2,
    ),
    Metric("restart_lost", "events lost", "events", False, target=0.0, absolute=True),
    Metric(
        "restart_dup_reordered", "events duplicated or reordered", "events", False,
        target=0.0, absolute=True,
    ),
    Metric("restart_live_p50_s", "restart to half live", "s", False, digits=2),
    Metric("restart_listen_s", "restart to listening", "s", False, digits=2),
    Metric("restart_stop_s", "SIGTERM to exit", "s", False, digits=2),
    Metric("restart_outage_s", "SIGTERM to all live", "s", False, digits=2),
)  # fmt: skip


def _target(metric: Metric, target: float) -> Metric:
    return replace(metric, target=target)


SCENARIOS: Final[dict[str, Scenario]] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            name="fanout",
            title="fan-out 1 x 100",
            summary="one workflow, 100 subscribers, one event per publish, as fast as possible",
            metrics=(
                _target(_DELIVERIES, 2.0),
                _P50,
                _target(_P99, 0.5),
                _EVENTS,
                _US_PER_DELIVERY,
            ),
            full=_FANOUT,
            quick=replace(_FANOUT, duration_s=2.0),
        ),
        Scenario(
            name="sse-fanout",
            title="fan-out 1 x 100, SSE vs WebSocket",
            summary=(
                "as fan-out, Felix's subscribers on Server-Sent Events against Felix's "
                "subscribers on WebSockets (ratio = SSE / WebSocket)"
            ),
            metrics=(
                _target(_US_PER_DELIVERY, 1.25),
                _DELIVERIES,
                _P50,
                _P99,
                _EVENTS,
            ),
            full=_FANOUT,
            quick=replace(_FANOUT, duration_s=2.0),
            sides=("felix:sse", "felix:ws"),
        ),
        Scenario(
            name="fanout-batch",
            title="fan-out 1 x 100, batches of 10",
            summary="as fan-out, with 10 events per publish (one frame per event)",
            metrics=(_DELIVERIES, _P50, _P99, _EVENTS, _US_PER_DELIVERY),
            full=_FANOUT_BATCH,
            quick=replace(_FANOUT_BATCH, duration_s=2.0),
        ),
        Scenario(
            name="many-workflows",
            title="many workflows 100 x 5",
            summary="100 workflows with 5 subscribers each, all published at once",
            metrics=(
                _target(_DELIVERIES, 2.0),
                _target(_US_PER_EVENT, 0.5),
                _P50,
                _P99,
                _EVENTS,
                _US_PER_DELIVERY,
            ),
            full=_MANY,
            quick=replace(_MANY, duration_s=2.0),
        ),
        Scenario(
            name="many-workflows-stream",
            title="many workflows 100 x 5, producer stream",
            summary=(
                "as many workflows, Felix's publisher on the producer stream (one WebSocket "
                "for all 100 workflows) against the seed's one POST per event"
            ),
            metrics=(_target(_DELIVERIES, 5.0), _P50, _P99, _EVENTS, _US_PER_DELIVERY),
            full=_MANY_STREAM,
            quick=replace(_MANY_STREAM, duration_s=2.0),
        ),
        Scenario(
            name="latency",
            title="latency at 200 events/s x 100",
            summary="one workflow, 100 subscribers, a steady 200 events/s",
            metrics=(
                _P50,
                _P90,
                replace(_P99, target=1.0, every_round=True),
                _MAX,
                _EVENTS,
                _LAG,
                _US_PER_DELIVERY,
            ),
            full=_LATENCY,
            quick=replace(_LATENCY, duration_s=4.0),
        ),
        Scenario(
            name="idle",
            title="idle connections",
            summary="3,000 idle WebSockets (30 workflows x 100): memory and connect rate",
            metrics=(
                Metric(
                    "kb_per_connection",
                    "server memory per connection",
                    "KiB",
                    higher_is_better=False,
                    target=0.5,
                    digits=1,
                ),
                Metric("connects_per_s", "connects/s", "1/s", higher_is_better=True),
                Metric(
                    "server_us_per_connect", "server CPU per connect", "us", higher_is_better=False
                ),
                Metric("rss_before_mib", "RSS before", "MiB", higher_is_better=False, digits=1),
                Metric("rss_after_mib", "RSS after", "MiB", higher_is_better=False, digits=1),
            ),
            full=_IDLE,
            quick=replace(_IDLE, workflows=10),
        ),
        Scenario(
            name="storm",
            title="connect storm, 50 clients",
            summary=(
                "50 clients connect, wait for `connected`, close, repeat; 5 steady subscribers "
                "get a 20 events/s stream meanwhile"
            ),
            metrics=(
                Metric(
                    "server_us_per_handshake",
                    "server CPU per handshake",
                    "us",
                    higher_is_better=False,
                    target=0.75,
                ),
                Metric("handshakes_per_s", "handshakes/s", "1/s", higher_is_better=True),
                Metric("handshake_p50_ms", "handshake p50", "ms", higher_is_better=False, digits=2),
                Metric("handshake_p99_ms", "handshake p99", "ms", higher_is_better=False, digits=2),
                _EVENTS,
                _LAG,
            ),
            full=_STORM,
            quick=replace(_STORM, duration_s=2.0),
        ),
        Scenario(
            name="producer-stream",
            title="producer stream vs POST, 1 x 1",
            summary=(
                "one workflow, one subscriber: events/s published one POST per event (one "
                "request in flight), then over the producer stream (frames pipelined); Felix only"
            ),
            metrics=(_STREAM_VS_POST, _STREAM_EVENTS, _POST_EVENTS, _US_PER_DELIVERY),
            full=_PRODUCER,
            quick=replace(_PRODUCER, duration_s=2.0),
            sides=("felix",),
        ),
        Scenario(
            name="restart-storm",
            title="restart storm, 2,000 clients",
            summary=(
                "2,000 Python subscribers (100 workflows x 20) while 150 events/s are "
                "published; the server is restarted; Felix's clients (felix.client, on a "
                "Redis broker) resume, the seed's reconnect with the same backoff"
            ),
            metrics=(*_RESTART_METRICS, _EVENTS),
            full=_RESTART,
            quick=replace(_RESTART, duration_s=1.5),
        ),
    )
}


# ---- one run -------------------------------------------------------------------


def _split(workflows: Sequence[str], per_workflow: int, procs: int) -> list[list[list[Any]]]:
    """Deal ``per_workflow`` subscribers of each workflow over ``procs`` processes."""
    buckets: list[dict[str, int]] = [{} for _ in range(max(1, procs))]
    dealt = 0
    for workflow_id in workflows:
        for _ in range(per_workflow):
            bucket = buckets[dealt % len(buckets)]
            bucket[workflow_id] = bucket.get(workflow_id, 0) + 1
            dealt += 1
    return [[[wf, count] for wf, count in bucket.items()] for bucket in buckets if bucket]


def _cpu(pids: Sequence[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def _rss(pids: Sequence[int]) -> int:
    return sum(rss_bytes(pid) for pid in pids)


def run_once(
    ctx: Context, scenario: Scenario, plan: Plan, server_name: str, round_number: int
) -> RunResult:
    """Run ``scenario`` once against a fresh ``server_name``; never raises BenchError.

    ``server_name`` is a server, or one of the scenario's sides
    (``felix:sse``): a side's transport overrides the plan's.
    """
    if plan.restart:
        # Imported here: the restart storm's module builds on this one.
        from felix_bench._restart import run_restart  # noqa: PLC0415

        return run_restart(ctx, scenario.name, plan, server_name, round_number)
    tag = f"{scenario.name}-{server_name.replace(':', '-')}-r{round_number}"
    result = RunResult(scenario=scenario.name, server=server_name, round=round_number)
    started = time.monotonic()
    server_name, transport = side_server(server_name)
    if transport is not None:
        plan = replace(plan, transport=transport)
    if server_name == "felix" and plan.felix_publisher:
        plan = replace(plan, publisher=plan.felix_publisher)
    try:
        with contextlib.ExitStack() as stack:
            server = stack.enter_context(
                running_server(
                    server_name,
                    ctx.setup,
                    ctx.children,
                    ctx.pinning.server_cpu,
                    ctx.logs / f"{tag}-server.log",
                )
            )
            generators: list[NodeProc] = []
            # Registered after the server, so it runs first: generators stop
            # before the server does.
            stack.callback(lambda: ctx.children.stop_all([g.proc for g in generators], 3.0))
            _run(ctx, plan, server=server, tag=tag, result=result, generators=generators)
    except BenchError as error:
        result.error = str(error)
    result.wall_s = time.monotonic() - started
    return result


@dataclass
class _Live:
    """What one run has started and learned, handed from step to step."""

    ctx: Context
    plan: Plan
    server: Server
    tag: str
    result: RunResult
    generators: list[NodeProc]
    workflows: list[str] = field(default_factory=list)
    assignments: list[list[list[Any]]] = field(default_factory=list)
    subs: list[NodeProc] = field(default_factory=list)
    latency_files: list[Path] = field(default_factory=list)
    progress: list[dict[str, Any]] = field(default_factory=list)
    starters: list[NodeProc] = field(default_factory=list)
    storm: NodeProc | None = None

    def stream_base(self, port: int) -> str:
        """Where a subscriber follows a workflow (append its id): a WebSocket,
        or over SSE an http:// URL (the load generator picks its client by the scheme)."""
        if self.plan.transport == "ws":
            return f"ws://127.0.0.1:{port}/api/v1/ws/workflows/"
        return f"http://127.0.0.1:{port}/api/v1/sse/workflows/"


@dataclass
class _Window:
    """What the measured window produced."""

    published: dict[str, Any]
    storm_done: dict[str, Any] | None
    dones: list[dict[str, Any]]
    counts: dict[str, int]
    seconds: float
    server_cpu: float
    generator_cpu: float
    server_wait: float


def _run(
    ctx: Context,
    plan: Plan,
    *,
    server: Server,
    tag: str,
    result: RunResult,
    generators: list[NodeProc],
) -> None:
    live = _Live(ctx, plan, server, tag, result, generators)
    _start_subscribers(live)
    _connect_subscribers(live)
    _start_publisher(live)
    window = _measure(live)
    _audit(live, window)
    _record_metrics(live, window)
    for path in live.latency_files:
        path.unlink(missing_ok=True)
    for entry in live.progress:
        Path(entry["file"]).unlink(missing_ok=True)


def _start_subscribers(live: _Live) -> None:
    """1. Workflows and subscriber processes; they connect on command."""
    ctx, plan, tag = live.ctx, live.plan, live.tag
    live.workflows = create_workflows(live.server, plan.workflows)
    # A cluster's subscribers are dealt over its nodes; the publisher (and its
    # canaries) use the first, so most deliveries cross from node to node.
    bases = [live.stream_base(port) for port in live.server.ws_ports]
    # The publisher's canary is one of a workflow's subscribers, except in the
    # idle scenario, where the measured connections are all in sub processes.
    held = plan.subscribers if plan.idle else plan.subscribers - 1
    live.assignments = _split(live.workflows, held, plan.sub_procs) if held > 0 else []
    for index, assignment in enumerate(live.assignments):
        latency_file = ctx.scratch / f"{tag}-sub{index}.f64"
        live.latency_files.append(latency_file)
        # Where the sub process says how far its slowest subscriber of each
        # workflow has got; the publisher's window counts from it.
        # (Only `max` mode has a window; the others would just burn the generator's CPU.)
        progress_file = ctx.scratch / f"{tag}-sub{index}.progress"
        if plan.mode == "max":
            live.progress.append(
                {"file": str(progress_file), "workflows": [wf for wf, _ in assignment]}
            )
        node = ctx.spawn_node(
            f"{tag}-sub{index}",
            {
                "role": "sub",
                "ws_base": bases[(index + 1) % len(bases)],
                "workflows": assignment,
                "connect_concurrency": plan.connect_concurrency,
                "warmup": plan.warmup if index == 0 else 0,
                "deflate": ctx.deflate,
                "latency_file": str(latency_file),
                "progress_file": str(progress_file) if plan.mode == "max" else None,
                "max_ms": 300_000,
            },
        )
        live.subs.append(node)
        live.generators.append(node)
    wait_events(live.subs, "started", 60)


def _connect_subscribers(live: _Live) -> None:
    """2. Connect every subscriber (idle: measure memory around it)."""
    plan, server, check = live.plan, live.server, live.result.check
    rss_before = 0
    if plan.idle:
        time.sleep(1.0)  # let the warm-up connections' memory settle
        rss_before = _rss(server.pids)
    connect_cpu = _cpu(server.pids)
    for node in live.subs:
        node.send({"cmd": "connect"})
    ready = wait_events(live.subs, "ready", 180)
    connected = sum(int(event["connected"]) for event in ready)
    check.connect_failures += sum(int(event["failed"]) for event in ready)
    for event in ready:
        check.errors.extend(f"connect: {message}" for message in event["errors"])
    if check.connect_failures:
        raise BenchError(
            f"{check.connect_failures} of {connected + check.connect_failures} subscribers "
            f"could not connect: {'; '.join(check.errors[:3])}"
        )
    if plan.idle:
        _record_idle(live, ready, connected, rss_before, connect_cpu)


def _record_idle(
    live: _Live, ready: list[dict[str, Any]], connected: int, rss_before: int, connect_cpu: float
) -> None:
    """The idle scenario's connect rate and memory per connection."""
    metrics, server = live.result.metrics, live.server
    first = min(float(event["first_start"]) for event in ready)
    last = max(float(event["last_done"]) for event in ready)
    metrics["connects_per_s"] = connected / max(1e-3, (last - first) / 1000)
    metrics["server_us_per_connect"] = (_cpu(server.pids) - connect_cpu) * 1e6 / max(1, connected)
    time.sleep(live.plan.settle_s)
    rss_after = _rss(server.pids)
    metrics["rss_before_mib"] = rss_before / MIB
    metrics["rss_after_mib"] = rss_after / MIB
    metrics["kb_per_connection"] = (rss_after - rss_before) / 1024 / max(1, connected)
    live.result.info["idle_connections"] = connected


def _start_publisher(live: _Live) -> None:
    """3. The publisher (with its canaries) and the storm, ready but not started."""
    ctx, plan, tag = live.ctx, live.plan, live.tag
    ws_base = live.stream_base(live.server.port)
    pub_latency = ctx.scratch / f"{tag}-pub.f64"
    live.latency_files.append(pub_latency)
    pub = ctx.spawn_node(
        f"{tag}-pub",
        {
            "role": "pub",
            "host": "127.0.0.1",
            "port": live.server.port,
            "ws_base": ws_base,
            "workflows": live.workflows,
            "mode": plan.mode,
            "batch": plan.batch,
            "streams": plan.streams,
            "duration_ms": plan.duration_s * 1000,
            "rate": plan.rate,
            "count": plan.count,
            "window": plan.window,
            "pad": EVENT_PAD,
            "deflate": ctx.deflate,
            "progress": live.progress,
            "publisher": plan.publisher,
            "stream_in_flight": plan.stream_in_flight,
            "latency_file": str(pub_latency),
            "max_ms": 300_000,
        },
    )
    live.generators.append(pub)
    live.starters = [pub]
    if plan.storm_clients:
        live.storm = ctx.spawn_node(
            f"{tag}-storm",
            {
                "role": "storm",
                "url": ws_base + live.workflows[0],
                "clients": plan.storm_clients,
                "duration_ms": plan.duration_s * 1000,
                "deflate": ctx.deflate,
                "max_ms": 300_000,
            },
        )
        live.generators.append(live.storm)
        live.starters.append(live.storm)
    wait_events(live.starters, "ready", 60)


def _measure(live: _Live) -> _Window:
    """4. The measured window: from "go" until every subscriber has checked its
    last event (or the drain timeout passed); then every generator is told to quit."""
    server, pub, storm = live.server, live.starters[0], live.storm
    pids = [g.pid for g in live.generators]
    t0 = time.monotonic()
    server0, generators0 = _cpu(server.pids), _cpu(pids)
    wait0 = sum(runqueue_wait_seconds(pid) for pid in server.pids)
    for node in live.starters:
        node.send({"cmd": "go"})
    # The producer scenarios publish for twice the duration (POSTs, then the stream).
    budget = live.plan.duration_s * (2 if live.plan.publisher == "both" else 1) + 60
    (published,) = wait_events([pub], "published", budget)
    storm_done = wait_events([storm], "done", budget)[0] if storm is not None else None
    per_stream: dict[str, list[int]] = {
        wf: [int(n) for n in streams] for wf, streams in published["published"].items()
    }
    listeners = [*live.subs, pub]
    for node in listeners:
        node.send({"cmd": "expect", "counts": per_stream, "drain_ms": DRAIN_MS})
    dones = wait_events(listeners, "done", DRAIN_MS / 1000 + 30)
    t1 = time.monotonic()
    window = _Window(
        published=published,
        storm_done=storm_done,
        dones=dones,
        counts={wf: sum(streams) for wf, streams in per_stream.items()},
        seconds=max(1e-3, t1 - t0),
        server_cpu=_cpu(server.pids) - server0,
        generator_cpu=_cpu(pids) - generators0,
        server_wait=sum(runqueue_wait_seconds(pid) for pid in server.pids) - wait0,
    )
    live.result.metrics["server_rss_end_mib"] = _rss(server.pids) / MIB
    for node in live.generators:
        with contextlib.suppress(BenchError):
            node.send({"cmd": "quit"})
    return window


def _audit(live: _Live, window: _Window) -> None:
    """What each subscriber should have had, against what it got."""
    check, counts = live.result.check, window.counts
    check.publish_errors = len(window.published["errors"])
    check.errors.extend(f"publish: {message}" for message in window.published["errors"])
    expected = sum(int(count) * counts.get(wf, 0) for a in live.assignments for wf, count in a)
    expected += sum(counts.values())  # one canary per workflow
    check.expected = expected
    for done in window.dones:
        check.add(done)
    if window.storm_done is not None:
        check.connect_failures += int(window.storm_done["failures"])
        check.errors.extend(f"storm: {message}" for message in window.storm_done["errors"])
    del check.errors[12:]


def _record_metrics(live: _Live, window: _Window) -> None:
    """5. The metrics of the window: CPU, throughput, delivery and latency."""
    metrics, info, published = live.result.metrics, live.result.info, window.published
    metrics["server_cpu_pct"] = 100 * window.server_cpu / window.seconds
    metrics["generator_cpu_pct"] = 100 * window.generator_cpu / window.seconds
    metrics["server_wait_pct"] = 100 * window.server_wait / window.seconds
    start = float(published["start"])
    publish_s = max(1e-3, (float(published["end"]) - start) / 1000)
    metrics["events_per_s"] = sum(window.counts.values()) / publish_s
    info["requests"] = int(published["requests"])
    info["late_publishes"] = int(published["late"])
    if live.plan.mode == "rate":
        # Latency is measured from the actual send; a server that cannot take
        # the rate makes the publisher fall behind instead, shown here.
        metrics["publish_lag_max_ms"] = float(published["max_lag_ms"])
    info["post_ms"] = published["post_ms"]
    info["events_published"] = sum(window.counts.values())
    metrics["server_us_per_event"] = window.server_cpu * 1e6 / max(1, sum(window.counts.values()))
    delivered = live.result.check.delivered
    last_receive = max(
        (float(d["last_recv"]) for d in window.dones if d["last_recv"] is not None), default=0
    )
    if delivered and last_receive > start:
        metrics["deliveries_per_s"] = delivered / ((last_receive - start) / 1000)
        metrics["server_us_per_delivery"] = window.server_cpu * 1e6 / delivered
    _record_phases(live, published)
    _record_latency(live)
    if window.storm_done is not None:
        _record_storm(live, window)


def _record_phases(live: _Live, published: dict[str, Any]) -> None:
    """The producer scenarios: events/s of the POST phase, of the stream phase, and their ratio."""
    phases = published.get("phases") or {}
    if "post" not in phases or "stream" not in phases:
        return
    post = phases["post"]["events"] / max(1e-3, phases["post"]["ms"] / 1000)
    stream = phases["stream"]["events"] / max(1e-3, phases["stream"]["ms"] / 1000)
    metrics = live.result.metrics
    metrics["post_events_per_s"] = post
    metrics["stream_events_per_s"] = stream
    metrics["stream_vs_post"] = stream / post if post else math.nan
    live.result.info["phases"] = phases


def _record_latency(live: _Live) -> None:
    samples = read_samples(live.latency_files)
    if len(samples):
        quantiles = percentiles(samples, (0.5, 0.9, 0.99, 1.0))
        metrics = live.result.metrics
        metrics["latency_p50_ms"] = quantiles[0.5]
        metrics["latency_p90_ms"] = quantiles[0.9]
        metrics["latency_p99_ms"] = quantiles[0.99]
        metrics["latency_max_ms"] = quantiles[1.0]
        live.result.info["latency_samples"] = len(samples)


def _record_storm(live: _Live, window: _Window) -> None:
    storm_done = window.storm_done
    assert storm_done is not None
    metrics = live.result.metrics
    storm_s = max(1e-3, (float(storm_done["end"]) - float(storm_done["start"])) / 1000)
    handshakes = int(storm_done["handshakes"])
    metrics["handshakes_per_s"] = handshakes / storm_s
    summary = storm_done["handshake_ms"] or {}
    metrics["handshake_p50_ms"] = float(summary.get("p50", math.nan))
    metrics["handshake_p99_ms"] = float(summary.get("p99", math.nan))
    metrics["server_us_per_handshake"] = window.server_cpu * 1e6 / max(1, handshakes)
    live.result.info["handshakes"] = handshakes
