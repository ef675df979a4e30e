"""Comparisons that hold on noisy machines: is this run slower than the stored runs?

The unit of analysis is a *run* (one model load): samples inside a run are correlated, and whole
runs on one machine disagree by far more than their samples do (9-12% between runs vs 4% within,
see the project's noise notes). So a comparison

- summarises each run by a named estimator (median by default),
- takes a side's level as the median of its run levels,
- builds an interval for the speedup from both the within-run spread (bootstrap of each run's
  estimator) and the between-run spread (from whichever side has several runs),
- widens the tolerance band to what the baseline's own between-run spread says, and
- calls ``regressed`` only when the speedup is beyond the band *and* its interval excludes 1
  (asv's rule: significant and large); beyond the band but not significant is ``inconclusive``.

Everything here is pure and deterministic (a fixed bootstrap seed), and it imports nothing above
:mod:`pytest_axion.stats`: the baseline promise (:mod:`pytest_axion.promises.baseline`, which confirms an
attempt below the band by fresh attempts) and the stored files' comparisons (:mod:`pytest_axion.store`)
both build on it.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_axion.errors import SettingsError
from pytest_axion.stats import cv, median

# What one comparison says. NOT_SIGNIFICANT ("inconclusive" in files, as written since version 1) is a comparison's
# word: slower beyond the band, not significantly. A verdict's INCONCLUSIVE (promises.verdict) is another thing: the
# attempts could not settle a promise.
OK, IMPROVED, REGRESSED, NOT_SIGNIFICANT = "ok", "improved", "regressed", "inconclusive"

DEFAULT_TOLERANCE = 0.10
DEFAULT_ESTIMATOR = "median"
CONFIDENCE_Z = 1.96          # two-sided 95% interval, once the between-run spread is well known
# Student's t (two-sided 95%) by degrees of freedom of the between-run spread: three runs say little.
_T_975 = {1: 12.71, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
          12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}
BAND_SPREADS = 2.0           # the band is at least this many between-run standard deviations
# Assumed when no side has two runs (single runs say nothing about it): what whole runs differ by on the
# machines this was built on, 9.3% (pp512) and 12.4% (tg128) CV across 30 llama-bench rounds.
UNKNOWN_BETWEEN_RUN_SD = 0.10
MIN_BETWEEN_RUN_SD = 0.02      # two or three runs can agree by luck; whole runs here never agree better
BOOTSTRAP_RESAMPLES = 200


def _best(samples: Sequence[float], higher_is_better: bool) -> float:
    return max(samples) if higher_is_better else min(samples)


def _median(samples: Sequence[float], higher_is_better: bool) -> float:
    return median(samples)


ESTIMATORS: dict[str, Callable[[Sequence[float], bool], float]] = {"median": _median, "best": _best}


@dataclass(frozen=True)
class Side:
    """One side of a comparison: the samples of one measurement from one or more runs."""

    runs: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        if not self.runs or any(not run for run in self.runs):
            raise ValueError("a side needs at least one run with at least one sample")
        if any(not (v > 0 and math.isfinite(v)) for run in self.runs for v in run):
            raise ValueError("samples must be positive finite numbers")

    def run_levels(self, estimator: str, higher_is_better: bool) -> list[float]:
        return [ESTIMATORS[estimator](run, higher_is_better) for run in self.runs]

    def level(self, estimator: str, higher_is_better: bool) -> float:
        return median(self.run_levels(estimator, higher_is_better))

    def between_run_sd(self, estimator: str, higher_is_better: bool) -> float | None:
        """Standard deviation of the log run levels; None with one run (unknown, not zero)."""
        if len(self.runs) < 2:
            return None
        return statistics.stdev(math.log(v) for v in self.run_levels(estimator, higher_is_better))

    def within_run_cv(self) -> float:
        """The typical spread inside one run: median over runs of each run's CV."""
        return median([cv(run) for run in self.runs])

    def disagreement(self, estimator: str, higher_is_better: bool) -> float:
        """How far apart its runs' levels lie, on the log scale of :meth:`between_run_sd`: log(fastest / slowest),
        0 with one run."""
        levels = self.run_levels(estimator, higher_is_better)
        return math.log(max(levels) / min(levels))


@dataclass(frozen=True)
class Comparison:
    """One current run (or side) against a baseline side. ``speedup`` > 1 is faster, for every metric."""

    baseline_level: float
    current_level: float
    speedup: float
    low: float
    high: float
    band: float
    between_run_sd: float
    between_run_known: bool
    verdict: str
    log_se: float = 0.0                # standard error of log(speedup), and the quantile the interval used:
    quantile: float = CONFIDENCE_Z     # what a test of many comparisons together needs (store.compare)

    def to_json(self) -> dict[str, Any]:
        return {"baseline_level": self.baseline_level, "current_level": self.current_level,
                "speedup": self.speedup, "interval": [self.low, self.high], "band": self.band,
                "between_run_sd": self.between_run_sd, "between_run_known": self.between_run_known,
                "verdict": self.verdict}


def _log_se_within(run: Sequence[float], estimator: str, higher_is_better: bool, rng: random.Random) -> float:
    """Bootstrap standard error of log(estimator) over one run's samples."""
    if len(run) < 2:
        return 0.0
    estimate = ESTIMATORS[estimator]
    # rng.choices(run, k=n)'s own draws, without its per-call set-up: every baseline comparison resamples each run
    # 200 times, and replaying a noise series compares thousands of times (the same values, a third quicker)
    draw, count = rng.random, float(len(run))
    values = [math.log(estimate([run[int(draw() * count)] for _ in run], higher_is_better))
              for _ in range(BOOTSTRAP_RESAMPLES)]
    return statistics.stdev(values)


def _level_variance_within(side: Side, estimator: str, higher_is_better: bool, rng: random.Random) -> float:
    """Within-run part of the variance of log(side level): mean run variance over the run count."""
    variances = [_log_se_within(run, estimator, higher_is_better, rng) ** 2 for run in side.runs]
    return statistics.fmean(variances) / len(side.runs)


def pooled_between_run_sd(sides: Sequence[Side], estimator: str,
                          higher_is_better: bool) -> tuple[float | None, int]:
    """Between-run standard deviation pooled over the sides that have several runs, and its dof."""
    weighted, dof = 0.0, 0
    for side in sides:
        sd = side.between_run_sd(estimator, higher_is_better)
        if sd is not None:
            weighted += (len(side.runs) - 1) * sd * sd
            dof += len(side.runs) - 1
    return (math.sqrt(weighted / dof) if dof else None), dof


def t_quantile(dof: int) -> float:
    """Two-sided 95% quantile of Student's t (the next smaller tabulated dof: conservative)."""
    if dof <= 0 or dof > max(_T_975):
        return CONFIDENCE_Z
    return _T_975[max(d for d in _T_975 if d <= dof)]


def compare(baseline: Side, current: Side, *, higher_is_better: bool, tolerance: float = DEFAULT_TOLERANCE,
            estimator: str = DEFAULT_ESTIMATOR) -> Comparison:
    """Speedup of ``current`` over ``baseline`` with a 95% interval and a verdict (no confirmation)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be within [0, 1), got {tolerance}")
    rng = random.Random(0)
    base_level = baseline.level(estimator, higher_is_better)
    cur_level = current.level(estimator, higher_is_better)
    log_speedup = math.log(cur_level / base_level) * (1 if higher_is_better else -1)

    pooled, dof = pooled_between_run_sd([baseline, current], estimator, higher_is_better)
    between = UNKNOWN_BETWEEN_RUN_SD if pooled is None else max(pooled, MIN_BETWEEN_RUN_SD)
    variance = (between ** 2 * (1 / len(baseline.runs) + 1 / len(current.runs))
                + _level_variance_within(baseline, estimator, higher_is_better, rng)
                + _level_variance_within(current, estimator, higher_is_better, rng))
    # The between-run spread is estimated from few runs, so its quantile is Student's t, not normal.
    half_width = t_quantile(dof) * math.sqrt(variance)
    band = band_of(tolerance, pooled)
    speedup = math.exp(log_speedup)
    low, high = math.exp(log_speedup - half_width), math.exp(log_speedup + half_width)
    return Comparison(baseline_level=base_level, current_level=cur_level, speedup=speedup, low=low, high=high,
                      band=band, between_run_sd=between, between_run_known=pooled is not None,
                      verdict=classify(speedup, low, high, band), log_se=math.sqrt(variance),
                      quantile=t_quantile(dof))


def band_of(tolerance: float, between_run_sd: float | None) -> float:
    """The band a comparison must clear: the tolerance, widened to BAND_SPREADS between-run spreads (at least
    MIN_BETWEEN_RUN_SD each) where the spread is known. Comparisons, refresh reports and the gate use this one rule."""
    if between_run_sd is None:
        return tolerance
    return max(tolerance, BAND_SPREADS * max(between_run_sd, MIN_BETWEEN_RUN_SD))


def spread_allowance(between_run_sd: float | None) -> float:
    """How far (log scale) two measurements of one build may lie apart on this machine: BAND_SPREADS between-run
    spreads, the spread assumed where it is unknown."""
    return BAND_SPREADS * (UNKNOWN_BETWEEN_RUN_SD if between_run_sd is None
                           else max(between_run_sd, MIN_BETWEEN_RUN_SD))


def classify(speedup: float, low: float, high: float, band: float) -> str:
    """Significant and beyond the band: regressed/improved. Slower beyond the band but not significant:
    inconclusive (worth a look). Faster but not significant: ok (no sign of harm, nothing to warn about)."""
    if speedup < 1 - band:
        return REGRESSED if high < 1 else NOT_SIGNIFICANT
    if speedup > 1 + band and low > 1:
        return IMPROVED
    return OK


def parse_tolerance(text: str, *, source: str) -> float:
    """'10%' or '0.1' -> 0.1; must lie in [0, 1)."""
    cleaned = text.strip()
    try:
        value = float(cleaned[:-1]) / 100 if cleaned.endswith("%") else float(cleaned)
    except ValueError:
        raise SettingsError(f"{source} must be a fraction such as 0.1 or a percentage such as 10%, "
                            f"got {text!r}") from None
    if not 0 <= value < 1:
        raise SettingsError(f"{source} must be at least 0 and below 100%, got {text!r}")
    return value
