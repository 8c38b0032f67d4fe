"""The bench harness's pure parts: how a target is judged and shown.

The bench itself (``nox -s bench``) starts servers and load generators; what is
tested here is the arithmetic of its verdicts, which no run would catch when wrong.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from felix_bench._report import MetricSummary, summarize
from felix_bench._restart_clients import Subscriber, Tally, audit
from felix_bench._scenarios import SCENARIOS, Check, Metric, RunResult

P99 = Metric("latency_p99_ms", "latency p99", "ms", higher_is_better=False, target=1.0)
P99_EVERY = Metric(
    "latency_p99_ms", "latency p99", "ms", higher_is_better=False, target=1.0, every_round=True
)
RATE_EVERY = Metric("rate", "rate", "1/s", higher_is_better=True, target=2.0, every_round=True)


def _summary(metric: Metric, felix: list[float], seed: list[float]) -> MetricSummary:
    return MetricSummary(
        metric=metric,
        sides=("felix", "seed"),
        medians=[float(sorted(felix)[len(felix) // 2]), float(sorted(seed)[len(seed) // 2])],
        rounds=[felix, seed],
    )


def test_a_median_target_holds_where_one_round_misses() -> None:
    item = _summary(P99, [8.0, 8.0, 12.0], [10.0, 10.0, 10.0])
    assert item.ratio == pytest.approx(0.8)
    assert item.meets is True


def test_every_round_judges_the_worst_rounds_ratio() -> None:
    item = _summary(P99_EVERY, [8.0, 8.0, 12.0], [10.0, 10.0, 10.0])
    assert item.round_ratios == pytest.approx([0.8, 0.8, 1.2])
    assert item.judged == pytest.approx(1.2)
    assert item.meets is False
    assert item.ratio_text() == "0.80x, worst 1.20x"


def test_every_round_pairs_the_runs_of_the_same_round() -> None:
    # Each round's ratio holds although the sides' medians alone would not say so.
    item = _summary(P99_EVERY, [5.0, 9.0, 7.0], [6.0, 10.0, 8.0])
    assert item.meets is True
    assert item.judged == pytest.approx(0.9)


def test_every_round_of_a_higher_is_better_metric_takes_the_lowest_ratio() -> None:
    item = _summary(RATE_EVERY, [300.0, 250.0, 190.0], [100.0, 100.0, 100.0])
    assert item.judged == pytest.approx(1.9)
    assert item.meets is False


def test_a_round_without_a_figure_leaves_every_round_unmeasured() -> None:
    item = _summary(P99_EVERY, [8.0, math.nan, 8.0], [10.0, 10.0, 10.0])
    assert math.isnan(item.judged)
    assert item.meets is None


def test_target_texts() -> None:
    assert P99.target_text() == "<= 1x"
    assert P99_EVERY.target_text() == "<= 1x every round"
    lost = Metric("lost", "events lost", "events", False, target=0.0, absolute=True)
    assert lost.target_text() == "<= 0 events"
    assert lost.meets(0.0) is True
    assert lost.meets(3.0) is False
    assert lost.judged_text(3.0) == "3 events"


def test_a_target_is_absolute_or_per_round_not_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        Metric("x", "x", "x", True, target=1.0, absolute=True, every_round=True)


def test_summarize_shows_the_worst_round_in_the_json() -> None:
    scenario = SCENARIOS["latency"]
    runs = []
    for round_number, (felix, seed) in enumerate([(4.0, 5.0), (6.0, 5.0)], start=1):
        for server, p99 in (("felix", felix), ("seed", seed)):
            run = RunResult(scenario="latency", server=server, round=round_number)
            run.metrics["latency_p99_ms"] = p99
            runs.append(run)
    summary = summarize(scenario, "plan", runs)
    (item,) = [m for m in summary.metrics if m.metric.key == "latency_p99_ms"]
    document = item.to_json()
    assert document["round_ratios"] == pytest.approx([0.8, 1.2])
    assert document["worst_round_ratio"] == pytest.approx(1.2)
    assert document["meets_target"] is False
    assert document["target_on"] == "every round's ratio"


def test_issue_14_targets_are_where_the_issue_puts_them() -> None:
    def target(scenario: str, key: str) -> tuple[float | None, bool]:
        (metric,) = [m for m in SCENARIOS[scenario].metrics if m.key == key]
        return metric.target, metric.every_round

    assert target("many-workflows", "deliveries_per_s") == (2.0, False)
    assert target("many-workflows", "server_us_per_event") == (0.5, False)
    assert target("many-workflows-stream", "deliveries_per_s") == (5.0, False)
    assert target("producer-stream", "stream_vs_post") == (3.0, False)
    assert target("latency", "latency_p99_ms") == (1.0, True)
    assert target("fanout", "latency_p99_ms") == (0.5, False)
    assert target("storm", "server_us_per_handshake") == (0.75, False)
    assert target("sse-fanout", "server_us_per_delivery") == (1.25, False)


def test_a_tally_counts_duplicates_reorders_and_losses_by_n() -> None:
    tally = Tally()
    for n in (1, 2, 4, 3, 4, 9):
        tally.take(n)
    assert tally.duplicates == 1
    assert tally.reordered == 1
    assert tally.highest == 9
    assert tally.lost(6) == 2  # 5 and 6 never came
    assert tally.unexpected(6) == 1  # 9 was never published


def test_a_lossy_check_passes_with_losses_but_not_with_broken_connections() -> None:
    check = Check(expected=100, delivered=60, lost=40, duplicates=2, lossy=True)
    assert check.ok
    assert check.describe() == "ok, no resume: 40 lost, 2 dup/reord"
    broken = Check(expected=100, delivered=60, lost=40, connect_failures=1, lossy=True)
    assert not broken.ok
    strict = Check(expected=100, delivered=60, lost=40)
    assert not strict.ok


def test_the_restart_storm_judges_felix_losses_absolutely() -> None:
    metrics = {m.key: m for m in SCENARIOS["restart-storm"].metrics}
    assert metrics["restart_live_s"].target == 1.0
    lost = metrics["restart_lost"]
    assert (lost.target, lost.absolute) == (0.0, True)
    assert SCENARIOS["restart-storm"].full.workflows * SCENARIOS[
        "restart-storm"
    ].full.subscribers == (2000)


class _Stub(Subscriber):
    def connections(self) -> int:
        return 1

    async def run(self) -> None:
        return None


def test_the_audit_sums_every_subscriber_against_what_was_published() -> None:
    first, second = _Stub("http://x", "wf-a"), _Stub("http://x", "wf-b")
    for n in (1, 2, 3):
        first.tally.take(n)
    for n in (1, 3, 3):
        second.tally.take(n)
    second.error = "wf-b: gave up"
    report = audit([first, second], {"wf-a": 3, "wf-b": 4})
    assert report["subscribers"] == 2
    assert report["delivered"] == 5
    assert report["lost"] == 2  # wf-b's 2 and 4
    assert report["duplicates"] == 1
    assert report["failed"] == 1
    assert report["errors"] == ["wf-b: gave up"]
