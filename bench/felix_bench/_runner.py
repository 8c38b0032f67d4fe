"""The orchestrator: prepare, run every scenario interleaved, report."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

from felix_bench._procs import BenchError, Children, Pinning
from felix_bench._report import ScenarioSummary, format_table, summarize, to_json, write_chart
from felix_bench._report import write_json as write_json_file
from felix_bench._scenarios import (
    COMMON_METRICS,
    SCENARIOS,
    Context,
    RunResult,
    Scenario,
    run_once,
)
from felix_bench._servers import (
    ServerSetup,
    describe_env,
    felix_command,
    prepare_seed_venv,
)

__all__ = ["Options", "run_bench"]

#: File descriptors the idle scenario needs (3,000+ sockets in the server and
#: as many in the generators), with room to spare.
WANTED_NOFILE: Final = 16_384
SEED_DIR_ENV: Final = "FELIX_BENCH_SEED_DIR"


@dataclass
class Options:
    """What the command line chose."""

    quick: bool = False
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    rounds: int | None = None
    output: Path = Path("bench-results")
    strict: bool = False
    pin: bool = True
    deflate: bool = False
    seed_dir: Path | None = None
    felix_env: dict[str, str] = field(default_factory=dict)

    @property
    def round_count(self) -> int:
        """Rounds per scenario: 3 (1 with --quick) unless --rounds says otherwise."""
        return self.rounds if self.rounds is not None else (1 if self.quick else 3)


def say(message: str) -> None:
    """Progress output (stdout, flushed: nox and pipes buffer otherwise)."""
    print(message, flush=True)


def find_root() -> Path:
    """The Felix checkout: the first of cwd and its parents, then this file's, with bench/node."""
    candidates = [Path.cwd(), *Path.cwd().parents, *Path(__file__).resolve().parents]
    for candidate in candidates:
        if (candidate / "bench" / "node" / "package.json").is_file():
            return candidate
    raise BenchError(
        "cannot find bench/node/package.json: run the bench from a Felix checkout "
        "(the load generator lives there)"
    )


def raise_nofile() -> int:
    """Raise the open-file limit; the children inherit it. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_NOFILE if hard == resource.RLIM_INFINITY else min(hard, WANTED_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


def ensure_node_modules(node_dir: Path) -> tuple[str, str]:
    """Check node and npm, run ``npm ci`` if ``ws`` is missing; returns (node, version)."""
    node = shutil.which("node")
    if node is None:
        raise BenchError("the load generator needs Node.js (node and npm on PATH)")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    if not (node_dir / "node_modules" / "ws" / "package.json").is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise BenchError("bench/node/node_modules is missing and npm is not on PATH")
        say(f"installing the load generator's packages (npm ci in {node_dir})")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=node_dir,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(f"npm ci failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return node, version


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP all unwind like Ctrl-C, so every child is stopped.

    SIGINT is set explicitly: a process started in the background by a
    non-interactive shell inherits it ignored, and would not stop on it.
    """

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {
        sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def open_context(
    *,
    root: Path,
    pinning: Pinning,
    setup: ServerSetup,
    node: str,
    logs: Path,
    deflate: bool,
    scratch_prefix: str,
) -> Iterator[Context]:
    """What a bench's runs share, with every child process stopped on the way out.

    Signals unwind like Ctrl-C while it is open, so an interrupted or
    terminated bench still stops its servers and generators.
    """
    children = Children(pinning)
    try:
        with (
            _sigterm_as_interrupt(),
            tempfile.TemporaryDirectory(prefix=scratch_prefix) as scratch,
        ):
            yield Context(
                children=children,
                pinning=pinning,
                setup=setup,
                node=node,
                loadgen=root / "bench" / "node" / "loadgen.js",
                logs=logs,
                scratch=Path(scratch),
                deflate=deflate,
                say=say,
            )
    finally:
        children.close_all()


def _progress(run: RunResult, scenario: Scenario) -> str:
    shown = []
    for metric in (*scenario.metrics[:3], *COMMON_METRICS):
        value = run.metrics.get(metric.key)
        if value is not None:
            text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.{max(1, metric.digits)}f}"
            shown.append(f"{metric.label} {text}{'%' if metric.unit.startswith('%') else ''}")
    status = "ok" if run.ok else ("ERROR" if run.error else "CHECK FAILED")
    return (
        f"  {run.server:<5} round {run.round}: {', '.join(shown)}  [{status}, {run.wall_s:.1f} s]"
    )


def _git_commit(root: Path) -> str | None:
    # Read-only: which commit was measured.
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return None
    return result.stdout.strip() or None


def run_bench(options: Options) -> int:
    """Run the bench; returns the exit status (0 ok, 1 a check failed or a run broke)."""
    began = time.monotonic()
    root = find_root()
    out_dir = options.output if options.output.is_absolute() else Path.cwd() / options.output
    logs = out_dir / "logs"
    if logs.exists():
        shutil.rmtree(logs)
    logs.mkdir(parents=True)
    nofile = raise_nofile()
    pinning = Pinning(options.pin)
    pinning.pin_self()
    node, node_version = ensure_node_modules(root / "bench" / "node")
    seed_dir = options.seed_dir or Path(
        os.environ.get(SEED_DIR_ENV) or root.parent / "shared" / "reference" / "seed_style_server"
    )
    seed_python = prepare_seed_venv(seed_dir.resolve(), root / ".bench" / "seed-venv", say)
    setup = ServerSetup(
        seed_dir=seed_dir.resolve(),
        seed_python=seed_python,
        felix_command=felix_command(),
        felix_extra_env=dict(options.felix_env),
    )
    meta = _describe(
        options, pinning=pinning, setup=setup, node_version=node_version, nofile=nofile, root=root
    )
    _announce(meta, options)
    scenarios = [SCENARIOS[name] for name in options.scenarios]
    with open_context(
        root=root,
        pinning=pinning,
        setup=setup,
        node=node,
        logs=logs,
        deflate=options.deflate,
        scratch_prefix="felix-bench-",
    ) as ctx:
        results = {scenario.name: _rounds(ctx, scenario, options) for scenario in scenarios}
    summaries = [
        summarize(scenario, scenario.plan(options.quick).describe(), results[scenario.name])
        for scenario in scenarios
    ]
    return _report(summaries, meta, out_dir, options, began)


def _describe(
    options: Options,
    *,
    pinning: Pinning,
    setup: ServerSetup,
    node_version: str,
    nofile: int,
    root: Path,
) -> dict[str, Any]:
    """The run's conditions, for results.json and the header."""
    return {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "profile": "quick" if options.quick else "full",
        "rounds": options.round_count,
        "interleaving": "per scenario, rounds alternate the sides' order (felix/seed, seed/felix)",
        "pinning": pinning.describe(),
        "cpus": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "node": node_version,
        "open_files_limit": nofile,
        "felix_command": " ".join(setup.felix_command),
        "felix_settings": describe_env(options.felix_env),
        "seed_dir": str(setup.seed_dir),
        "client_permessage_deflate": options.deflate,
        "commit": _git_commit(root),
    }


def _announce(meta: dict[str, Any], options: Options) -> None:
    say(
        f"felix bench ({meta['profile']}, {meta['rounds']} round(s), "
        f"scenarios: {', '.join(options.scenarios)})"
    )
    say(f"  pinning: {meta['pinning']}")
    say(f"  felix settings: {'; '.join(meta['felix_settings'])}; everything else default")
    say(f"  seed-style server: {meta['seed_dir']} (its own venv, run.sh)")
    say(
        f"  load generator: node {meta['node']}, separate processes; clients "
        + ("offer permessage-deflate (ws)" if options.deflate else "lean, no permessage-deflate")
    )
    say(f"  load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _rounds(ctx: Context, scenario: Scenario, options: Options) -> list[RunResult]:
    """Every round of one scenario, its sides' order alternating round by round."""
    plan = scenario.plan(options.quick)
    say(f"\n{scenario.title}: {plan.describe()}")
    runs: list[RunResult] = []
    for round_number in range(1, options.round_count + 1):
        sides = scenario.sides
        order: Sequence[str] = sides if round_number % 2 else sides[::-1]
        for side in order:
            run = run_once(ctx, scenario, plan, side, round_number)
            runs.append(run)
            say(_progress(run, scenario))
            if run.error:
                say("    " + run.error.replace("\n", "\n    "))
            elif not run.check.ok:
                say(f"    {run.check.describe()}")
                for message in run.check.errors[:6]:
                    say(f"      {message}")
    return runs


def _say_generator_load(summaries: list[ScenarioSummary]) -> None:
    """How busy the load generators were, and a warning where they may be the bound."""
    generator = [
        f"{s.scenario.name} " + "/".join(f"{value:.0f}%" for value in item.medians)
        for s in summaries
        for item in s.metrics
        if item.metric.key == "generator_cpu_pct"
    ]
    for summary in summaries:
        if not summary.scenario.against_seed:
            say(f"\n{summary.scenario.title}: the columns are {' | '.join(summary.scenario.sides)}")
    say(
        "\nratio = felix / seed (medians of rounds; first / second side where the "
        "scenario says so; none where it runs Felix alone). CPU is % of one core over the "
        "measured window; generator CPU (per side's run), all generator processes "
        "together on their own core: " + ", ".join(generator)
    )
    bound = [
        s.scenario.title
        for s in summaries
        for item in s.metrics
        if item.metric.key == "generator_cpu_pct" and max(item.medians) > 90
    ]
    if bound:
        say(
            "WARNING: the generator used over 90% of its core in: "
            + ", ".join(bound)
            + " - those numbers may be generator-bound"
        )


def _target_lines(summaries: list[ScenarioSummary]) -> tuple[list[str], list[str]]:
    """The targets missed, and those that could not be measured."""
    misses = [
        f"{summary.scenario.title}: {item.metric.label} "
        f"{'worst round ' if item.metric.every_round else ''}"
        f"{item.metric.judged_text(item.judged)} "
        f"(target {item.metric.target_text()})"
        for summary in summaries
        for item in summary.metrics
        if item.meets is False
    ]
    unmeasured = [
        f"{summary.scenario.title}: {item.metric.label}"
        for summary in summaries
        for item in summary.metrics
        if item.metric.target is not None and item.meets is None
    ]
    return misses, unmeasured


def _write_outputs(summaries: list[ScenarioSummary], meta: dict[str, Any], out_dir: Path) -> None:
    """results.json, then the chart (if matplotlib is there); says where they went."""
    misses, unmeasured = _target_lines(summaries)
    document = {
        "meta": meta,
        "correct": all(summary.correct for summary in summaries),
        "targets_met": not misses and not unmeasured,
        "target_misses": misses,
        "scenarios": to_json(summaries),
    }
    json_path = out_dir / "results.json"
    write_json_file(json_path, document)
    chart_path = out_dir / "chart.png"
    try:
        write_chart(chart_path, summaries, f"{meta['profile']}, {meta['rounds']} round(s)")
        chart_note = str(chart_path)
    except ImportError:
        chart_note = "not written: matplotlib is not installed (pip install matplotlib)"
    say(f"\nresults: {json_path}\nchart: {chart_note}\nlogs: {out_dir / 'logs'}")


def _report(
    summaries: list[ScenarioSummary],
    meta: dict[str, Any],
    out_dir: Path,
    options: Options,
    began: float,
) -> int:
    """Print the table and the verdicts, write the files; returns the exit status."""
    wall = time.monotonic() - began
    meta["wall_s"] = round(wall, 1)
    say("\n" + format_table(summaries))
    _say_generator_load(summaries)
    _write_outputs(summaries, meta, out_dir)
    say(f"wall time: {wall:.0f} s")
    status = 0
    if not all(summary.correct for summary in summaries):
        say("\nFAILED: events were lost, duplicated or reordered, or a run broke (see above)")
        status = 1
    else:
        say("\ncorrectness: every subscriber got every event exactly once, in order")
    misses, unmeasured = _target_lines(summaries)
    if misses or unmeasured:
        say("target misses:" if misses else "targets not measured:")
        for line in misses + unmeasured:
            say(f"  - {line}")
        if options.strict:
            status = status or 1
    elif any(item.metric.target is not None for s in summaries for item in s.metrics):
        say("every measured target holds")
    sys.stdout.flush()
    return status
