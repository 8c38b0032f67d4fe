"""The people-facing ``felix`` commands: ``watch``, ``publish`` and ``workflows``.

:func:`add_commands` adds them to an ``argparse`` sub-parser set; each sets
``func`` to a synchronous ``(argparse.Namespace) -> int`` that runs its own
``trio.run`` and returns the exit status. Run standalone with
``python -m felix.cli_tools`` (:func:`main`).

Exit statuses: 0 success (``watch``: the workflow reached its terminal event),
1 the server refused or could not be reached, 2 a usage error, 130 interrupted.
Failures are one line on standard error, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import attrs
import trio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from felix.client import (
    ApiError,
    ClientError,
    ConnectionFailed,
    FelixClient,
    Gap,
    StreamRefused,
    StreamUnauthorized,
    WorkflowStream,
    is_terminal,
    open_workflow_stream,
)

__all__ = ["DEFAULT_URL", "add_commands", "main", "run_publish", "run_watch", "run_workflows"]

#: The server ``--url`` defaults to when ``FELIX_URL`` is not set.
DEFAULT_URL: Final = "http://127.0.0.1:8000"
_STATUSES: Final = ("pending", "running", "completed", "failed", "cancelled")
_STATUS_STYLES: Final = {
    "pending": "dim",
    "running": "bold cyan",
    "completed": "bold green",
    "failed": "bold red",
    "cancelled": "bold yellow",
}
#: Agent outputs and event lines the live view keeps on screen.
_RECENT: Final = 8
#: Seconds between refreshes of the live view while no event arrives.
_TICK: Final = 0.5
#: Least seconds between two redraws while events pour in (a replay, a burst).
_MIN_REDRAW: Final = 0.05


class _UsageError(Exception):
    """A command line that cannot be acted on (exit status 2)."""


# --- argument parsing ---------------------------------------------------------------


def _non_negative(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{raw!r} is negative")
    return value


def _positive(raw: str) -> int:
    value = _non_negative(raw)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help=f"server base URL (default: $FELIX_URL, else {DEFAULT_URL})",
    )
    parser.add_argument("--api-key", metavar="KEY", help="API key (default: $FELIX_API_KEY)")


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``watch``, ``publish`` and ``workflows`` to ``felix``'s sub-parsers.

    Each sets ``func``: call ``args.func(args)`` and exit with what it returns.
    """
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
        type=_non_negative,
        metavar="N",
        help=(
            "start with the retained events after seq N (default: with --json 0, every "
            "retained event; otherwise the current state, then live events)"
        ),
    )
    _add_server_arguments(watch)
    watch.set_defaults(func=run_watch)

    publish = subparsers.add_parser(
        "publish",
        help="publish one event to a workflow",
        description=(
            "Publish an event of TYPE with key=value fields. A value that parses as JSON "
            "is used as such (confidence=0.8 is a number, final=true a boolean, "
            "result='{\"a\": 1}' an object); anything else is a string."
        ),
    )
    publish.add_argument("workflow_id", metavar="WF_ID", help="the workflow to publish to")
    publish.add_argument("event_type", metavar="TYPE", help="e.g. agent_output, synthesis")
    publish.add_argument("fields", nargs="*", metavar="key=value", help="the event's fields")
    _add_server_arguments(publish)
    publish.set_defaults(func=run_publish)

    workflows = subparsers.add_parser(
        "workflows",
        help="list workflows and their status",
        description="List the server's workflows in creation order.",
    )
    workflows.add_argument("--status", choices=_STATUSES, help="only workflows in this status")
    workflows.add_argument(
        "--limit", type=_positive, default=100, metavar="N", help="at most N (default 100)"
    )
    _add_server_arguments(workflows)
    workflows.set_defaults(func=run_workflows)


def _url(args: argparse.Namespace) -> str:
    url: str = args.url or os.environ.get("FELIX_URL") or DEFAULT_URL
    return url


def _api_key(args: argparse.Namespace) -> str | None:
    key: str | None = args.api_key or os.environ.get("FELIX_API_KEY") or None
    return key


def parse_fields(pairs: Sequence[str]) -> dict[str, Any]:
    """``["confidence=0.8", "content=hello"]`` -> ``{"confidence": 0.8, "content": "hello"}``.

    A value is JSON when it parses as JSON (``NaN`` and ``Infinity`` do not
    count: JSON cannot carry them), else the string itself. Raises
    :class:`ValueError` for an item without ``=`` or with an empty key.
    """
    fields: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{pair!r} is not key=value")
        fields[key] = _value(raw)
    return fields


def _not_json(name: str) -> Any:
    raise ValueError(name)


def _value(raw: str) -> Any:
    try:
        return json.loads(raw, parse_constant=_not_json)
    except ValueError:
        return raw


# --- running a command ---------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _explain(error: ClientError) -> str:
    """The one line a person sees for an error, with a hint where one helps."""
    text = _one_line(str(error))
    status = error.status if isinstance(error, ApiError | StreamRefused) else None
    if isinstance(error, StreamUnauthorized) or status == 401:
        return f"{text}; pass --api-key or set FELIX_API_KEY"
    if isinstance(error, ConnectionFailed):
        return f"{text} (is the server running? set --url or FELIX_URL)"
    return text


def _leaf(error: BaseException) -> BaseException:
    """The one exception inside nested exception groups (Cancelled aside), if one."""
    if not isinstance(error, BaseExceptionGroup):
        return error
    leaves: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        elif not isinstance(current, trio.Cancelled):
            leaves.append(current)
    return leaves[0] if len(leaves) == 1 else error


def _run(
    name: str, command: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace
) -> int:
    try:
        return trio.run(command, args)
    except BaseException as raised:
        error = _leaf(raised)
        if isinstance(error, _UsageError):
            print(f"felix {name}: error: {error}", file=sys.stderr)
            return 2
        if isinstance(error, ClientError):
            print(f"felix {name}: error: {_explain(error)}", file=sys.stderr)
            return 1
        if isinstance(error, KeyboardInterrupt):
            return 130
        if isinstance(error, BrokenPipeError):
            # The reader went away (``| head``): silence the flush at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 1
        raise


def _client(args: argparse.Namespace) -> FelixClient:
    try:
        return FelixClient(_url(args), _api_key(args))
    except ValueError as error:
        raise _UsageError(f"--url: {error}") from None


# --- felix publish ------------------------------------------------------------------------


def run_publish(args: argparse.Namespace) -> int:
    """``felix publish WF_ID TYPE key=value …``: publish one event; prints its seq."""
    return _run("publish", _publish, args)


async def _publish(args: argparse.Namespace) -> int:
    try:
        fields = parse_fields(args.fields)
    except ValueError as error:
        raise _UsageError(str(error)) from None
    event = {**fields, "type": args.event_type}
    async with _client(args) as felix:
        result = await felix.publish(args.workflow_id, event)
    print(f"published {args.event_type} to {args.workflow_id} as seq {result.first_seq}")
    return 0


# --- felix workflows ------------------------------------------------------------------------


def run_workflows(args: argparse.Namespace) -> int:
    """``felix workflows [--status S]``: a table of workflows and their status."""
    return _run("workflows", _workflows, args)


def _status_text(status: str) -> Text:
    return Text(status, style=_STATUS_STYLES.get(status, ""))


async def _workflows(args: argparse.Namespace) -> int:
    async with _client(args) as felix:
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
            _status_text(str(workflow.get("status"))),
            str(workflow.get("task") or ""),
            str(len(workflow.get("agents") or [])),
            str(workflow.get("last_seq", "")),
            str(workflow.get("subscribers", "")),
            str(workflow.get("updated_at", "")),
        )
    console.print(table)
    return 0


# --- felix watch --------------------------------------------------------------------------


def run_watch(args: argparse.Namespace) -> int:
    """``felix watch WF_ID``: follow a workflow until its terminal event (exit 0)."""
    return _run("watch", _watch, args)


async def _watch(args: argparse.Namespace) -> int:
    url, key = _url(args), _api_key(args)
    # The REST view first: it fails fast and clearly (refused, 401, 404), and
    # it is the state the live view starts from.
    async with _client(args) as felix:
        workflow = await felix.get_workflow(args.workflow_id)
    if args.json:
        after = 0 if args.after is None else args.after
        return await _watch_json(url, key, args.workflow_id, after)
    after = workflow.get("last_seq", 0) if args.after is None else args.after
    return await _watch_live(url, key, workflow, after)


async def _watch_json(url: str, key: str | None, workflow_id: str, after: int) -> int:
    async with open_workflow_stream(url, workflow_id, api_key=key, after=after) as stream:
        async for item in stream:
            if isinstance(item, Gap):
                print(f"felix watch: warning: {_gap_text(item)}", file=sys.stderr, flush=True)
                continue
            print(json.dumps(item, ensure_ascii=False, separators=(",", ":")), flush=True)
    return 0


def _gap_text(gap: Gap) -> str:
    if gap.reset:
        return (
            f"the workflow restarted from seq 1 on the server (it was at {gap.after}); "
            "following the new one"
        )
    return (
        f"events after seq {gap.after} were no longer retained; some are missing "
        f"(the workflow is at seq {gap.server_last_seq})"
    )


def _bar(confidence: Any, width: int = 10) -> Text:
    if not isinstance(confidence, int | float) or isinstance(confidence, bool):
        return Text("—", style="dim")
    value = min(max(float(confidence), 0.0), 1.0)
    filled = round(value * width)
    style = "green" if value >= 0.75 else "yellow" if value >= 0.5 else "red"
    text = Text("█" * filled, style=style)
    text.append("░" * (width - filled), style="dim")
    text.append(f" {value:.2f}")
    return text


def _clock(timestamp: Any) -> str:
    # "2026-11-26T17:33:08.123456Z" -> "17:33:08"
    return timestamp[11:19] if isinstance(timestamp, str) and len(timestamp) >= 19 else ""


@attrs.define
class WatchView:
    """What ``felix watch`` shows: the REST view, kept current by events.

    Events up to the REST view's ``last_seq`` are already in it and only join
    the event log; later ones change the state.
    """

    workflow: dict[str, Any]
    agents: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    outputs: deque[dict[str, Any]] = attrs.field(factory=lambda: deque(maxlen=_RECENT))
    log: deque[str] = attrs.field(factory=lambda: deque(maxlen=_RECENT))
    connection: str = "connecting…"
    warnings: list[str] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        for agent in self.workflow.get("agents") or []:
            self.agents[str(agent.get("agent_id"))] = dict(agent)
            if agent.get("last_output") is not None:
                self.outputs.append(
                    {
                        "seq": None,
                        "agent_id": agent.get("agent_id"),
                        "confidence": agent.get("confidence"),
                        "content": agent.get("last_output"),
                    }
                )

    def apply(self, event: dict[str, Any]) -> None:
        """Take one event in."""
        seq = event.get("seq")
        kind = str(event.get("type"))
        self.log.append(f"#{seq} {kind}" if seq is not None else kind)
        known = self.workflow.get("last_seq", 0)
        if not isinstance(seq, int) or seq <= known:
            return
        self.workflow["last_seq"] = seq
        self.workflow["updated_at"] = event.get("timestamp")
        if self.workflow.get("status") == "pending":
            self.workflow["status"] = "running"
        if kind == "workflow_status":
            self.workflow["status"] = event.get("status")
        elif kind in ("agent_spawned", "agent_output"):
            agent = self.agents.setdefault(
                str(event.get("agent_id")),
                {"agent_id": event.get("agent_id"), "outputs": 0, "confidence": None},
            )
            if kind == "agent_spawned":
                agent.update(
                    agent_type=event.get("agent_type"),
                    spawn_time=event.get("spawn_time"),
                    spawned_at=event.get("timestamp"),
                )
            else:
                agent["outputs"] = int(agent.get("outputs") or 0) + 1
                agent["confidence"] = event.get("confidence")
                agent["last_output"] = event.get("content")
                self.outputs.append(event)
        elif kind == "synthesis":
            self.workflow["synthesis"] = event
        elif kind == "completed":
            self.workflow["status"] = "completed"
            self.workflow["result"] = event.get("result")
        elif kind == "error":
            self.workflow["error"] = event
            if event.get("fatal") is True:
                self.workflow["status"] = "failed"

    def track(self, stream: WorkflowStream) -> None:
        """Describe the stream's connection state in the header."""
        stats = stream.statistics()
        if stats.connected:
            connection_id = (stream.connected or {}).get("connection_id", "")
            self.connection = f"live ({connection_id})"
        elif stats.failures:
            self.connection = f"reconnecting (attempt {stats.failures}: {stats.last_drop})"

    def render(self) -> RenderableType:
        """The whole view as one rich renderable."""
        workflow = self.workflow
        status = str(workflow.get("status"))
        header = Table.grid(padding=(0, 2))
        header.add_column(style="bold")
        header.add_column()
        header.add_row("Status", _status_text(status))
        if workflow.get("task"):
            header.add_row("Task", str(workflow["task"]))
        header.add_row("Seq", str(workflow.get("last_seq", 0)))
        header.add_row("Stream", self.connection)
        for warning in self.warnings[-2:]:
            header.add_row("Warning", Text(warning, style="yellow"))

        agents = Table(title="Agents", expand=True)
        agents.add_column("Agent", no_wrap=True)
        agents.add_column("Type")
        agents.add_column("Spawn time", justify="right")
        agents.add_column("Spawned", no_wrap=True)
        agents.add_column("Outputs", justify="right")
        agents.add_column("Confidence", no_wrap=True)
        for agent in self.agents.values():
            agents.add_row(
                str(agent.get("agent_id")),
                str(agent.get("agent_type") or "?"),
                str(agent.get("spawn_time") if agent.get("spawn_time") is not None else "?"),
                _clock(agent.get("spawned_at")),
                str(agent.get("outputs") or 0),
                _bar(agent.get("confidence")),
            )

        outputs = Table(title="Outputs", expand=True)
        outputs.add_column("Seq", justify="right")
        outputs.add_column("Agent", no_wrap=True)
        outputs.add_column("Confidence", no_wrap=True)
        outputs.add_column("Content", ratio=1)
        for output in self.outputs:
            seq = output.get("seq")
            outputs.add_row(
                str(seq) if seq is not None else "",
                str(output.get("agent_id")),
                _bar(output.get("confidence")),
                str(output.get("content")),
            )

        parts: list[RenderableType] = [header, agents, outputs]
        synthesis = workflow.get("synthesis")
        if synthesis:
            body = Text(str(synthesis.get("content")))
            body.append("\n")
            body.append_text(_bar(synthesis.get("confidence")))
            if synthesis.get("final") is True:
                body.append("  final", style="bold")
            parts.append(Panel(body, title="Latest synthesis"))
        if workflow.get("error"):
            error = workflow["error"]
            parts.append(Text(f"Error: {error.get('message')}", style="red"))
        if status == "completed" and workflow.get("result") is not None:
            parts.append(Text(f"Result: {json.dumps(workflow['result'], ensure_ascii=False)}"))
        if self.log:
            parts.append(Text("Events: " + "  ".join(self.log), style="dim"))
        return Panel(Group(*parts), title=f"felix watch · {workflow.get('workflow_id')}")


async def _watch_live(url: str, key: str | None, workflow: dict[str, Any], after: int) -> int:
    view = WatchView(workflow)
    console = Console()
    failure: ClientError | None = None
    with Live(view.render(), console=console, auto_refresh=False) as live:
        async with open_workflow_stream(
            url, str(workflow["workflow_id"]), api_key=key, after=after
        ) as stream:

            async def tick() -> None:
                # Connection state changes without events: show it anyway.
                while True:
                    await trio.sleep(_TICK)
                    view.track(stream)
                    live.update(view.render(), refresh=True)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(tick)
                drawn = trio.current_time()
                try:
                    async for item in stream:
                        view.track(stream)
                        if isinstance(item, Gap):
                            view.warnings.append(_gap_text(item))
                        else:
                            view.apply(item)
                            if is_terminal(item):
                                view.connection = "ended"
                        if trio.current_time() - drawn >= _MIN_REDRAW:
                            live.update(view.render(), refresh=True)
                            drawn = trio.current_time()
                except ClientError as error:
                    # Raised after the view stops, so the line is not drawn over.
                    failure = error
                nursery.cancel_scope.cancel()
        if failure is None:
            view.connection = "ended"
        live.update(view.render(), refresh=False)
    if failure is not None:
        raise failure
    return 0


# --- standalone ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run one of these commands: ``python -m felix.cli_tools watch WF_ID``."""
    parser = argparse.ArgumentParser(
        prog="felix", description="Watch and drive Felix workflows from the terminal."
    )
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
