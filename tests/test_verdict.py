"""The one rule from attempts to an outcome, for every kind of promise; and the gate's quality on recorded noise."""

import dataclasses
import json
from pathlib import Path

import pytest

from pytest_axion.promises.baseline import baseline_reading
from pytest_axion.promises.speedup import Side, busy_reason, compare
from pytest_axion.promises.verdict import (
    FAIL,
    INCONCLUSIVE,
    INFO,
    MET,
    MISSED,
    PASS,
    UNSURE,
    Judgement,
    Reading,
    Verdict,
    decide,
    verdict_of,
    wants_another_attempt,
)
from pytest_axion.stats import cv, median

STEADY = (100.0, 101.0, 99.0, 100.5, 99.5)
BASE = Side(tuple(tuple(v * level / 100 for v in STEADY) for level in (100, 101, 99)))


def attempt(speedup, busy=None, other_cpus=None):
    """One attempt of the baseline promise at this speedup (steady samples, a steady 3-run baseline)."""
    current = Side((tuple(v * speedup for v in STEADY),))
    c = compare(BASE, current, higher_is_better=True)
    return baseline_reading(c, label="prompt_tps pp512", unit="tokens/s", runs=3, estimator="median", tolerance=0.1,
                            busy=busy, other_cpus=other_cpus)


def reading(status, shortfall=0.1, other_cpus=None, figure="x"):
    return Reading(status=status, figure=figure, message="m", shortfall=shortfall, other_cpus=other_cpus)


def test_readings_of_the_baseline_promise():
    assert attempt(0.5).status == MISSED and attempt(1.0).status == MET and attempt(1.5).status == MET
    assert attempt(1.5).detail["word"] == "improved" and attempt(0.5).figure == "0.50x"
    unsure = baseline_reading(compare(BASE, Side(((70.0, 110.0, 75.0, 100.0, 72.0),)), higher_is_better=True),
                              label="l", unit="u", runs=3, estimator="median", tolerance=0.1)
    assert unsure.status == UNSURE and "slower, not significantly" in unsure.message


def test_another_attempt_while_no_attempt_met_the_promise_and_clear_misses_are_lacking():
    assert wants_another_attempt([reading(MISSED)], 3) and wants_another_attempt([reading(UNSURE)], 3)
    assert wants_another_attempt([reading(MISSED)] * 2, 3)
    assert not wants_another_attempt([reading(MISSED)] * 3, 3)
    assert not wants_another_attempt([reading(MISSED), reading(MET)], 3)
    assert not wants_another_attempt([reading(MET)], 3) and not wants_another_attempt([reading(MISSED)], 1)
    # An unsure first attempt earns one more: it is not yet evidence of a miss.
    assert wants_another_attempt([reading(UNSURE), reading(MISSED), reading(MISSED)], 3)
    assert not wants_another_attempt([reading(UNSURE), reading(MISSED), reading(MISSED), reading(MISSED)], 3)
    assert not wants_another_attempt([reading(UNSURE)], 1)


def test_fail_only_when_no_attempt_met_the_promise_and_enough_missed_clearly():
    assert decide([attempt(0.5)] * 3, attempts=3) == (FAIL, "missed in every attempt")
    outcome, reason = decide([attempt(0.5), attempt(0.52), attempt(1.0)], attempts=3)
    assert outcome == PASS and reason == ("slower at first (0.50x, 0.52x, 1.00x), then a fresh attempt met it: a slow "
                                          "spell of the machine, not the build")
    busy = decide([attempt(0.5, other_cpus=1.0), attempt(1.0)], attempts=3)
    assert busy[0] == INCONCLUSIVE and "missed while other processes used up to 1.0 CPU(s)" in busy[1]
    assert decide([attempt(1.0)]) == (PASS, "") and decide([attempt(1.5)]) == (PASS, "")
    assert decide([attempt(0.5)]) == (FAIL, "")   # --axion-confirm 0: the first attempt decides


def test_an_unsure_first_attempt_that_a_fresh_one_clears_passes_and_one_that_persists_fails():
    # Unchanged code: a first attempt at 0.78x that was not significant, then a fresh attempt at 1.0x.
    assert decide([reading(UNSURE), reading(MET)], attempts=3)[0] == PASS
    assert decide([reading(UNSURE), reading(MISSED), reading(MET)], attempts=3)[0] == PASS
    assert decide([reading(UNSURE, other_cpus=0.9), reading(MET)], attempts=3)[0] == INCONCLUSIVE
    assert decide([reading(UNSURE), reading(MISSED), reading(MISSED, 0.2)], attempts=3)[0] == FAIL
    outcome, reason = decide([reading(UNSURE), reading(UNSURE), reading(MISSED), reading(UNSURE)], attempts=3)
    assert outcome == INCONCLUSIVE and "significantly in only 1 of them" in reason
    outcome, reason = decide([reading(UNSURE)] * 3, attempts=3)
    assert outcome == INCONCLUSIVE and "never significantly" in reason


def test_a_slowdown_that_fades_attempt_by_attempt_is_inconclusive():
    # Recorded on this machine: a slow spell at 0.50x that wore off over two minutes.
    outcome, reason = decide([attempt(0.50), attempt(0.74), attempt(0.86)])
    assert outcome == INCONCLUSIVE and "faded" in reason
    # Steady, or not fading: a regression.
    assert decide([attempt(0.50), attempt(0.52), attempt(0.53)])[0] == FAIL
    assert decide([attempt(0.60), attempt(0.50), attempt(0.70)])[0] == FAIL
    # A promise far out of reach (a spread of 0.1%) whose miss shrinks by chance, 7% -> 6% -> 3%, has not faded.
    far = [reading(MISSED, shortfall=(spread - 0.001) / 0.001) for spread in (0.07, 0.06, 0.03)]
    assert decide(far, attempts=3)[0] == FAIL


def test_a_busy_first_attempt_alone_never_fails_and_a_confirmed_one_says_the_machine_looked_busy():
    busy = "busy machine: within-run spread 30% vs 1% in the baseline"
    assert decide([attempt(0.5, busy)])[0] == INCONCLUSIVE
    outcome, reason = decide([attempt(0.5, busy)] * 3)
    assert outcome == FAIL and "busy" in reason and "check what else runs" in reason
    assert decide([attempt(1.0, busy)]) == (PASS, "")


def test_misses_measured_while_other_processes_competed_in_every_attempt_are_inconclusive():
    contended = [attempt(s, other_cpus=cpus) for s, cpus in [(0.6, 1.0), (0.62, 0.9), (0.61, 1.1)]]
    outcome, reason = decide(contended)
    assert outcome == INCONCLUSIVE
    assert reason == ("every attempt was measured while other processes used up to 1.1 CPU(s): the figures "
                      "describe them, not the build; measure where nothing else competes")
    once_quiet = [*contended[:2], dataclasses.replace(contended[2], other_cpus=None)]
    assert decide(once_quiet)[0] == FAIL


def test_settled_judgements_need_no_attempts_and_the_verdict_round_trips():
    shown = Judgement("n", "threshold", "per_user_tps at batch 8", ("k",), reading(MISSED), settled=INFO)
    verdict = verdict_of("t.py::x", [shown])
    assert verdict.outcome == INFO and verdict.property_name == "axion.threshold.n"
    assert Verdict.from_json(verdict.to_json()) == verdict
    with pytest.raises(ValueError):
        decide([])


# -- replaying recorded noise: 30 llama-bench rounds on a Zen 3 VM (tests/data/noise) ---------

ROUNDS = [json.loads(line) for line in
          (Path(__file__).parent / "data" / "noise" / "llama-bench-rounds-zen3.jsonl").read_text().splitlines()]


def replay(metric, slowdown, *, step=2, attempts=3):
    """Baselines from rounds i, i+2, i+4 (refused if they disagree by over 10%, as the refresh does);
    each later round judged, each suspect confirmed by rounds 2 and 4 later (~80 s apart)."""
    alarms = judged = inconclusive = 0
    for start in range(len(ROUNDS) - 2 * step):
        base_runs = tuple(tuple(ROUNDS[k]["lb"][metric]) for k in (start, start + step, start + 2 * step))
        if cv([median(r) for r in base_runs]) > 0.10:  # refreshes that disagree this much are suspect
            continue
        base = Side(base_runs)
        for first in range(start + 2 * step + 1, len(ROUNDS) - attempts * step):
            tried = []
            for k in range(first, len(ROUNDS), step):
                current = tuple(v * slowdown for v in ROUNDS[k]["lb"][metric])
                c = compare(base, Side((current,)), higher_is_better=True)
                tried.append(baseline_reading(c, label=metric, unit="t/s", runs=3, estimator="median", tolerance=0.1,
                                              busy=busy_reason(current, higher_is_better=True,
                                                               baseline_within_cv=base.within_run_cv())))
                if not wants_another_attempt(tried, attempts):
                    break
            judged += 1
            outcome = decide(tried, attempts=attempts)[0]
            alarms += outcome == FAIL
            inconclusive += outcome == INCONCLUSIVE
    return alarms, inconclusive, judged


def test_replayed_noise_false_alarms_and_detection_stay_where_they_were_measured():
    # Figures of this replay with the current rules (BENCHMARKS.md): false alarms pp 3/169, tg 2/137; a 25%
    # slowdown caught in pp 166/169, tg 123/137; a halving in all. The Zen 3 recording has slow episodes of up to
    # seven minutes, longer than the confirmations span, which is what the misses and alarms are made of.
    limits = {"pp": (0.03, 0.80), "tg": (0.03, 0.85)}
    for metric, (max_alarms, min_caught) in limits.items():
        alarms, _, judged = replay(metric, 1.0)
        assert judged > 130 and alarms / judged <= max_alarms, (metric, alarms, judged)
        caught, _, judged = replay(metric, 0.75)
        assert caught / judged >= min_caught, (metric, caught, judged)
        caught, _, judged = replay(metric, 0.5)
        assert caught == judged, (metric, caught, judged)


def test_replayed_noise_without_confirmation_cries_wolf_more():
    alarms, _, judged = replay("tg", 1.0)
    without, _, judged_without = replay("tg", 1.0, attempts=1)
    assert without / judged_without > 3 * alarms / judged
