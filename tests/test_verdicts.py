import dataclasses
import json
import math
from pathlib import Path

import pytest

from pytest_axion.stats import cv, median
from pytest_axion.verdicts import (
    IMPROVED,
    INCONCLUSIVE,
    OK,
    REGRESSED,
    UNKNOWN_BETWEEN_RUN_SD,
    Attempt,
    Side,
    busy_reason,
    classify,
    compare,
    decide,
    needs_confirmation,
    t_quantile,
)

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
    assert c.speedup == pytest.approx(0.5) and c.high > 1 and c.verdict == INCONCLUSIVE
    assert not c.between_run_known and c.between_run_sd == UNKNOWN_BETWEEN_RUN_SD


def test_few_baseline_runs_widen_the_interval_with_students_t():
    three = compare(runs(100, 103, 97), runs(90), higher_is_better=True)
    nine = compare(runs(100, 103, 97, 100, 103, 97, 100, 103, 97), runs(90), higher_is_better=True)
    assert (three.high - three.low) > (nine.high - nine.low)
    assert t_quantile(2) == pytest.approx(4.303) and t_quantile(0) == pytest.approx(1.96)
    assert t_quantile(11) == pytest.approx(2.228)  # between tabulated values: the smaller dof (wider)


@pytest.mark.parametrize("speedup, low, high, expected", [
    (0.80, 0.75, 0.85, REGRESSED), (0.80, 0.60, 1.05, INCONCLUSIVE), (0.95, 0.90, 1.00, OK),
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
    assert spread is not None and "within-run spread" in spread
    # Spread that the baseline itself shows is not contention.
    assert busy_reason((100, 80, 120, 90, 110), higher_is_better=True, baseline_within_cv=0.15) is None
    falling = busy_reason((100, 97, 94, 90, 85, 82), higher_is_better=True, baseline_within_cv=0.10)
    assert falling is not None and "slowed steadily" in falling
    # Latency rising is the same fall in speed; per-step samples (itl) are exempt from the fall check.
    assert busy_reason((10, 10.3, 10.7, 11.1, 11.8, 12.2), higher_is_better=False, baseline_within_cv=0.10)
    assert busy_reason((10, 10.3, 10.7, 11.1, 11.8, 12.2), higher_is_better=False, baseline_within_cv=0.10,
                       per_repetition=False) is None


def attempt(speedup, verdict, busy=None):
    c = compare(runs(100, 101, 99), runs(100 * speedup), higher_is_better=True)
    assert c.verdict == verdict, (speedup, c)
    return Attempt(comparison=c, busy=busy, samples=())


def test_confirmation_is_asked_only_while_every_attempt_regressed():
    assert needs_confirmation([attempt(0.5, REGRESSED)], confirm=2)
    assert needs_confirmation([attempt(0.5, REGRESSED)] * 2, confirm=2)
    assert not needs_confirmation([attempt(0.5, REGRESSED)] * 3, confirm=2)
    assert not needs_confirmation([attempt(0.5, REGRESSED), attempt(1.0, OK)], confirm=2)
    assert not needs_confirmation([attempt(1.0, OK)], confirm=2)
    assert not needs_confirmation([attempt(0.5, REGRESSED)], confirm=0)


def test_decide_fails_only_when_every_attempt_regressed():
    assert decide([attempt(0.5, REGRESSED)] * 3) == (REGRESSED, "")
    verdict, reason = decide([attempt(0.5, REGRESSED), attempt(0.52, REGRESSED), attempt(1.0, OK)])
    assert verdict == INCONCLUSIVE and "0.50x, 0.52x, 1.00x" in reason and "transient" in reason
    assert decide([attempt(1.0, OK)]) == (OK, "")
    assert decide([attempt(1.5, IMPROVED)])[0] == IMPROVED


def test_a_slowdown_that_fades_attempt_by_attempt_is_inconclusive():
    # Recorded on this machine: a slow spell at 0.50x that wore off over two minutes.
    verdict, reason = decide([attempt(0.50, REGRESSED), attempt(0.74, REGRESSED), attempt(0.86, REGRESSED)])
    assert verdict == INCONCLUSIVE and "faded" in reason and "0.50x, 0.74x, 0.86x" in reason
    # Steady, or not significantly different: a regression.
    assert decide([attempt(0.50, REGRESSED), attempt(0.52, REGRESSED), attempt(0.53, REGRESSED)])[0] == REGRESSED
    assert decide([attempt(0.60, REGRESSED), attempt(0.50, REGRESSED), attempt(0.70, REGRESSED)])[0] == REGRESSED


def test_contention_is_a_reason_and_an_unconfirmed_busy_attempt_never_fails():
    busy = "busy machine: within-run spread 30% vs 1% in the baseline"
    assert decide([attempt(0.5, REGRESSED, busy)])[0] == INCONCLUSIVE
    verdict, reason = decide([attempt(0.5, REGRESSED, busy)] * 3)
    assert verdict == REGRESSED and "busy" in reason and "check what else runs" in reason
    verdict, reason = decide([attempt(1.0, OK, busy)])
    assert verdict == OK and "busy machine" in reason


# -- replaying recorded noise: 30 llama-bench rounds on a Zen 3 VM (tests/data/noise) ---------

ROUNDS = [json.loads(line) for line in
          (Path(__file__).parent / "data" / "noise" / "llama-bench-rounds-zen3.jsonl").read_text().splitlines()]


def replay(metric, slowdown, *, step=2, confirm=2):
    """Baselines from rounds i, i+2, i+4 (refused if they disagree by over 10%, as the refresh does);
    each later round judged, each regression confirmed by rounds 2 and 4 later (~80 s apart)."""
    alarms = judged = 0
    for start in range(len(ROUNDS) - 2 * step):
        base_runs = tuple(tuple(ROUNDS[k]["lb"][metric]) for k in (start, start + step, start + 2 * step))
        if cv([median(r) for r in base_runs]) > 0.10:  # refreshes that disagree this much are suspect
            continue
        base = Side(base_runs)
        for first in range(start + 2 * step + 1, len(ROUNDS) - confirm * step):
            tried = []
            for k in range(first, first + (confirm + 1) * step, step):
                current = tuple(v * slowdown for v in ROUNDS[k]["lb"][metric])
                tried.append(Attempt(compare(base, Side((current,)), higher_is_better=True),
                                     busy_reason(current, higher_is_better=True,
                                                 baseline_within_cv=base.within_run_cv()), current))
                if not needs_confirmation(tried, confirm):
                    break
            judged += 1
            alarms += decide(tried)[0] == REGRESSED
    return alarms, judged


def test_replayed_noise_false_alarms_and_detection_stay_where_they_were_measured():
    # Figures of this replay with the current rules (BENCHMARKS.md): false alarms pp 3/197, tg 14/164;
    # a halving caught in pp 176/197, tg 158/164. The Zen 3 recording has slow episodes of up to seven
    # minutes, longer than the confirmations span, which is what the misses and alarms are made of.
    limits = {"pp": (0.03, 0.85), "tg": (0.10, 0.90)}
    for metric, (max_alarms, min_caught) in limits.items():
        alarms, judged = replay(metric, 1.0)
        assert judged > 150 and alarms / judged <= max_alarms, (metric, alarms, judged)
        caught, judged = replay(metric, 0.5)
        assert caught / judged >= min_caught, (metric, caught, judged)


def test_replayed_noise_without_confirmation_cries_wolf_more():
    with_confirm, _ = replay("pp", 1.0)
    without, _ = replay("pp", 1.0, confirm=0)
    assert without > with_confirm


def test_a_slowdown_measured_while_other_processes_competed_in_every_attempt_is_inconclusive():
    contended = [dataclasses.replace(attempt(s, REGRESSED), other_cpus=cpus)
                 for s, cpus in [(0.6, 1.0), (0.62, 0.9), (0.61, 1.1)]]
    verdict, reason = decide(contended)
    assert verdict == INCONCLUSIVE
    assert reason == ("slower in every attempt (0.60x, 0.62x, 0.61x), each measured while other processes used up to "
                      "1.1 CPU(s): the figures describe them, not the build; measure where nothing else competes")
    once_quiet = [*contended[:2], dataclasses.replace(contended[2], other_cpus=None)]
    assert decide(once_quiet)[0] == REGRESSED
