"""``felix watch WF_ID``: follow a workflow live in the terminal, or as JSON lines.

Exits with how the workflow ended: 0 completed, 3 failed, 4 cancelled; 1 for
an error reaching or using the server (refused, unknown workflow, bad key).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Final

import trio
from rich.console import Console
from rich.live import Live

from felix.cli._common import (
    Subparsers,
    add_server_arguments,
    api_key,
    client,
    fail,
    non_negative,
    run_command,
    url,
)
from felix.cli._watch_view import WatchView
from felix.client import (
    ClientError,
    Event,
    Gap,
    WorkflowStream,
    is_terminal,
    open_workflow_stream,
)

__all__ = ["EXIT_CANCELLED", "EXIT_FAILED", "add_parser", "ending_status", "run"]

#: ``felix watch``'s exit status when the workflow failed.
EXIT_FAILED: Final = 3
#: ``felix watch``'s exit status when the workflow was cancelled.
EXIT_CANCELLED: Final = 4
_EXIT_STATUSES: Final = {"completed": 0, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}

#: Seconds between refreshes of the live view while no event arrives.
_TICK: Final = 0.5
#: Least seconds between two redraws while events pour in (a replay, a burst).
_MIN_REDRAW: Final = 0.05


def add_parser(subparsers: Subparsers) -> None:
    """Add ``felix watch``."""
    watch = subparsers.add_parser(
        "watch",
        help="follow a workflow live in the terminal",
        description=(
            "Show a workflow's status, agents, outputs and synthesis, updated live; "
            "reconnects and resumes on its own. Exits when the workflow ends: 0 completed, "
            "3 failed, 4 cancelled; 1 if the server cannot be reached or refuses."
        ),
    )
    watch.add_argument("workflow_id", metavar="WF_ID", help="the workflow to follow")
    watch.add_argument(
        "--json",
        action="store_true",
        help="print each event as one line of JSON instead (for piping)",
    )
    watch.add_argument(
        "--after",
        type=non_negative,
        metavar="N",
        help=(
            "start with the retained events after seq N (default: with --json 0, every "
            "retained event; otherwise the current state, then live events)"
        ),
    )
    add_server_arguments(watch)
    watch.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Follow a workflow until it ends; the exit status says how it ended."""
    return run_command("watch", _watch, args)


def ending_status(event: Event) -> str | None:
    """The status a terminal event leaves its workflow in; None for other events."""
    if not is_terminal(event):
        return None
    if event.get("type") == "workflow_status":
        return str(event.get("status"))
    return "completed" if event.get("type") == "completed" else "failed"


async def _watch(args: argparse.Namespace) -> int:
    base, key = url(args), api_key(args)
    # The REST view first: it fails fast and clearly (refused, 401, 404), and
    # it is the state the live view starts from.
    async with client(args) as felix:
        workflow = await felix.get_workflow(args.workflow_id)
    if args.json:
        after = 0 if args.after is None else args.after
        status = await _watch_json(base, key, args.workflow_id, after)
    else:
        after = workflow.get("last_seq", 0) if args.after is None else args.after
        status = await _watch_live(base, key, workflow, after)
    if status is None:
        # The stream ended without a terminal event in it (it ended before
        # ``after``, or ``types`` left it out): ask how the workflow ended.
        async with client(args) as felix:
            status = str((await felix.get_workflow(args.workflow_id)).get("status"))
    if status not in _EXIT_STATUSES:
        return fail("watch", f"the stream ended while the workflow is {status}")
    return _EXIT_STATUSES[status]


async def _watch_json(base: str, key: str | None, workflow_id: str, after: int) -> str | None:
    ended: str | None = None
    async with open_workflow_stream(base, workflow_id, api_key=key, after=after) as stream:
        async for item in stream:
            if isinstance(item, Gap):
                print(f"felix watch: warning: {gap_text(item)}", file=sys.stderr, flush=True)
                continue
            print(json.dumps(item, ensure_ascii=False, separators=(",", ":")), flush=True)
            ended = ending_status(item) or ended
    return ended


def gap_text(gap: Gap) -> str:
    """One line for a gap in the stream."""
    if gap.reset:
        return (
            f"the workflow restarted from seq 1 on the server (it was at {gap.after}); "
            "following the new one"
        )
    return (
        f"events after seq {gap.after} were no longer retained; some are missing "
        f"(the workflow is at seq {gap.server_last_seq})"
    )


async def _watch_live(
    base: str, key: str | None, workflow: dict[str, Any], after: int
) -> str | None:
    view = WatchView(workflow)
    failure: ClientError | None = None
    with Live(view.render(), console=Console(), auto_refresh=False) as live:
        async with open_workflow_stream(
            base, str(workflow["workflow_id"]), api_key=key, after=after
        ) as stream:
            # Raised after the view stops, so the line is not drawn over.
            failure = await _follow(stream, view, live)
        if failure is None:
            view.connection = "ended"
        live.update(view.render(), refresh=False)
    if failure is not None:
        raise failure
    status = str(view.workflow.get("status"))
    return status if status in _EXIT_STATUSES else None


async def _follow(stream: WorkflowStream, view: WatchView, live: Live) -> ClientError | None:
    """Apply the stream's items to the view and redraw it, at most every
    :data:`_MIN_REDRAW` seconds while events pour in and every :data:`_TICK`
    seconds while none do (the connection state changes without events).

    Returns the stream's error rather than raising it out of the nursery,
    where it would arrive inside an exception group."""

    async def tick() -> None:
        while True:
            await trio.sleep(_TICK)
            view.track(stream)
            live.update(view.render(), refresh=True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        drawn = trio.current_time()
        failure: ClientError | None = None
        try:
            async for item in stream:
                view.track(stream)
                if isinstance(item, Gap):
                    view.warnings.append(gap_text(item))
                else:
                    view.apply(item)
                    if is_terminal(item):
                        view.connection = "ended"
                if trio.current_time() - drawn >= _MIN_REDRAW:
                    live.update(view.render(), refresh=True)
                    drawn = trio.current_time()
        except ClientError as error:
            failure = error
        nursery.cancel_scope.cancel()
    return failure
