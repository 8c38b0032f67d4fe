"""Results: the medians and ratios, the printed table, the JSON file, the chart."""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from felix_bench._scenarios import COMMON_METRICS, Metric, RunResult, Scenario
from felix_bench._stats import median, ratio

__all__ = ["MetricSummary", "ScenarioSummary", "format_table", "summarize", "write_chart"]


@dataclass
class MetricSummary:
    """One metric of one scenario: each side's median over rounds, and their ratio.

    ``medians`` and ``rounds`` follow the scenario's sides: two sides (Felix
    and the seed, or ``felix:sse`` and ``felix:ws``), or Felix alone.
    """

    metric: Metric
    sides: tuple[str, ...]
    medians: list[float]
    rounds: list[list[float]]

    @property
    def first(self) -> float:
        """The first side's median (Felix's)."""
        return self.medians[0]

    @property
    def second(self) -> float:
        """The second side's median; NaN when the scenario has one side."""
        return self.medians[1] if len(self.medians) > 1 else math.nan

    @property
    def ratio(self) -> float:
        """first / second; NaN when the scenario has one side."""
        return ratio(self.first, self.second) if len(self.medians) > 1 else math.nan

    @property
    def round_ratios(self) -> list[float]:
        """first / second of each round (the sides' runs of the same round, in order);
        empty when the scenario has one side."""
        if len(self.rounds) < 2:
            return []
        return [ratio(a, b) for a, b in zip(self.rounds[0], self.rounds[1], strict=False)]

    @property
    def worst_ratio(self) -> float:
        """The least favourable round's ratio; NaN when a round has none."""
        return self.metric.worst(self.round_ratios)

    @property
    def judged(self) -> float:
        """What the target bounds: the ratio of the medians, the worst round's ratio
        if ``every_round``, or the first side's own value if ``absolute``."""
        if self.metric.every_round:
            return self.worst_ratio
        return self.first if self.metric.absolute else self.ratio

    def ratio_text(self) -> str:
        """The ratio cell: ``0.80x``, with the worst round's beside it when every
        round is judged (``0.80x, worst 1.05x``); ``-`` without a ratio."""
        if not math.isfinite(self.ratio):
            return "-"
        text = f"{self.ratio:.2f}x"
        if self.metric.every_round:
            worst = self.worst_ratio
            text += f", worst {worst:.2f}x" if math.isfinite(worst) else ", worst -"
        return text

    @property
    def meets(self) -> bool | None:
        """Whether the target holds (None when the metric has no target)."""
        return self.metric.meets(self.judged)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (NaN becomes null); each side's median under its own name."""
        document: dict[str, Any] = {
            "label": self.metric.label,
            "unit": self.metric.unit,
            "higher_is_better": self.metric.higher_is_better,
        }
        for side, value, rounds in zip(self.sides, self.medians, self.rounds, strict=True):
            document[side] = _finite(value)
            document[f"{side}_rounds"] = [_finite(v) for v in rounds]
        document.update(
            ratio=_finite(self.ratio),
            round_ratios=[_finite(value) for value in self.round_ratios],
            worst_round_ratio=_finite(self.worst_ratio),
            target=self.metric.target_text() or None,
            target_on=None if self.metric.target is None else self._target_on(),
            meets_target=self.meets,
        )
        return document

    def _target_on(self) -> str:
        if self.metric.every_round:
            return "every round's ratio"
        return f"{self.sides[0]}'s value" if self.metric.absolute else "ratio"


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
        """Every run of every side completed and passed its audit."""
        return all(self.correctness.values())

    def correctness_text(self, side: str) -> str:
        """``ok``, the first failure of ``side``'s runs, or ``not run``."""
        if side not in self.scenario.sides:
            return "not run"
        for run in self.runs:
            if run.server != side:
                continue
            if run.error is not None:
                return "FAILED (run error)"
            if not run.check.ok:
                return run.check.describe()
        return "ok"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def summarize(scenario: Scenario, plan: str, runs: Sequence[RunResult]) -> ScenarioSummary:
    """Medians per side over the rounds, for the scenario's metrics and the common ones."""
    sides = scenario.sides
    metrics = []
    for metric in (*scenario.metrics, *COMMON_METRICS):
        rounds = [
            [run.metrics.get(metric.key, math.nan) for run in runs if run.server == side]
            for side in sides
        ]
        metrics.append(
            MetricSummary(
                metric=metric,
                sides=sides,
                medians=[median(values) for values in rounds],
                rounds=rounds,
            )
        )
    summary = ScenarioSummary(scenario=scenario, plan=plan, metrics=metrics, runs=list(runs))
    for side in sides:
        mine = [run for run in runs if run.server == side]
        summary.correctness[side] = bool(mine) and all(run.ok for run in mine)
    return summary


def format_value(value: float, digits: int) -> str:
    """Thousands separators for big numbers, ``digits`` decimals for small ones."""
    if not math.isfinite(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{max(digits, 1)}f}"


def format_table(summaries: Sequence[ScenarioSummary]) -> str:
    """The results table: scenario, metric, felix, seed, ratio, target, result.

    A scenario with other sides says which side each column holds; a
    one-sided scenario leaves the second column and the ratio empty.
    """
    header = ("scenario", "metric", "felix", "seed", "ratio", "target", "result")
    rows: list[tuple[str, ...]] = []
    for summary in summaries:
        rows.extend(_scenario_rows(summary))
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


def _scenario_rows(summary: ScenarioSummary) -> list[tuple[str, ...]]:
    """One scenario's rows: its columns (if not felix | seed), metrics, exactly-once."""
    sides = summary.scenario.sides
    rows: list[tuple[str, ...]] = []
    if not summary.scenario.against_seed:
        rows.append(("", "(columns: " + " | ".join(sides) + ")", "", "", "", "", ""))
    for item in summary.metrics:
        metric = item.metric
        meets = item.meets
        target = metric.target_text()
        if target and metric.absolute:
            target = f"{sides[0]} {target}"
        rows.append(
            (
                "",
                f"{metric.label} ({metric.unit})",
                format_value(item.first, metric.digits),
                format_value(item.second, metric.digits),
                item.ratio_text(),
                target,
                "" if meets is None else ("PASS" if meets else "MISS"),
            )
        )
    rows.append(
        (
            "",
            "exactly once, in order",
            _short(summary.correctness_text(sides[0])),
            _short(summary.correctness_text(sides[1])) if len(sides) > 1 else "-",
            "",
            "0 lost/dup/reordered",
            "PASS" if summary.correct else "FAIL",
        )
    )
    rows[0] = (summary.scenario.title, *rows[0][1:])
    return rows


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
    """One panel per headline metric: each side's median, min-max of rounds.

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
    # The targets panel draws ratios; an absolute target on a count (events
    # lost) has no "times better" to draw, its own panel shows it.
    targets = [
        (summary.scenario.title, item)
        for summary in summaries
        for item in summary.metrics
        if item.metric.target is not None and item.metric.judged_text(1.0).endswith("x")
    ]
    if not panels:
        return
    count = len(panels) + (1 if targets else 0)
    columns = min(4, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    for ax, (title, item) in zip(axes.flat, panels, strict=False):
        _metric_panel(ax, title, item)
    if targets:
        _targets_panel(axes.flat[len(panels)], targets)
    figure.suptitle(f"felix vs seed-style server (median of rounds) - {subtitle}", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


#: Bar colours by side position: Felix (or the first side), then the other.
_SIDE_COLORS: Final = ("#2b6cb0", "#a0aec0")


def _metric_panel(ax: Any, title: str, item: MetricSummary) -> None:
    """One metric's bars: each side's median, the rounds' min-max as error bars."""
    values = item.medians
    spreads = [[v for v in rounds if math.isfinite(v)] for rounds in item.rounds]
    heights = [v if math.isfinite(v) else 0.0 for v in values]
    lower = [h - min(r, default=h) for h, r in zip(heights, spreads, strict=True)]
    upper = [max(r, default=h) - h for h, r in zip(heights, spreads, strict=True)]
    ax.bar(
        list(item.sides),
        heights,
        color=list(_SIDE_COLORS[: len(item.sides)]),
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
    # Two sides: their ratio; one side: its name (an absolute target bounds its value).
    ratio_text = item.sides[0]
    if len(item.sides) > 1:
        ratio = item.ratio_text() if math.isfinite(item.ratio) else "n/a"
        ratio_text = f"{'/'.join(item.sides)} {ratio}"
    # ``is not None``: a target of 0 (events lost) is a target too.
    has_target = item.metric.target is not None
    target = f", target {item.metric.target_text()}" if has_target else ""
    ax.set_title(
        f"{title}\n{item.metric.label}\n{ratio_text}{target}",
        fontsize=9,
        color=_VERDICT_COLORS[item.meets],
    )
    ax.set_ylabel(item.metric.unit, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.margins(y=0.15)


_VERDICT_COLORS: dict[bool | None, str] = {True: "#276749", False: "#c53030", None: "black"}


def _targets_panel(ax: Any, targets: Sequence[tuple[str, MetricSummary]]) -> None:
    """Every target as "times better than the other side".

    For a higher-is-better metric that is first/second, for a lower-is-better
    one second/first, so every bar is read the same way: right of 1 beats the
    other side, right of the target line meets the target. An ``absolute``
    target (the producer stream against POST, Felix alone) shows Felix's own ratio.
    """
    labels, factors, colors, goals = [], [], [], []
    for title, item in targets:
        r = item.judged
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
    ax.set_title("targets: times better\n(dashed: target, grey: parity)", fontsize=9)
    ax.tick_params(labelsize=8)
