"""``felix workflows``: the server's workflows, newest first, in a table that fits 80 columns."""

from __future__ import annotations

import argparse
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from felix.cli._common import (
    STATUSES,
    Subparsers,
    add_server_arguments,
    client,
    non_negative,
    positive,
    run_command,
    status_text,
)
from felix.client import WorkflowPage

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Subparsers) -> None:
    """Add ``felix workflows``."""
    workflows = subparsers.add_parser(
        "workflows",
        help="list workflows and their status, newest first",
        description="List the server's workflows, newest first.",
    )
    workflows.add_argument("--status", choices=STATUSES, help="only workflows in this status")
    workflows.add_argument(
        "--limit", type=positive, default=100, metavar="N", help="at most N (default 100)"
    )
    workflows.add_argument(
        "--offset",
        type=non_negative,
        default=0,
        metavar="N",
        help="skip the N newest (default 0): --offset 100 is the second page of 100",
    )
    add_server_arguments(workflows)
    workflows.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one page of workflows as a table."""
    return run_command("workflows", _workflows, args)


def _updated(timestamp: Any) -> str:
    # "2026-11-26T17:33:08.123456Z" -> "11-26 17:33:08"
    if not isinstance(timestamp, str) or len(timestamp) < 19:
        return ""
    return f"{timestamp[5:10]} {timestamp[11:19]}"


def _row(workflow: dict[str, Any]) -> list[str]:
    return [
        str(workflow.get("workflow_id")),
        str(workflow.get("status")),
        str(len(workflow.get("agents") or [])),
        str(workflow.get("last_seq", "")),
        str(workflow.get("subscribers", "")),
        _updated(workflow.get("updated_at")),
        str(workflow.get("task") or ""),
    ]


_HEADERS = ("Workflow", "Status", "Agents", "Seq", "Subs", "Updated", "Task")
_RIGHT = frozenset({"Agents", "Seq", "Subs"})


def _table(page: WorkflowPage, offset: int, width: int) -> Table:
    shown = f"{len(page.workflows)} of {page.total} workflows, newest first"
    if offset:
        shown += f", after the {offset} newest"
    # Columns apart by the box's one blank, no padding, no edges: 80 columns
    # leave the task about 25.
    table = Table(caption=shown, box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False)
    rows = [_row(workflow) for workflow in page.workflows]
    # Every column but the task keeps its whole width (the id is what people
    # copy); the task takes what is left of the ``width`` and is cut with "…".
    left = width
    for index, header in enumerate(_HEADERS[:-1]):
        widest = max(len(header), *(len(row[index]) for row in rows))
        left -= widest + 1  # and the blank between two columns
        table.add_column(
            header,
            justify="right" if header in _RIGHT else "left",
            no_wrap=True,
            min_width=widest,
        )
    table.add_column(_HEADERS[-1], max_width=max(left, 8), no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(row[0], status_text(row[1]), *row[2:])
    return table


async def _workflows(args: argparse.Namespace) -> int:
    async with client(args) as felix:
        # One request: the server pages newest first (?order=newest).
        page = await felix.list_workflows(
            status=args.status, limit=args.limit, offset=args.offset, order="newest"
        )
    console = Console()
    if not page.workflows:
        which = f" with status {args.status}" if args.status else ""
        beyond = f" after the {args.offset} newest" if args.offset and page.total else ""
        console.print(f"no workflows{which}{beyond}")
        return 0
    console.print(_table(page, args.offset, console.width))
    return 0
