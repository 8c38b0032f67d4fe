"""Results: the medians and ratios, the printed table, the JSON file, the chart."""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from felix_bench._scenarios import COMMON_METRICS, Metric, RunResult, Scenario
from felix_bench._servers import SERVERS
from felix_bench._stats import median, ratio

__all__ = ["MetricSummary", "ScenarioSummary", "format_table", "summarize", "write_chart"]


@dataclass
class MetricSummary:
    """One metric of one scenario: each server's median over rounds, and the ratio."""

    metric: Metric
    felix: float
    seed: float
    felix_rounds: list[float]
    seed_rounds: list[float]

    @property
    def ratio(self) -> float:
        """felix / seed."""
        return ratio(self.felix, self.seed)

    @property
    def meets(self) -> bool | None:
        """Whether the target holds (None when the metric has no target)."""
        return self.metric.meets(self.felix if self.metric.absolute else self.ratio)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (NaN becomes null)."""
        return {
            "label": self.metric.label,
            "unit": self.metric.unit,
            "higher_is_better": self.metric.higher_is_better,
            "felix": _finite(self.felix),
            "seed": _finite(self.seed),
            "felix_rounds": [_finite(v) for v in self.felix_rounds],
            "seed_rounds": [_finite(v) for v in self.seed_rounds],
            "ratio": _finite(self.ratio),
            "target": self.metric.target_text() or None,
            "meets_target": self.meets,
        }


@dataclass
class ScenarioSummary:
    """A scenario's summary over its runs."""

    scenario: Scenario
    plan: str
    metrics: list[MetricSummary]
    runs: list[RunResult]
    correctness: dict[str, bool] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        """Every run of both servers completed and passed its audit."""
        return all(self.correctness.values())

    def correctness_text(self, server: str) -> str:
        """``ok`` or the first failure of ``server``'s runs."""
        if server not in self.scenario.servers:
            return "not run"
        for run in self.runs:
            if run.server != server:
                continue
            if run.error is not None:
                return "FAILED (run error)"
            if not run.check.ok:
                return run.check.describe()
        return "ok"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def summarize(scenario: Scenario, plan: str, runs: Sequence[RunResult]) -> ScenarioSummary:
    """Medians per server over the rounds, for the scenario's metrics and the common ones."""
    metrics = []
    for metric in (*scenario.metrics, *COMMON_METRICS):
        rounds = {
            server: [run.metrics.get(metric.key, math.nan) for run in runs if run.server == server]
            for server in SERVERS
        }
        metrics.append(
            MetricSummary(
                metric=metric,
                felix=median(rounds["felix"]),
                seed=median(rounds["seed"]),
                felix_rounds=rounds["felix"],
                seed_rounds=rounds["seed"],
            )
        )
    summary = ScenarioSummary(scenario=scenario, plan=plan, metrics=metrics, runs=list(runs))
    for server in scenario.servers:
        mine = [run for run in runs if run.server == server]
        summary.correctness[server] = bool(mine) and all(run.ok for run in mine)
    return summary


def format_value(value: float, digits: int) -> str:
    """Thousands separators for big numbers, ``digits`` decimals for small ones."""
    if not math.isfinite(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{max(digits, 1)}f}"


def format_table(summaries: Sequence[ScenarioSummary]) -> str:
    """The results table: scenario, metric, felix, seed, ratio, target, result."""
    header = ("scenario", "metric", "felix", "seed", "ratio", "target", "result")
    rows: list[tuple[str, ...]] = []
    for summary in summaries:
        title = summary.scenario.title
        for item in summary.metrics:
            metric = item.metric
            meets = item.meets
            verdict = "" if meets is None else ("PASS" if meets else "MISS")
            ratio_text = f"{item.ratio:.2f}x" if math.isfinite(item.ratio) else "-"
            rows.append(
                (
                    title,
                    f"{metric.label} ({metric.unit})",
                    format_value(item.felix, metric.digits),
                    format_value(item.seed, metric.digits),
                    ratio_text,
                    metric.target_text(),
                    verdict,
                )
            )
            title = ""
        rows.append(
            (
                "",
                "exactly once, in order",
                _short(summary.correctness_text("felix")),
                _short(summary.correctness_text("seed")),
                "",
                "0 lost/dup/reordered",
                "PASS" if summary.correct else "FAIL",
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    right = {2, 3, 4}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    out = [line(header), rule]
    previous = None
    for row in rows:
        if row[0] and previous is not None:
            out.append("")
        out.append(line(row))
        previous = row
    return "\n".join(out)


def _short(text: str) -> str:
    return text if len(text) <= 24 else text[:21] + "..."


def to_json(summaries: Sequence[ScenarioSummary]) -> dict[str, Any]:
    """Every scenario: its plan, metric summaries, correctness and raw runs."""
    result: dict[str, Any] = {}
    for summary in summaries:
        result[summary.scenario.name] = {
            "title": summary.scenario.title,
            "summary": summary.scenario.summary,
            "plan": summary.plan,
            "metrics": {item.metric.key: item.to_json() for item in summary.metrics},
            "correctness": {
                server: {"ok": ok, "detail": summary.correctness_text(server)}
                for server, ok in summary.correctness.items()
            },
            "runs": [
                {
                    "server": run.server,
                    "round": run.round,
                    "ok": run.ok,
                    "error": run.error,
                    "wall_s": round(run.wall_s, 2),
                    "metrics": {k: _finite(v) for k, v in run.metrics.items()},
                    "check": {**asdict(run.check), "ok": run.check.ok},
                    "info": run.info,
                }
                for run in summary.runs
            ],
        }
    return result


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write the results document (creating the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")


def write_chart(path: Path, summaries: Sequence[ScenarioSummary], subtitle: str) -> None:
    """One panel per headline metric: felix vs seed (median, min-max of rounds).

    matplotlib is imported here, and only here: it is the bench's dependency,
    not Felix's.
    """
    # import_module keeps mypy from needing matplotlib's stubs where it is absent.
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")

    panels: list[tuple[str, MetricSummary]] = []
    for summary in summaries:
        for item in summary.metrics:
            headline = item.metric.target is not None or item.metric.key in (
                "deliveries_per_s",
                "connects_per_s",
            )
            if headline:
                panels.append((summary.scenario.title, item))
    targets = [
        (summary.scenario.title, item)
        for summary in summaries
        for item in summary.metrics
        if item.metric.target is not None
    ]
    if not panels:
        return
    count = len(panels) + (1 if targets else 0)
    columns = min(4, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.4 * rows), squeeze=False)
    colors = {"felix": "#2b6cb0", "seed": "#a0aec0"}
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    for ax, (title, item) in zip(axes.flat, panels, strict=False):
        values = [item.felix, item.seed]
        spreads = [
            [v for v in item.felix_rounds if math.isfinite(v)],
            [v for v in item.seed_rounds if math.isfinite(v)],
        ]
        heights = [v if math.isfinite(v) else 0.0 for v in values]
        lower = [h - min(r, default=h) for h, r in zip(heights, spreads, strict=True)]
        upper = [max(r, default=h) - h for h, r in zip(heights, spreads, strict=True)]
        ax.bar(
            list(SERVERS),
            heights,
            color=[colors[s] for s in SERVERS],
            yerr=[lower, upper],
            capsize=4,
        )
        for x, value in enumerate(values):
            ax.annotate(
                format_value(value, item.metric.digits),
                (x, heights[x] + upper[x]),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
        ratio_text = f"{item.ratio:.2f}x" if math.isfinite(item.ratio) else "n/a"
        target = f", target {item.metric.target_text()}" if item.metric.target else ""
        ax.set_title(
            f"{title}\n{item.metric.label}\nfelix/seed {ratio_text}{target}",
            fontsize=9,
            color=_VERDICT_COLORS[item.meets],
        )
        ax.set_ylabel(item.metric.unit, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.15)
    if targets:
        _targets_panel(axes.flat[len(panels)], targets)
    figure.suptitle(f"felix vs seed-style server (median of rounds) - {subtitle}", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


_VERDICT_COLORS: dict[bool | None, str] = {True: "#276749", False: "#c53030", None: "black"}


def _targets_panel(ax: Any, targets: Sequence[tuple[str, MetricSummary]]) -> None:
    """Every target as "times better than the seed" (all four targets read 2x).

    For a higher-is-better metric that is felix/seed, for a lower-is-better one
    seed/felix, so every bar is read the same way: right of 1 beats the seed,
    right of the target line meets the target.
    """
    labels, factors, colors, goals = [], [], [], []
    for title, item in targets:
        r = item.ratio
        factor = r if item.metric.higher_is_better else (1 / r if r else math.nan)
        goal = item.metric.target or 1.0
        labels.append(f"{title}\n{item.metric.label}")
        factors.append(factor if math.isfinite(factor) else 0.0)
        goals.append(goal if item.metric.higher_is_better else 1 / goal)
        colors.append(_VERDICT_COLORS[item.meets])
    positions = list(range(len(labels)))
    ax.barh(positions, factors, color=colors)
    for y, goal in zip(positions, goals, strict=True):
        ax.plot([goal, goal], [y - 0.4, y + 0.4], color="black", linestyle="--", linewidth=1)
    ax.axvline(1.0, color="grey", linewidth=0.8)
    for y, factor in zip(positions, factors, strict=True):
        ax.annotate(
            f"{factor:.2f}x",
            (factor, y),
            va="center",
            fontsize=8,
            xytext=(3, 0),
            textcoords="offset points",
        )
    ax.set_yticks(positions, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max([*factors, *goals]) * 1.3)
    ax.set_title("targets: times better than seed\n(dashed: target, grey: parity)", fontsize=9)
    ax.tick_params(labelsize=8)
