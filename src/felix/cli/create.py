"""``felix create``: create a workflow and print its id, alone, on stdout.

Made for scripts: ``WF=$(felix create --task "…")``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from felix.cli._common import Subparsers, UsageError, add_server_arguments, client, run_command

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Subparsers) -> None:
    """Add ``felix create``."""
    create = subparsers.add_parser(
        "create",
        help="create a workflow; prints its id",
        description="Create a pending workflow and print its id alone on standard output.",
    )
    create.add_argument("--task", help="what the workflow is about (shown in listings)")
    create.add_argument(
        "--id", dest="workflow_id", metavar="WF_ID", help="the id to use (default: the server's)"
    )
    create.add_argument(
        "--metadata", metavar="JSON", help='a JSON object kept with it, e.g. \'{"team": "a"}\''
    )
    add_server_arguments(create)
    create.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Create the workflow; 0 and its id on stdout, or one line on stderr."""
    return run_command("create", _create, args)


def _metadata(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        metadata = json.loads(raw)
    except ValueError:
        metadata = None
    if not isinstance(metadata, dict):
        raise UsageError(f"--metadata must be a JSON object, got {raw!r}")
    return metadata


async def _create(args: argparse.Namespace) -> int:
    metadata = _metadata(args.metadata)
    async with client(args) as felix:
        workflow = await felix.create_workflow(
            workflow_id=args.workflow_id, task=args.task, metadata=metadata
        )
    print(workflow["workflow_id"])
    return 0
