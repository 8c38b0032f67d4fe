"""``nox -s bench -- --cluster``: the same load on one node and on two nodes sharing Redis.

Runs the fan-out and fixed-rate latency scenarios against three variants, in
the same run, rounds interleaved (the order rotates each round):

- ``felix`` — one node, the in-memory broker (the baseline of the ratios);
- ``felix-redis`` — one node on a private redis-server (what the broker costs);
- ``felix-redis-x2`` — two nodes on one redis-server; subscribers are dealt
  over both, the publisher posts to the first, so most deliveries cross nodes.

Every process of a variant (nodes and redis-server) is pinned to the server's
CPU and counted as the server, so CPU per delivery compares like with like;
the generators keep the other CPU. Every run checks exactly-once, in order.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from felix_bench._procs import BenchError, Pinning
from felix_bench._runner import (
    ensure_node_modules,
    find_root,
    open_context,
    raise_nofile,
    say,
)
from felix_bench._scenarios import SCENARIOS, RunResult, run_once
from felix_bench._servers import CLUSTERS, ServerSetup, felix_command
from felix_bench._stats import median, ratio

__all__ = ["run_cluster_bench"]

#: The scenarios the cluster comparison runs, and the metrics it shows.
CLUSTER_SCENARIOS: Final = ("fanout", "latency")
SHOWN: Final = (
    ("deliveries_per_s", "deliveries/s", 0),
    ("latency_p50_ms", "latency p50 ms", 2),
    ("latency_p99_ms", "latency p99 ms", 2),
    ("server_us_per_delivery", "server CPU µs/delivery", 1),
    ("server_cpu_pct", "server CPU %", 0),
    ("generator_cpu_pct", "generator CPU %", 0),
)


def run_cluster_bench(quick: bool, rounds: int, output: Path, pin: bool = True) -> int:
    """Run the comparison; print the table, write ``cluster.json``; 0 when every check passed."""
    began = time.monotonic()
    root = find_root()
    output.mkdir(parents=True, exist_ok=True)
    logs = output / "cluster-logs"
    logs.mkdir(exist_ok=True)
    raise_nofile()
    pinning = Pinning(pin)
    pinning.pin_self()
    node, node_version = ensure_node_modules(root / "bench" / "node")
    setup = ServerSetup(
        seed_dir=Path(os.devnull), seed_python=Path(os.devnull), felix_command=felix_command()
    )
    variants = list(CLUSTERS)
    say(f"felix bench --cluster ({'quick' if quick else 'full'}, {rounds} round(s))")
    say(f"  variants: {', '.join(variants)}; pinning: {pinning.describe()}")
    results: dict[str, list[RunResult]] = {}
    with open_context(
        root=root,
        pinning=pinning,
        setup=setup,
        node=node,
        logs=logs,
        deflate=False,
        scratch_prefix="felix-bench-cluster-",
    ) as ctx:
        for name in CLUSTER_SCENARIOS:
            scenario = SCENARIOS[name]
            plan = scenario.plan(quick)
            say(f"\n{scenario.title}: {plan.describe()}")
            for round_number in range(1, rounds + 1):
                shift = (round_number - 1) % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    run = run_once(ctx, scenario, plan, variant, round_number)
                    results.setdefault(f"{name}/{variant}", []).append(run)
                    say(f"  {variant:<15} round {round_number}: {_brief(run)}")
    return _report(
        results,
        variants=variants,
        output=output,
        quick=quick,
        rounds=rounds,
        node_version=node_version,
        began=began,
    )


def _brief(run: RunResult) -> str:
    if run.error:
        return "ERROR " + run.error.splitlines()[0]
    shown = [
        f"{label} {run.metrics[key]:,.{digits}f}"
        for key, label, digits in SHOWN
        if key in run.metrics
    ]
    return ", ".join(shown) + ("" if run.check.ok else f"  CHECK FAILED: {run.check.describe()}")


def _report(
    results: dict[str, list[RunResult]],
    *,
    variants: Sequence[str],
    output: Path,
    quick: bool,
    rounds: int,
    node_version: str,
    began: float,
) -> int:
    rows: list[list[str]] = [
        ["scenario", "metric", *variants, *(f"{v} / felix" for v in variants[1:])]
    ]
    document: dict[str, Any] = {
        "meta": {
            "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "profile": "quick" if quick else "full",
            "rounds": rounds,
            "node": node_version,
            "variants": {v: {"nodes": n, "redis": r} for v, (n, r) in CLUSTERS.items()},
        },
        "scenarios": {},
    }
    correct = True
    for name in CLUSTER_SCENARIOS:
        scenario_json: dict[str, Any] = {}
        for key, label, digits in SHOWN:
            medians = {
                v: median(
                    [run.metrics.get(key, math.nan) for run in results.get(f"{name}/{v}", [])]
                )
                for v in variants
            }
            scenario_json[key] = {v: (m if math.isfinite(m) else None) for v, m in medians.items()}
            ratios = [ratio(medians[v], medians[variants[0]]) for v in variants[1:]]
            rows.append(
                [
                    name,
                    label,
                    *(
                        f"{medians[v]:,.{digits}f}" if math.isfinite(medians[v]) else "-"
                        for v in variants
                    ),
                    *(f"{r:.2f}x" if math.isfinite(r) else "-" for r in ratios),
                ]
            )
        audits = {
            v: all(run.ok for run in results.get(f"{name}/{v}", []))
            and bool(results.get(f"{name}/{v}"))
            for v in variants
        }
        correct = correct and all(audits.values())
        scenario_json["exactly_once_in_order"] = audits
        rows.append(
            [name, "exactly once, in order", *("ok" if audits[v] else "FAILED" for v in variants)]
            + [""] * (len(variants) - 1)
        )
        document["scenarios"][name] = scenario_json
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    say("")
    for row in rows:
        say(
            "  ".join(
                cell.rjust(widths[i]) if i >= 2 else cell.ljust(widths[i])
                for i, cell in enumerate(row)
            )
        )
    document["correct"] = correct
    document["meta"]["wall_s"] = round(time.monotonic() - began, 1)
    path = output / "cluster.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    say(f"\nresults: {path}; wall time {document['meta']['wall_s']:.0f} s")
    if not correct:
        say("FAILED: events were lost, duplicated or reordered, or a run broke (see above)")
        return 1
    say("correctness: every subscriber got every event exactly once, in order, in every variant")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m felix_bench.cluster [--quick] [--rounds N] [--output DIR]``."""
    import argparse  # noqa: PLC0415 - only for the command line

    parser = argparse.ArgumentParser(prog="felix bench --cluster", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs, one round")
    parser.add_argument(
        "--rounds", type=int, help="rounds per scenario (default 3, 1 with --quick)"
    )
    parser.add_argument("--output", type=Path, default=Path("bench-results"))
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    try:
        return run_cluster_bench(args.quick, rounds, args.output.resolve(), pin=not args.no_pin)
    except BenchError as error:
        say(f"felix bench --cluster: {error}")
        return 2
    except KeyboardInterrupt:
        say("felix bench --cluster: interrupted; every child process was stopped")
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
