import dataclasses
import math
import random

import pytest

from pytest_axion.engines.paired import round_order
from pytest_axion.promises.ab import (
    AbPromise,
    compare_paired,
    hodges_lehmann,
    per_round,
    spread_of_ratios,
    unpaired_ratios,
    wilcoxon_k,
)
from pytest_axion.promises.confirm import confirm
from pytest_axion.records import Measurement


def measurement(metric, samples, n_gen=16):
    return Measurement("t.py::test", metric, 2, 32, n_gen, 2, tuple(samples))


def drifting_pairs(rounds, slowdown, *, seed=1, drift=0.12, pair_noise=0.01):
    """A machine whose speed wanders by `drift` between rounds; both sides of a pair share it."""
    rng = random.Random(seed)
    a, b = [], []
    for _ in range(rounds):
        machine = 300 * (1 + rng.uniform(-drift, drift))
        a.append(machine * (1 + rng.gauss(0, pair_noise)))
        b.append(machine * slowdown * (1 + rng.gauss(0, pair_noise)))
    return a, b


def test_rounds_alternate_abba_so_a_steady_drift_cancels():
    assert round_order(4) == ["AB", "BA", "AB", "BA"]


@pytest.mark.parametrize("n, k", [(5, 0), (6, 1), (7, 3), (8, 4), (9, 6), (10, 9), (20, 53)])
def test_wilcoxon_order_statistic_matches_published_critical_values(n, k):
    # two-sided 5% critical values of the signed-rank statistic: 0, 2, 3, 5, 8, 52 for n = 6..10, 20
    assert wilcoxon_k(n) == k


def test_hodges_lehmann_of_a_shift_is_the_shift_with_an_interval_around_it():
    estimate, lo, hi, exact = hodges_lehmann([0.1 + d for d in (-0.02, -0.01, 0, 0.01, 0.02, 0.0, 0.005, -0.005)])
    assert estimate == pytest.approx(0.1) and lo < 0.1 < hi and exact
    assert hodges_lehmann([1.0, 2.0, 3.0])[3] is False


def test_a_real_ten_percent_slowdown_hidden_in_twelve_percent_drift_is_caught_by_pairing():
    a, b = drifting_pairs(10, 0.90)
    # unpaired, the two sides overlap: B's best round beats A's worst
    assert max(b) > min(a)
    verdict = compare_paired(measurement("prompt_tps", a), measurement("prompt_tps", b), rounds=10, tolerance=0.05)
    assert verdict.verdict == "regressed" and verdict.ratio == pytest.approx(0.90, abs=0.02)
    assert verdict.interval[1] < 1 and verdict.exact_interval
    assert "prompt_tps pp32+tg16 x2: regressed: B/A 0.89" in verdict.message and "over 10 pairs" in verdict.message


def test_the_same_build_on_both_sides_is_ok_despite_the_drift():
    for seed in range(20):
        a, b = drifting_pairs(10, 1.0, seed=seed)
        verdict = compare_paired(measurement("gen_tps", a), measurement("gen_tps", b), rounds=10)
        assert verdict.verdict == "ok", (seed, verdict.message)


def test_times_are_inverted_so_above_one_means_b_is_faster():
    a, b = drifting_pairs(10, 1.0)
    slower_b = [x * 1.2 for x in b]   # B takes 20% longer
    verdict = compare_paired(measurement("ttft_ms", a), measurement("ttft_ms", slower_b), rounds=10)
    assert verdict.ratio == pytest.approx(1 / 1.2, abs=0.02) and verdict.verdict == "regressed"
    faster = compare_paired(measurement("gen_tps", a), measurement("gen_tps", [x * 1.2 for x in b]), rounds=10)
    assert faster.verdict == "improved"


def test_a_slowdown_within_tolerance_is_ok_and_an_unproven_one_inconclusive():
    a, b = drifting_pairs(10, 0.97)
    assert compare_paired(measurement("gen_tps", a), measurement("gen_tps", b), rounds=10,
                          tolerance=0.05).verdict == "ok"
    noisy_a, noisy_b = drifting_pairs(10, 0.92, pair_noise=0.15, seed=1)
    noisy = compare_paired(measurement("gen_tps", noisy_a), measurement("gen_tps", noisy_b), rounds=10)
    assert noisy.ratio < 0.95 and noisy.interval[1] >= 1 and noisy.verdict == "inconclusive"


def test_too_few_pairs_never_fail():
    a, b = drifting_pairs(4, 0.5)
    verdict = compare_paired(measurement("gen_tps", a), measurement("gen_tps", b), rounds=4)
    assert verdict.verdict == "inconclusive" and not verdict.exact_interval and "too few pairs" in verdict.message


def test_step_latencies_are_paired_by_round_medians():
    steps = [10.0, 11.0, 30.0, 20.0, 21.0, 60.0]  # two rounds of three steps
    assert per_round(measurement("itl_ms", steps, n_gen=3), 2) == [11.0, 21.0]
    with pytest.raises(ValueError, match="do not split into 4 rounds"):
        per_round(measurement("itl_ms", steps, n_gen=3), 4)


def test_pairing_shrinks_the_spread_of_the_ratios():
    a, b = drifting_pairs(20, 1.0)
    assert spread_of_ratios(compare_paired(measurement("gen_tps", a), measurement("gen_tps", b),
                                           rounds=20).ratios) < spread_of_ratios(unpaired_ratios(a, b)) / 3
    assert math.isclose(spread_of_ratios([1.0, 1.0]), 0.0)


def test_as_a_promise_a_regression_stands_only_while_every_fresh_attempt_regresses():
    a, b = drifting_pairs(10, 0.90)
    again_a, again_b = drifting_pairs(10, 0.90, seed=7)
    same_a, same_b = drifting_pairs(10, 1.0, seed=8)
    b_first = measurement("gen_tps", b)

    def judged(*fresh_pairs):
        side = {b_first.key: (measurement("gen_tps", a), b_first)}

        def measure_again(suspects, attempt, why):   # as the session does: both sides' rounds go into the side
            fa, fb = fresh_pairs[attempt - 2]
            side[b_first.key] = (measurement("gen_tps", fa), measurement("gen_tps", fb))
            return {b_first.key: measurement("gen_tps", fb)}
        [verdict] = confirm("t.py::test", [AbPromise(side, rounds=10, tolerance=0.05)], [b_first], attempts=2,
                            measure_again=measure_again)
        return verdict

    confirmed = judged((again_a, again_b))
    assert confirmed.outcome == "fail" and confirmed.kind == "ab"
    assert confirmed.first.message.startswith("gen_tps pp32+tg16 x2: regressed: B/A 0.898x")
    lucky = judged((same_a, same_b))
    assert lucky.outcome == "pass" and [r.status for r in lucky.readings] == ["missed", "met"]


def test_a_metric_only_one_side_reports_is_left_unpaired():
    from pytest_axion.session.collected import Collected

    collected = Collected()
    a = {"gen_tps": measurement("gen_tps", [100.0] * 6)}
    b = {"gen_tps": measurement("gen_tps", [99.0] * 6), "prompt_tps": measurement("prompt_tps", [300.0] * 6)}
    collected.record_pair(a, b)   # e.g. only B's server reports its prompt timings
    assert [(x.metric, y.metric) for x, y in collected.ab_pairs] == [("gen_tps", "gen_tps")]


def test_a_workload_measured_in_two_goes_is_judged_on_both_goes_rounds():
    from pytest_axion.session.collected import Collected

    collected = Collected()   # a capacity level measured again because its interval straddled the target
    collected.record_pair({"gen_tps": measurement("gen_tps", [100.0, 101.0])},
                          {"gen_tps": measurement("gen_tps", [90.0, 91.0])})
    collected.record_pair({"gen_tps": measurement("gen_tps", [102.0])},
                          {"gen_tps": dataclasses.replace(measurement("gen_tps", [92.0]), other_cpus=0.4)})
    ((a, b),) = collected.ab_side_of("t.py::test").values()
    assert a.samples == (100.0, 101.0, 102.0) and b.samples == (90.0, 91.0, 92.0) and b.other_cpus == 0.4
