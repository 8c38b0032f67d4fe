"""The benchmark harness: Felix against the seed-style server, same run, interleaved.

The orchestrator (this package) starts a fresh server for every run, pinned
to one CPU, and drives it with Node ``ws`` load generators in separate
processes pinned to the other (``bench/node/loadgen.js``). Each scenario runs
against its sides alternately for a few rounds: most against Felix and the
seed-style baseline, ``sse-fanout`` against Felix on SSE and on WebSockets,
``producer-stream`` against Felix alone. ``restart-storm`` drives 2,000 Python
clients (``felix.client``, in ``_restart_clients``) across a server restart
instead. The medians and their ratios (for a target judged ``every_round``,
the worst round's) go to a table, ``results.json`` and ``chart.png``.
Every subscriber checks that it got every event exactly once, in order.

A development tool, not part of the ``felix`` package: run it from a checkout
as ``nox -s bench [-- --quick]`` or ``PYTHONPATH=bench python -m felix_bench
[--quick]``; see ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from felix_bench._procs import BenchError
from felix_bench._runner import Options, run_bench
from felix_bench._scenarios import SCENARIOS

__all__ = ["add_arguments", "build_parser", "main", "options_from"]


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("FELIX_"):
        raise argparse.ArgumentTypeError(f"expected FELIX_NAME=VALUE, got {text!r}")
    return name, value


def build_parser(prog: str = "nox -s bench --") -> argparse.ArgumentParser:
    """The bench's command line."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Benchmark Felix against the seed-style server in the same run, interleaved, "
            "with Node load generators in separate processes; checks that every subscriber "
            "gets every event exactly once, in order."
        ),
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bench's options to ``parser``."""
    parser.add_argument(
        "--quick", action="store_true", help="short runs, 1 round, 1,000 idle connections"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--rounds", type=int, help="rounds per scenario and server (default 3, --quick 1)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("bench-results"),
        help="directory for results.json, chart.png and logs/ (default bench-results)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit non-zero when a target is missed"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the server and generators to CPUs"
    )
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="clients offer permessage-deflate, as browsers do (default: they do not)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="instead: fan-out and latency on one node, one node on Redis and two nodes on "
        "Redis (FELIX_BROKER), same run; needs redis-server",
    )
    parser.add_argument(
        "--seed-dir",
        type=Path,
        help="the seed-style server (default $FELIX_BENCH_SEED_DIR or "
        "../shared/reference/seed_style_server from the checkout)",
    )
    parser.add_argument(
        "--felix-env",
        action="append",
        type=_setting,
        default=[],
        metavar="FELIX_NAME=VALUE",
        help="an extra setting for the Felix server under test (repeatable; reported)",
    )


def options_from(args: argparse.Namespace) -> Options:
    """Turn parsed arguments into :class:`Options`."""
    if args.rounds is not None and args.rounds < 1:
        raise BenchError("--rounds must be at least 1")
    return Options(
        quick=args.quick,
        scenarios=list(dict.fromkeys(args.scenario)) if args.scenario else list(SCENARIOS),
        rounds=args.rounds,
        output=args.output,
        strict=args.strict,
        pin=not args.no_pin,
        deflate=args.deflate,
        seed_dir=args.seed_dir,
        felix_env=dict(args.felix_env),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench from the command line; returns the exit status.

    0: every run completed and every event check passed (target misses are
    printed but only fail with ``--strict``); 1: a check failed or a run broke;
    2: bad arguments or the bench could not start; 130: interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.cluster:
            from felix_bench.cluster import run_cluster_bench  # noqa: PLC0415

            rounds = args.rounds or (1 if args.quick else 3)
            return run_cluster_bench(args.quick, rounds, args.output.resolve(), pin=not args.no_pin)
        return run_bench(options_from(args))
    except BenchError as error:
        print(f"felix bench: {error}", flush=True)
        return 2
    except KeyboardInterrupt:
        print("felix bench: interrupted; every child process was stopped", flush=True)
        return 130
