"""Small statistics: percentiles of latency samples, medians of rounds, ratios."""

from __future__ import annotations

import math
import statistics
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["median", "percentiles", "ratio", "read_samples"]


def read_samples(paths: Iterable[Path]) -> array[float]:
    """Concatenate the generator's latency files (raw little-endian float64, ms)."""
    samples: array[float] = array("d")
    for path in paths:
        if path.exists():
            samples.frombytes(path.read_bytes())
    return samples


def percentiles(samples: Sequence[float], quantiles: Sequence[float]) -> dict[float, float]:
    """Nearest-rank percentiles of ``samples`` (no interpolation: every value was seen)."""
    if not samples:
        return dict.fromkeys(quantiles, math.nan)
    ordered = sorted(samples)
    count = len(ordered)
    return {q: ordered[min(count - 1, max(0, math.ceil(q * count) - 1))] for q in quantiles}


def median(values: Iterable[float]) -> float:
    """Median of the finite values, NaN when there are none."""
    finite = [value for value in values if math.isfinite(value)]
    return statistics.median(finite) if finite else math.nan


def ratio(felix: float, seed: float) -> float:
    """``felix / seed``, NaN when either side is missing or the seed's is zero."""
    if not (math.isfinite(felix) and math.isfinite(seed)) or seed == 0:
        return math.nan
    return felix / seed
