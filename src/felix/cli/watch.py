"""``felix watch WF_ID``: follow a workflow live in the terminal, or as JSON lines."""

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
    non_negative,
    run_command,
    url,
)
from felix.cli._watch_view import WatchView
from felix.client import ClientError, Gap, WorkflowStream, is_terminal, open_workflow_stream

__all__ = ["add_parser", "run"]

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
            "reconnects and resumes on its own, and exits 0 when the workflow ends."
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
    """``felix watch WF_ID``: follow a workflow until its terminal event (exit 0)."""
    return run_command("watch", _watch, args)


async def _watch(args: argparse.Namespace) -> int:
    base, key = url(args), api_key(args)
    # The REST view first: it fails fast and clearly (refused, 401, 404), and
    # it is the state the live view starts from.
    async with client(args) as felix:
        workflow = await felix.get_workflow(args.workflow_id)
    if args.json:
        after = 0 if args.after is None else args.after
        return await _watch_json(base, key, args.workflow_id, after)
    after = workflow.get("last_seq", 0) if args.after is None else args.after
    return await _watch_live(base, key, workflow, after)


async def _watch_json(base: str, key: str | None, workflow_id: str, after: int) -> int:
    async with open_workflow_stream(base, workflow_id, api_key=key, after=after) as stream:
        async for item in stream:
            if isinstance(item, Gap):
                print(f"felix watch: warning: {gap_text(item)}", file=sys.stderr, flush=True)
                continue
            print(json.dumps(item, ensure_ascii=False, separators=(",", ":")), flush=True)
    return 0


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


async def _watch_live(base: str, key: str | None, workflow: dict[str, Any], after: int) -> int:
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
    return 0


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
