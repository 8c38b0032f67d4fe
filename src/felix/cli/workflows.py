"""``felix workflows``: a table of the server's workflows and their status."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from felix.cli._common import (
    STATUSES,
    Subparsers,
    add_server_arguments,
    client,
    positive,
    run_command,
    status_text,
)

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Subparsers) -> None:
    """Add ``felix workflows``."""
    workflows = subparsers.add_parser(
        "workflows",
        help="list workflows and their status",
        description="List the server's workflows in creation order.",
    )
    workflows.add_argument("--status", choices=STATUSES, help="only workflows in this status")
    workflows.add_argument(
        "--limit", type=positive, default=100, metavar="N", help="at most N (default 100)"
    )
    add_server_arguments(workflows)
    workflows.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one page of workflows as a table."""
    return run_command("workflows", _workflows, args)


async def _workflows(args: argparse.Namespace) -> int:
    async with client(args) as felix:
        page = await felix.list_workflows(status=args.status, limit=args.limit)
    console = Console()
    if not page.workflows:
        console.print("no workflows" + (f" with status {args.status}" if args.status else ""))
        return 0
    table = Table(caption=f"{len(page.workflows)} of {page.total} workflows")
    table.add_column("Workflow", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Task")
    table.add_column("Agents", justify="right")
    table.add_column("Seq", justify="right")
    table.add_column("Watching", justify="right")
    table.add_column("Updated", no_wrap=True)
    for workflow in page.workflows:
        table.add_row(
            str(workflow.get("workflow_id")),
            status_text(str(workflow.get("status"))),
            str(workflow.get("task") or ""),
            str(len(workflow.get("agents") or [])),
            str(workflow.get("last_seq", "")),
            str(workflow.get("subscribers", "")),
            str(workflow.get("updated_at", "")),
        )
    console.print(table)
    return 0
