"""What ``felix watch`` draws: a workflow's REST view kept current by its events.

Pure: takes events in and gives a rich renderable out; no I/O.
"""

from __future__ import annotations

import json
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import attrs
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from felix.cli._common import status_text

if TYPE_CHECKING:
    from felix.client import WorkflowStream

__all__ = ["WatchView"]

#: Agent outputs and event lines the live view keeps on screen.
_RECENT: Final = 8


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
            self._apply_agent(kind, event)
        elif kind == "synthesis":
            self.workflow["synthesis"] = event
        elif kind == "completed":
            self.workflow["status"] = "completed"
            self.workflow["result"] = event.get("result")
        elif kind == "error":
            self.workflow["error"] = event
            if event.get("fatal") is True:
                self.workflow["status"] = "failed"

    def _apply_agent(self, kind: str, event: dict[str, Any]) -> None:
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
        parts: list[RenderableType] = [self._header(), self._agents(), self._outputs()]
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
        if workflow.get("status") == "completed" and workflow.get("result") is not None:
            parts.append(Text(f"Result: {json.dumps(workflow['result'], ensure_ascii=False)}"))
        if self.log:
            parts.append(Text("Events: " + "  ".join(self.log), style="dim"))
        return Panel(Group(*parts), title=f"felix watch · {workflow.get('workflow_id')}")

    def _header(self) -> Table:
        workflow = self.workflow
        header = Table.grid(padding=(0, 2))
        header.add_column(style="bold")
        header.add_column()
        header.add_row("Status", status_text(str(workflow.get("status"))))
        if workflow.get("task"):
            header.add_row("Task", str(workflow["task"]))
        header.add_row("Seq", str(workflow.get("last_seq", 0)))
        header.add_row("Stream", self.connection)
        for warning in self.warnings[-2:]:
            header.add_row("Warning", Text(warning, style="yellow"))
        return header

    def _agents(self) -> Table:
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
        return agents

    def _outputs(self) -> Table:
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
        return outputs
