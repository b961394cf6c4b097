"""Pure number handling for the benchmark: percentiles, medians over repeats, ratios.

Kept free of I/O so it is unit-tested (tests/unit/test_bench_stats.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks.

    NaN for no values: a run that recorded nothing must show as missing, not as zero.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Spread:
    """One metric over repeated runs: the median and the range it came from."""

    median: float
    low: float
    high: float
    runs: int

    @property
    def missing(self) -> bool:
        return self.runs == 0 or math.isnan(self.median)

    @property
    def relative(self) -> float:
        """Half the range as a fraction of the median (0.05 = ±5 %)."""
        if self.missing or self.median == 0:
            return math.nan
        return (self.high - self.low) / 2 / abs(self.median)


MISSING = Spread(math.nan, math.nan, math.nan, 0)


def spread(values: Iterable[float]) -> Spread:
    """Median and range over repeats, ignoring runs that produced no number (NaN)."""
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return MISSING
    return Spread(statistics.median(kept), min(kept), max(kept), len(kept))


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when either is missing or the denominator is zero."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return math.nan
    return numerator / denominator


def combined_ceiling(grpc_ceiling: float, http_ceiling: float) -> float:
    """Throughput of a gateway that costs exactly one bare gRPC call plus one bare HTTP call:
    the per-call times add, so the rates combine like resistors in parallel."""
    if any(math.isnan(x) or x <= 0 for x in (grpc_ceiling, http_ceiling)):
        return math.nan
    return 1 / (1 / grpc_ceiling + 1 / http_ceiling)


def paired_differences(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """a[i] - b[i] for runs measured side by side in the same repeat (NaN where missing)."""
    if len(a) != len(b):
        raise ValueError(f"cannot pair {len(a)} runs with {len(b)} runs")
    return [x - y for x, y in zip(a, b, strict=True)]


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """a[i] / b[i] for runs measured side by side in the same repeat."""
    if len(a) != len(b):
        raise ValueError(f"cannot pair {len(a)} runs with {len(b)} runs")
    return [ratio(x, y) for x, y in zip(a, b, strict=True)]
