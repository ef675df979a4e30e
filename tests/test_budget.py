"""A test's measuring bounded by time (--axion-budget): the cell's stop rule, the clock, and confirmations that do
not fit; on the real model, a slow cell stops at three repetitions and an unaffordable confirmation is not made."""

import json

from pytest_axion.budget import CELLS_PER_BUDGET, MIN_REPETITIONS, MeasuringClock, cell_seconds
from pytest_axion.engines.llama import MIN_REPETITIONS as WORKER_MIN_REPETITIONS
from pytest_axion.engines.llama import enough_repetitions
from pytest_axion.promises.confirm import confirm
from pytest_axion.promises.thresholds import Bound

from .test_confirm import NODE, Machine, cell


def test_a_cell_gets_its_repetitions_unless_one_more_would_pass_its_share_and_never_fewer_than_three():
    assert WORKER_MIN_REPETITIONS == MIN_REPETITIONS == 3   # the worker imports nothing of ours: its own copy
    assert cell_seconds(120.0) == 120.0 / CELLS_PER_BUDGET and cell_seconds(0.0) is None
    fast = [0.1] * 4
    assert not enough_repetitions(fast, 5, 15.0) and enough_repetitions([*fast, 0.1], 5, 15.0)
    assert not enough_repetitions([6.0, 6.0], 5, 15.0)        # below three: always one more
    assert enough_repetitions([6.0, 6.0, 6.0], 5, 15.0)       # a fourth would take the cell to 24 s > 15 s
    assert not enough_repetitions([3.5] * 3, 5, 15.0)         # a fourth fits: 14 s
    assert enough_repetitions([3.5] * 4, 5, 15.0)             # a fifth would not: 17.5 s
    assert not enough_repetitions([60.0] * 4, 5, None)        # no budget: the repetitions asked for
    assert enough_repetitions([0.1], 1, 15.0)                 # fewer than three asked for: as asked


def test_the_clock_says_why_a_test_cannot_measure_its_suspects_again_within_its_budget():
    clock = MeasuringClock(budget_s=120.0)
    clock.add("t::a", ("t::a", "pp512"), 50.0)
    clock.add("t::a", ("t::a", "tg128"), 20.0)
    clock.add("t::b", ("t::b", "pp512"), 500.0)
    assert clock.spent_s("t::a") == 70.0 and clock.again_s([("t::a", "pp512"), ("t::a", "pp512")]) == 50.0
    assert clock.shortfall("t::a", [("t::a", "pp512")]) is None                    # 70 + 50 <= 120
    why = clock.shortfall("t::a", [("t::a", "pp512"), ("t::a", "tg128")])          # 70 + 70 > 120
    assert why == ("measuring it again would take about 70 s on top of the 70 s this test measured, beyond its "
                   "budget of 120 s (--axion-budget; 0 turns it off)")
    assert MeasuringClock(budget_s=0.0).shortfall("t::b", [("t::b", "pp512")]) is None   # no budget
    # a pause waiting for other processes to finish counts: 70 + 40 + 50 > 120, where 70 + 50 fitted
    waiting = clock.shortfall("t::a", [("t::a", "pp512")], waiting_s=40.0)
    assert waiting == ("waiting 40 s for other processes to finish and then measuring it again would take about 90 s "
                       "on top of the 70 s this test measured, beyond its budget of 120 s (--axion-budget; 0 turns "
                       "it off)")
    assert clock.shortfall("t::a", [("t::a", "pp512")], waiting_s=0.0) is None
    clock.wait("t::a", 10.0)   # a pause waited so far counts too: 70 + 10 + 50 > 120
    assert clock.shortfall("t::a", [("t::a", "pp512")]) == (
        "measuring it again would take about 50 s on top of the 70 s this test measured (and the 10 s it waited for "
        "other processes), beyond its budget of 120 s (--axion-budget; 0 turns it off)")


def test_a_miss_the_budget_leaves_unconfirmed_is_inconclusive_and_one_confirmed_once_still_fails():
    bound = Bound("prompt_tps", "prompt_tps", 300.0, nodeid=NODE)
    never = Machine()
    [verdict] = confirm(NODE, [bound], [cell("prompt_tps", 1, 150.0)], attempts=3, measure_again=never,
                        why_not_again=lambda suspects: "over budget")
    assert never.calls == [] and verdict.outcome == "inconclusive"
    assert verdict.reason == ("beyond the limit in every attempt made (150.0 t/s), not confirmed: over budget; a miss "
                              "is confirmed in a fresh attempt before it fails")
    once = Machine({1: 151.0})
    affordable = iter([None, "over budget"])
    [verdict] = confirm(NODE, [bound], [cell("prompt_tps", 1, 150.0)], attempts=3, measure_again=once,
                        why_not_again=lambda suspects: next(affordable))
    assert len(once.calls) == 1 and verdict.outcome == "fail"   # two clear misses: what --axion-confirm 2 needs
    met = Machine({1: 330.0})
    [verdict] = confirm(NODE, [bound], [cell("prompt_tps", 1, 320.0)], attempts=3, measure_again=met,
                        why_not_again=lambda suspects: "over budget")
    assert verdict.outcome == "pass" and met.calls == []        # nothing to confirm: the budget is not asked


BUDGETED = """
import pytest

@pytest.mark.axion_slo(prompt_tps=1e9)
def test_slow_cell(axion):
    m = axion.prompt(256)
    assert len(m.samples) == {reps}
"""


def test_on_the_real_model_a_slow_cell_stops_at_three_and_an_unaffordable_confirmation_is_not_made(pytester,
                                                                                                  contention_ignored):
    # A 0.4 s budget gives each cell 0.05 s: a 256-token prompt takes longer than that per repetition on any machine
    # these run on, so the cell stops at three, and measuring it again would pass the budget: no pause, no attempt.
    pytester.makepyfile(BUDGETED.format(reps=3))
    result = pytester.runpytest("--axion-slo", "--axion-threads=1", "--axion-budget=0.4", "--axion-no-baselines",
                                "--axion-efficiency=off", "--axion-report=r.json")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*after a * s pause, in a fresh worker*")
    [verdict] = json.loads((pytester.path / "r.json").read_text())["verdicts"]
    assert verdict["outcome"] == "inconclusive" and len(verdict["readings"]) == 1
    assert "not confirmed: measuring it again would take about" in verdict["reason"]
    assert "beyond its budget of 0.4 s (--axion-budget; 0 turns it off)" in verdict["reason"]
