"""The ``felix`` command: one module per command group.

``serve`` runs the server; ``demo`` runs a simulated workflow on an embedded
one; ``watch``, ``publish`` and ``workflows`` talk to a running server
through :mod:`felix.client`. Each module adds its sub-parser with
``add_parser`` and sets ``func``, a synchronous ``(argparse.Namespace) -> int``
that runs its own ``trio.run`` and returns the exit status. Exit statuses are
listed in :mod:`felix.cli._common`; a failure is one line on stderr, never a
traceback.

The benchmark harness is a development tool, not part of the package: run it
from a checkout with ``nox -s bench``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from felix.cli import demo, publish, serve, watch, workflows
from felix.cli._common import EXIT_USAGE, fail

__all__ = ["build_parser", "main"]

_BENCH_HINT = "the benchmark is a development tool: run `nox -s bench` from a Felix checkout"


def build_parser() -> argparse.ArgumentParser:
    """``felix``'s parser, with every command."""
    parser = argparse.ArgumentParser(
        prog="felix", description="Real-time event streams for multi-agent workflows."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (serve, demo, watch, publish, workflows):
        command.add_parser(commands)
    bench = commands.add_parser("bench", help="moved: run `nox -s bench` from a checkout")
    bench.set_defaults(func=lambda _: fail("bench", _BENCH_HINT, EXIT_USAGE))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``felix`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Whatever options follow: they belong to the harness, not to us.
        return fail("bench", _BENCH_HINT, EXIT_USAGE)
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status
