import math

import pytest

from pytest_axion.comparison import (
    IMPROVED,
    NOT_SIGNIFICANT,
    OK,
    REGRESSED,
    UNKNOWN_BETWEEN_RUN_SD,
    Side,
    classify,
    compare,
    t_quantile,
)
from pytest_axion.promises.speedup import busy_reason

STEADY = (100.0, 101.0, 99.0, 100.5, 99.5)


def runs(*levels, samples=STEADY):
    """Runs whose samples are STEADY scaled to each level (median 100 -> level)."""
    return Side(tuple(tuple(v * level / 100 for v in samples) for level in levels))


def test_same_level_is_ok_with_an_interval_around_one():
    c = compare(runs(100, 102, 98), runs(100), higher_is_better=True)
    assert c.verdict == OK and c.speedup == pytest.approx(1.0)
    assert c.low < 1 < c.high and c.between_run_known


def test_twice_as_slow_throughput_regresses_and_latency_direction_is_inverted():
    slow = compare(runs(100, 102, 98), runs(50), higher_is_better=True)
    assert slow.verdict == REGRESSED and slow.speedup == pytest.approx(0.5) and slow.high < 1
    longer = compare(runs(100, 102, 98), runs(200), higher_is_better=False)  # ms doubled
    assert longer.verdict == REGRESSED and longer.speedup == pytest.approx(0.5)
    shorter = compare(runs(100, 102, 98), runs(50), higher_is_better=False)
    assert shorter.verdict == IMPROVED and shorter.speedup == pytest.approx(2.0)


def test_band_widens_to_twice_the_baselines_between_run_spread():
    noisy = runs(80, 100, 120)
    c = compare(noisy, runs(85), higher_is_better=True)
    sd = Side(noisy.runs).between_run_sd("median", True)
    assert c.band == pytest.approx(2 * sd) and c.band > 0.3
    assert c.verdict == OK  # 0.85x lies inside what these runs themselves disagree by
    assert compare(runs(100, 101, 99), runs(85), higher_is_better=True).verdict == REGRESSED


def test_tolerance_is_the_floor_of_the_band():
    c = compare(runs(100, 100.5, 99.5), runs(85), higher_is_better=True, tolerance=0.05)
    assert c.band == pytest.approx(0.05) and c.verdict == REGRESSED
    assert compare(runs(100, 100.5, 99.5), runs(85), higher_is_better=True, tolerance=0.20).verdict == OK


def test_beyond_the_band_without_significance_is_inconclusive():
    wild = Side(((30.0, 60.0, 200.0, 300.0, 400.0),))  # one run, samples all over the place
    c = compare(wild, runs(100), higher_is_better=True)
    assert c.speedup == pytest.approx(0.5) and c.high > 1 and c.verdict == NOT_SIGNIFICANT
    assert not c.between_run_known and c.between_run_sd == UNKNOWN_BETWEEN_RUN_SD


def test_few_baseline_runs_widen_the_interval_with_students_t():
    three = compare(runs(100, 103, 97), runs(90), higher_is_better=True)
    nine = compare(runs(100, 103, 97, 100, 103, 97, 100, 103, 97), runs(90), higher_is_better=True)
    assert (three.high - three.low) > (nine.high - nine.low)
    assert t_quantile(2) == pytest.approx(4.303) and t_quantile(0) == pytest.approx(1.96)
    assert t_quantile(11) == pytest.approx(2.228)  # between tabulated values: the smaller dof (wider)


@pytest.mark.parametrize("speedup, low, high, expected", [
    (0.80, 0.75, 0.85, REGRESSED), (0.80, 0.60, 1.05, NOT_SIGNIFICANT), (0.95, 0.90, 1.00, OK),
    (1.30, 1.20, 1.40, IMPROVED), (1.30, 0.95, 1.70, OK),
])
def test_classify(speedup, low, high, expected):
    assert classify(speedup, low, high, band=0.10) == expected


def test_compare_rejects_unknown_estimator_and_bad_tolerance():
    with pytest.raises(ValueError, match="estimator"):
        compare(runs(100), runs(100), higher_is_better=True, estimator="mode")
    with pytest.raises(ValueError, match="tolerance"):
        compare(runs(100), runs(100), higher_is_better=True, tolerance=1.5)


def test_best_estimator_takes_the_fastest_sample_in_the_metrics_direction():
    side = Side(((10.0, 20.0, 30.0),))
    assert side.level("best", True) == 30.0 and side.level("best", False) == 10.0
    assert side.level("median", True) == 20.0


def test_side_refuses_empty_and_non_positive_samples():
    with pytest.raises(ValueError):
        Side(())
    with pytest.raises(ValueError):
        Side(((1.0, -2.0),))
    with pytest.raises(ValueError):
        Side(((1.0, math.inf),))


def test_busy_reason_flags_high_spread_and_steady_fall_only():
    assert busy_reason(STEADY, higher_is_better=True, baseline_within_cv=0.01) is None
    spread = busy_reason((100, 60, 140, 80, 120), higher_is_better=True, baseline_within_cv=0.01)
    assert spread == "within-run spread 32% vs 1% in the baseline"   # what the samples show, no claim about others
    # Spread that the baseline itself shows is not contention.
    assert busy_reason((100, 80, 120, 90, 110), higher_is_better=True, baseline_within_cv=0.15) is None
    falling = busy_reason((100, 97, 94, 90, 85, 82), higher_is_better=True, baseline_within_cv=0.10)
    assert falling == "repetitions slowed steadily to 0.82x of the first"
    # Latency rising is the same fall in speed; per-step samples (itl) are exempt from the fall check.
    assert busy_reason((10, 10.3, 10.7, 11.1, 11.8, 12.2), higher_is_better=False, baseline_within_cv=0.10)
    assert busy_reason((10, 10.3, 10.7, 11.1, 11.8, 12.2), higher_is_better=False, baseline_within_cv=0.10,
                       per_repetition=False) is None


def test_disagreement_is_how_far_apart_a_sides_run_levels_lie_on_the_log_scale():
    assert runs(100).disagreement("median", True) == 0.0
    assert runs(88, 75, 83).disagreement("median", True) == pytest.approx(math.log(88 / 75))
    assert runs(88, 75).disagreement("median", False) == runs(88, 75).disagreement("median", True)
