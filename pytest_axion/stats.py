"""Estimators over repetition samples: location, dispersion and percentiles. Pure and deterministic."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) with linear interpolation between order statistics.

    This is the common "type 7" definition (numpy's default), so figures can be checked by hand.
    """
    if not values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within [0, 1], got {q}")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


def iqr(values: Sequence[float]) -> float:
    """Interquartile range: the spread of the middle half, robust to a single slow repetition."""
    return quantile(values, 0.75) - quantile(values, 0.25)


def mad(values: Sequence[float]) -> float:
    """Median absolute deviation from the median (unscaled)."""
    centre = median(values)
    return median([abs(v - centre) for v in values])


def cv(values: Sequence[float]) -> float:
    """Coefficient of variation: sample standard deviation over mean (0 for fewer than 2 values)."""
    if len(values) < 2:
        return 0.0
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean else math.inf


@dataclass(frozen=True)
class Summary:
    """The figures a table shows for one measurement's samples."""

    n: int
    median: float
    mean: float
    iqr: float
    mad: float
    cv: float
    minimum: float
    maximum: float
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("summary of no values")
        return cls(
            n=len(values),
            median=median(values),
            mean=statistics.fmean(values),
            iqr=iqr(values),
            mad=mad(values),
            cv=cv(values),
            minimum=min(values),
            maximum=max(values),
            p50=quantile(values, 0.50),
            p90=quantile(values, 0.90),
            p99=quantile(values, 0.99),
        )

    def to_json(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}
