"""Paired A/B verdicts: the same workload measured on two llama.cpp builds in alternating rounds.

A is the baseline installation, B the candidate. Each round measures one repetition on each side,
one right after the other (ABBA order, so a steady drift cancels too), so both sides of a pair live
through the same machine state; the per-pair speed ratio B/A is far steadier than either side alone.

Per measurement: the Hodges-Lehmann estimate of the ratio (median of the Walsh averages of the log
ratios) with the distribution-free confidence interval of the Wilcoxon signed-rank test, exact for
any number of pairs. Times (ms) are inverted, so a ratio above 1 always means B is faster.

Verdicts, as the baseline gate's: ``regressed`` when the ratio is below ``1 - tolerance`` and the
interval excludes 1; ``improved`` likewise above; beyond the band but not significant is
``inconclusive``; anything else ``ok``. As a promise (:class:`AbPromise`), a regression is a miss and
an inconclusive comparison unsure: both are measured again in fresh worker processes by the one
confirm procedure, and fail only as every promise fails. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any

from pytest_axion.comparison import NOT_SIGNIFICANT, OK, REGRESSED, classify
from pytest_axion.figures import figure
from pytest_axion.promises.marker import MarkerKey, PromiseContext, SloSpec
from pytest_axion.promises.verdict import Judgement, Reading, reading_status
from pytest_axion.records import Measurement
from pytest_axion.stats import median

DEFAULT_AB_TOLERANCE = 0.05
DEFAULT_AB_ROUNDS = 10
CONFIDENCE = 0.95


def per_round(m: Measurement, rounds: int) -> list[float]:
    """One value per round: the sample itself, or the median of the round's samples (``itl_ms`` steps)."""
    if len(m.samples) == rounds:
        return list(m.samples)
    if rounds < 1 or len(m.samples) % rounds:
        raise ValueError(f"{m.key}: {len(m.samples)} samples do not split into {rounds} rounds")
    size = len(m.samples) // rounds
    return [median(m.samples[i * size:(i + 1) * size]) for i in range(rounds)]


@lru_cache(maxsize=64)
def _signed_rank_counts(n: int) -> tuple[int, ...]:
    """How many of the 2**n sign patterns give each signed-rank sum 0..n(n+1)/2."""
    counts = [1] + [0] * (n * (n + 1) // 2)
    for rank in range(1, n + 1):
        for total in range(len(counts) - 1, rank - 1, -1):
            counts[total] += counts[total - rank]
    return tuple(counts)


def wilcoxon_k(n: int, confidence: float = CONFIDENCE) -> int:
    """Order statistic (1-based) of the Walsh averages that bounds the interval; 0 if n is too small."""
    counts, total = _signed_rank_counts(n), 2 ** n
    alpha_half, cumulative, k = (1 - confidence) / 2, 0, 0
    for t, count in enumerate(counts):
        cumulative += count
        if cumulative / total > alpha_half:
            break
        k = t + 1
    return k


def hodges_lehmann(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float, bool]:
    """(estimate, low, high, exact): low/high are the signed-rank interval, or min/max when n is too small."""
    walsh = sorted((a + b) / 2 for i, a in enumerate(values) for b in values[i:])
    k = wilcoxon_k(len(values), confidence)
    if k == 0:
        return median(walsh), walsh[0], walsh[-1], False
    return median(walsh), walsh[k - 1], walsh[-k], True


@dataclass(frozen=True)
class PairedComparison:
    """One measurement on both sides, with its paired verdict."""

    key: str
    nodeid: str
    metric: str
    workload: str               # e.g. "pp32+tg16 x2"
    unit: str
    baseline_median: float
    current_median: float
    ratios: tuple[float, ...]   # per pair, speed of B relative to A (> 1: B faster)
    ratio: float
    interval: tuple[float, float]
    exact_interval: bool        # False: too few pairs for a 95% interval; min..max shown instead
    tolerance: float
    verdict: str
    baseline_samples: tuple[float, ...]
    current_samples: tuple[float, ...]

    @property
    def message(self) -> str:
        lo, hi = self.interval
        level = f"{CONFIDENCE:.0%} CI" if self.exact_interval else "range, too few pairs for a 95% CI"
        return (f"{self.metric} {self.workload}: {self.verdict}: B/A {self.ratio:.3f}x [{lo:.3f}-{hi:.3f} {level}] "
                f"over {len(self.ratios)} pairs, A {figure(self.baseline_median)} vs B {figure(self.current_median)} "
                f"{self.unit}, tolerance {self.tolerance:.0%}")

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "nodeid": self.nodeid, "metric": self.metric, "workload": self.workload,
                "unit": self.unit, "verdict": self.verdict, "ratio": self.ratio, "interval": list(self.interval),
                "exact_interval": self.exact_interval, "tolerance": self.tolerance, "ratios": list(self.ratios),
                "baseline_median": self.baseline_median, "current_median": self.current_median,
                "baseline_samples": list(self.baseline_samples), "current_samples": list(self.current_samples)}


def compare_paired(baseline: Measurement, current: Measurement, *, rounds: int,
                   tolerance: float = DEFAULT_AB_TOLERANCE) -> PairedComparison:
    """B (current) against A (baseline), pair by pair."""
    a, b = per_round(baseline, rounds), per_round(current, rounds)
    if current.higher_is_better:
        ratios = [y / x for x, y in zip(a, b, strict=True)]
    else:
        ratios = [x / y for x, y in zip(a, b, strict=True)]
    estimate, lo, hi, exact = hodges_lehmann([math.log(r) for r in ratios])
    ratio, interval = math.exp(estimate), (math.exp(lo), math.exp(hi))
    verdict = classify(ratio, interval[0], interval[1], tolerance)   # the gate's rule, the tolerance as band
    if not exact:  # fewer than 6 pairs: no 95% statement is possible, so nothing is proven either way
        verdict = NOT_SIGNIFICANT if verdict in (REGRESSED, NOT_SIGNIFICANT) else OK
    return PairedComparison(
        key=current.key, nodeid=current.nodeid, metric=current.metric, workload=current.shape, unit=current.unit,
        baseline_median=baseline.median, current_median=current.median, ratios=tuple(ratios), ratio=ratio,
        interval=interval, exact_interval=exact, tolerance=tolerance, verdict=verdict,
        baseline_samples=baseline.samples, current_samples=current.samples)


def spread_of_ratios(ratios: Sequence[float]) -> float:
    """Relative spread (coefficient of variation) of per-pair ratios, for the benchmarks."""
    mean = sum(ratios) / len(ratios)
    return math.sqrt(sum((r - mean) ** 2 for r in ratios) / max(1, len(ratios) - 1)) / mean


def unpaired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Ratios of consecutive rounds of *different* pairs: what pairing saves, measured on the same data."""
    return [y / x for (x, _), (_, y) in pairwise(zip(a, b, strict=True))]




@dataclass(frozen=True)
class AbPromise:
    """B no slower than A beyond the tolerance, pair by pair, for every measurement of one test."""

    # (A, B) by B's key, one sample per round each; a confirming attempt refreshes it
    rounds_by_key: Mapping[str, tuple[Measurement, Measurement]]
    rounds: int
    tolerance: float

    def judge(self, measurements: Sequence[Measurement]) -> list[Judgement]:
        judgements = []
        for m in measurements:
            pair = self.rounds_by_key.get(m.key)
            if pair is None:
                continue
            c = compare_paired(*pair, rounds=self.rounds, tolerance=self.tolerance)
            reading = Reading(status=reading_status(c.verdict), figure=f"{c.ratio:.3f}x", message=c.message,
                              shortfall=(1 - self.tolerance) - c.ratio,
                              other_cpus=m.other_cpus if m.contended else None, detail=c.to_json())
            judgements.append(Judgement(name=m.key, kind="ab", label=f"{m.metric} {m.shape} B/A", involved=(m.key,),
                                        reading=reading))
        return judgements


def promises(spec: SloSpec | None, context: PromiseContext) -> list[Any]:
    if context.ab_baseline_side is None:
        return []
    return [AbPromise(context.ab_baseline_side, context.ab_rounds, context.ab_tolerance)]


KIND_ORDER = 50   # where its keys appear in the marker's help
MARKER_KEYS: tuple[MarkerKey, ...] = ()   # the A/B gate is switched on by --axion-ab-baseline, not the marker
