"""The one confirm-before-fail procedure: every kind of promise, one pause per attempt, one vocabulary."""

import dataclasses

import pytest

from pytest_axion.promises.confirm import AttemptNotMade, confirm, pause_before
from pytest_axion.promises.marker import PromiseContext, parse_slo, promises_for
from pytest_axion.promises.shape import ShapePromise, SteadyLimits
from pytest_axion.promises.thresholds import Bound
from pytest_axion.records import Measurement

NODE = "t.py::test"
CALM = (0.99, 1.0, 1.01, 0.995, 1.005)


def cell(metric, batch, level, other_cpus=None, pp=64, tg=0):
    return Measurement(NODE, metric, batch, pp, tg, 2, tuple(level * f for f in CALM), other_cpus=other_cpus)


class Machine:
    """Measures again at the levels given per attempt, and records each call (one per attempt)."""

    def __init__(self, *attempts):
        self.attempts = list(attempts)
        self.calls = []

    def __call__(self, suspects, attempt, why):
        self.calls.append((attempt, sorted(m.key for m in suspects), why))
        levels = self.attempts.pop(0)
        return {m.key: dataclasses.replace(cell(m.metric, m.batch_size, levels[m.batch_size], pp=m.n_prompt,
                                                tg=m.n_gen), other_cpus=levels.get("other_cpus"))
                for m in suspects}


def test_an_absolute_slo_missed_in_a_slow_spell_is_inconclusive_and_a_persistent_miss_fails():
    bound = Bound("prompt_tps", "prompt_tps", 300.0, nodeid=NODE)
    spell = [cell("prompt_tps", 1, 150.0, other_cpus=1.2)]          # contention in the first attempt only
    quiet = Machine({1: 330.0})
    [verdict] = confirm(NODE, [bound], spell, attempts=3, measure_again=quiet)
    assert verdict.outcome == "inconclusive" and [r.status for r in verdict.readings] == ["missed", "met"]
    assert verdict.first.other_cpus == 1.2 and "attempts disagree" in verdict.reason
    persistent = Machine({1: 151.0}, {1: 149.0})
    [verdict] = confirm(NODE, [bound], [cell("prompt_tps", 1, 150.0)], attempts=3, measure_again=persistent)
    assert verdict.outcome == "fail" and len(persistent.calls) == 2
    assert verdict.message() == ("fail: prompt_tps at batch 1 (pp64): 150.0 t/s < 300.0 t/s (median of 5); attempts "
                                 "150.0 t/s, 151.0 t/s, 149.0 t/s; missed in every attempt")


def test_suspects_of_every_kind_share_one_pause_and_one_measurement_per_workload():
    spec = parse_slo((), {"prompt_tps": 300, "steady_within": {"prompt_tps": 0.1}}, where=NODE)
    promises = promises_for(spec, PromiseContext(NODE, reading=lambda: None))
    assert [type(p).__name__ for p in promises] == ["Bound", "ShapePromise"]
    measured = [cell("prompt_tps", 1, 330.0), cell("prompt_tps", 2, 250.0)]   # batch 2 slow: both kinds suspect
    machine = Machine({1: 331.0, 2: 333.0})
    verdicts = confirm(NODE, promises, measured, attempts=3, measure_again=machine)
    assert len(machine.calls) == 1   # one attempt for both kinds, each workload measured once
    attempt, keys, why = machine.calls[0]
    assert attempt == 2 and keys == sorted(m.key for m in measured)
    assert why == ("2 promise(s) not met (prompt_tps at batch 2: 250.0 t/s; prompt_tps: spread 28%)")
    assert [v.outcome for v in verdicts] == ["pass", "pass", "pass"]   # batch 2 met both promises when fresh
    assert [len(v.readings) for v in verdicts] == [1, 2, 2]


def test_a_promise_met_first_is_never_measured_again_and_verdicts_keep_their_order():
    shape = ShapePromise(SteadyLimits.both(0.5), None)
    bound = Bound("prompt_tps", "prompt_tps", 100.0, nodeid=NODE)
    machine = Machine()
    verdicts = confirm(NODE, [bound, shape], [cell("prompt_tps", 1, 330.0), cell("prompt_tps", 2, 320.0)],
                       attempts=3, measure_again=machine)
    assert machine.calls == [] and [v.outcome for v in verdicts] == ["pass", "pass", "pass"]
    assert [v.kind for v in verdicts] == ["threshold", "threshold", "steady"]


def test_the_pauses_before_confirming_attempts_double_so_that_the_attempts_span_a_slow_spell():
    assert [pause_before(attempt, 60.0) for attempt in (2, 3, 4)] == [60.0, 120.0, 240.0]
    assert pause_before(2, 0.0) == 0.0 and pause_before(3, 15.0) == 30.0
    with pytest.raises(ValueError):
        pause_before(1, 60.0)


def test_an_attempt_not_made_after_its_pause_leaves_the_contended_miss_inconclusive_saying_why():
    bound = Bound("prompt_tps", "prompt_tps", 300.0, nodeid=NODE)
    busy = [cell("prompt_tps", 1, 150.0, other_cpus=1.0)]
    calls = []

    def still_busy(suspects, attempt, why):
        calls.append(attempt)
        raise AttemptNotMade("other processes still used 1.0 CPU(s) at the end of a 60 s pause, so ...")

    [verdict] = confirm(NODE, [bound], busy, attempts=3, measure_again=still_busy)
    assert calls == [2]                      # asked once; no attempt after the one not made
    assert verdict.outcome == "inconclusive" and len(verdict.readings) == 1
    assert "every attempt was measured while other processes used up to 1.0 CPU(s)" in verdict.reason
    assert "not measured again: other processes still used 1.0 CPU(s) at the end of a 60 s pause" in verdict.reason
