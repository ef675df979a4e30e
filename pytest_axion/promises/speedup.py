"""Contention seen in a run's own samples: a spread far above the baseline's, or repetitions that slow steadily.

The baseline promise (:mod:`pytest_axion.promises.baseline`) names it beside a miss. The comparison itself
(runs as the unit, the speedup's interval, the band, the verdict words) is :mod:`pytest_axion.comparison`.
Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from pytest_axion.stats import cv

# Contention: a run is "busy" when its spread is far above the baseline's, or its repetitions fall.
BUSY_CV_FACTOR = 3.0
BUSY_CV_FLOOR = 0.05
BUSY_FALL_RHO = -0.9
BUSY_FALL_RATIO = 0.85


def _spearman(values: Sequence[float]) -> float:
    """Rank correlation of the values with their order (no ties expected in timings)."""
    n = len(values)
    ranks = [0.0] * n
    for rank, index in enumerate(sorted(range(n), key=lambda i: values[i])):
        ranks[index] = float(rank)
    mean = (n - 1) / 2
    covariance = sum((i - mean) * (r - mean) for i, r in enumerate(ranks))
    variance = sum((i - mean) ** 2 for i in range(n))
    return covariance / variance


def busy_reason(samples: Sequence[float], *, higher_is_better: bool, baseline_within_cv: float,
                per_repetition: bool = True) -> str | None:
    """What in this run's samples suggests a busy machine, or None (what they show, not a claim about other work:
    the caller adds the CPU other processes were measured to take).

    High spread: the run's CV is above both BUSY_CV_FLOOR and BUSY_CV_FACTOR x the baseline's.
    Steady fall: (per-repetition samples only) the speed falls with almost every repetition and the
    last is well below the first, as when another process ramps up.
    """
    spread = cv(samples)
    limit = max(BUSY_CV_FLOOR, BUSY_CV_FACTOR * baseline_within_cv)
    if spread > limit:
        return f"within-run spread {spread:.0%} vs {baseline_within_cv:.0%} in the baseline"
    if per_repetition and len(samples) >= 5:
        speed = list(samples) if higher_is_better else [1 / v for v in samples]
        if _spearman(speed) <= BUSY_FALL_RHO and speed[-1] < BUSY_FALL_RATIO * speed[0]:
            return f"repetitions slowed steadily to {speed[-1] / speed[0]:.2f}x of the first"
    return None
