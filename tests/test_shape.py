import dataclasses
import json
from pathlib import Path

import pytest

from pytest_axion.errors import SettingsError
from pytest_axion.machine.sizing import prompt_fill_tokens
from pytest_axion.promises.confirm import confirm
from pytest_axion.promises.shape import ShapePromise, SteadyLimits, evaluate_shape, scaling_checks, steadiness_checks
from pytest_axion.promises.verdict import FAIL, INCONCLUSIVE, PASS
from pytest_axion.records import Measurement

CALM = (0.99, 1.0, 1.01, 0.995, 1.005)


def cell(metric, batch, pp, tg, level, spread=CALM):
    return Measurement("t.py::x", metric, batch, pp, tg, 2, tuple(level * f for f in spread))


def prompt_cells(*levels):
    sizes = [(b, pp) for pp in (128, 2048) for b in (1, 2)]
    return [cell("prompt_tps", b, pp, 1, level) for (b, pp), level in zip(sizes, levels, strict=True)]


def test_steady_prompt_speed_passes_and_names_the_extremes():
    [check] = steadiness_checks(prompt_cells(280, 285, 275, 288), SteadyLimits.both(0.15))
    assert check.passed and check.observed == pytest.approx((288 - 275) / 282.5)
    assert check.message.startswith("prompt_tps steady: 275.0 t/s at pp 2048 batch 1 vs 288.0 t/s at pp 2048 batch 2")


def test_unsteady_prompt_speed_reads_like_the_issue():
    [check] = steadiness_checks(prompt_cells(288, 286, 212, 283), SteadyLimits.both(0.15))
    assert not check.passed
    assert check.message == ("prompt_tps not steady: 212.0 t/s at pp 2048 batch 1 vs 288.0 t/s at pp 128 batch 1 "
                             "(spread 27% > 15%)")
    assert set(check.involved) == {c.key for c in prompt_cells(288, 286, 212, 283)}


def test_generation_steadiness_is_per_batch_across_lengths():
    cells = [cell("gen_tps", 1, 8, 16, 150), cell("gen_tps", 1, 8, 64, 140),
             cell("gen_tps", 4, 8, 16, 260), cell("gen_tps", 4, 8, 64, 160)]
    checks = steadiness_checks(cells, SteadyLimits.both(0.15))
    assert [(c.group, c.passed) for c in checks] == [("gen_tps at batch 1", True), ("gen_tps at batch 4", False)]
    assert "160.0 t/s at tg 64 vs 260.0 t/s at tg 16" in checks[1].message


def test_steadiness_without_enough_cells_is_a_usage_error():
    with pytest.raises(SettingsError, match="steady_within needs at least two"):
        steadiness_checks([cell("prompt_tps", 1, 128, 0, 100)], SteadyLimits.both(0.1))


def generation_run(prompt_levels):
    """A generation test: pp8 at batch 1, 2, 4 (prompt speed rising with the batch) at two lengths."""
    return [c for tg in (16, 64) for b, level in zip((1, 2, 4), prompt_levels, strict=True)
            for c in (cell("prompt_tps", b, 8, tg, level), cell("gen_tps", b, 8, tg, 100 + 20 * b))]


def test_named_speeds_limit_steadiness_to_them():
    run = generation_run((226, 280, 303))
    both = steadiness_checks(run, SteadyLimits.both(0.25))
    assert (both[0].group, both[0].passed) == ("prompt_tps", False)
    named = steadiness_checks(run, SteadyLimits(prompt_tps=None, gen_tps=0.25, named=True))
    assert [c.group for c in named] == ["gen_tps at batch 1", "gen_tps at batch 2", "gen_tps at batch 4"]
    assert all(c.passed for c in named)
    assert [c.group for c in steadiness_checks(run, SteadyLimits(prompt_tps=0.4, gen_tps=None, named=True))] \
        == ["prompt_tps"]


def test_a_named_speed_the_test_cannot_show_is_a_usage_error():
    prompt_only = prompt_cells(280, 285, 275, 288)
    assert len(steadiness_checks(prompt_only, SteadyLimits.both(0.15))) == 1   # a plain number checks what exists
    with pytest.raises(SettingsError, match="steady_within for gen_tps needs gen_tps at two generation lengths"):
        steadiness_checks(prompt_only, SteadyLimits(prompt_tps=None, gen_tps=0.15, named=True))
    with pytest.raises(SettingsError, match="steady_within for prompt_tps needs at least two prompt_tps cells"):
        steadiness_checks([cell("prompt_tps", 1, 128, 0, 100)], SteadyLimits(prompt_tps=0.1, gen_tps=None, named=True))


def scaling(*levels, spread=CALM):
    return [cell("gen_tps", b, 8, 16, level, spread) for b, level in zip((1, 2, 4), levels, strict=False)]


def test_scaling_passes_with_the_curve_and_fails_below_the_factor():
    [ok] = scaling_checks(scaling(155, 190, 265), 1.5)
    assert ok.passed and ok.observed == pytest.approx(265 / 155)
    assert ok.curve == (("batch 1", 155.0), ("batch 2", 190.0), ("batch 4", 265.0))
    [miss] = scaling_checks(scaling(155, 190, 265), 100)
    assert not miss.passed and miss.message.startswith("gen_tps does not scale: 265.0 t/s at batch 4 is 1.71x batch 1")


def test_a_fall_beyond_noise_fails_but_a_dip_within_noise_does_not():
    [fall] = scaling_checks(scaling(155, 240, 200), 1.2)
    assert not fall.passed and "240.0 t/s at batch 2 -> 200.0 t/s at batch 4" in fall.message
    # a steady dip of 7% at batch 2, as a small model's kernel path on a Zen 5 VM shows: not users costing throughput
    [kernel_dip] = scaling_checks(scaling(154, 143, 199), 1.2)
    assert kernel_dip.passed
    noisy = (0.7, 1.0, 1.3, 0.8, 1.2)
    [dip] = scaling_checks(scaling(155, 240, 232, spread=noisy), 1.2)
    assert dip.passed


def test_scaling_needs_batch_one_and_a_larger_batch():
    with pytest.raises(SettingsError, match="gen_scaling needs gen_tps at batch 1"):
        scaling_checks([cell("gen_tps", 2, 8, 16, 100), cell("gen_tps", 4, 8, 16, 120)], 1.5)


def test_evaluate_names_each_check():
    cells = scaling(155, 190, 265)
    assert [c.key for c in evaluate_shape(cells, steady_within=None, gen_scaling=1.5)] == ["gen_scaling"]


def confirming(levels_per_attempt):
    """A re-measurer that returns the next attempt's levels for the cells it is asked about."""
    calls = []

    def measure_again(cells, attempt, why):
        calls.append(sorted(c.key for c in cells))
        levels = levels_per_attempt[len(calls) - 1]
        return {c.key: cell(c.metric, c.batch_size, c.n_prompt, c.n_gen, levels[c.batch_size]) for c in cells}
    return measure_again, calls


def scaling_verdicts(cells, attempts, measure_again, factor=1.5):
    return confirm("t", [ShapePromise(None, factor)], cells, attempts=attempts, measure_again=measure_again)


def test_a_cell_slowed_once_is_measured_again_and_does_not_fail_alone():
    # batch 4 caught by a slow spell (150 instead of ~265): measured again, it scales
    measure_again, calls = confirming([{1: 155, 2: 200, 4: 260}])
    [verdict] = scaling_verdicts(scaling(155, 190, 150), 3, measure_again)
    assert verdict.outcome == PASS and [r.status for r in verdict.readings] == ["missed", "met"]
    assert verdict.kind == "scaling" and "a slow spell of the machine, not the build" in verdict.message()
    assert calls == [sorted(c.key for c in scaling(155, 190, 150))]  # the whole curve, not just its ends


def test_a_miss_that_persists_through_every_attempt_fails():
    measure_again, calls = confirming([{1: 156, 2: 170, 4: 180}, {1: 154, 2: 171, 4: 178}])
    [verdict] = scaling_verdicts(scaling(155, 190, 181), 3, measure_again)
    assert verdict.outcome == FAIL and len(calls) == 2 and "missed in every attempt" in verdict.message()
    assert [r.figure for r in verdict.readings] == ["1.17x", "1.15x", "1.16x"]


def test_a_pass_is_not_measured_again_and_one_attempt_means_no_confirmation():
    measure_again, calls = confirming([])
    verdicts = scaling_verdicts(scaling(155, 190, 265), 3, measure_again)
    assert [v.outcome for v in verdicts] == [PASS] and calls == []
    [alone] = scaling_verdicts(scaling(155, 190, 181), 1, measure_again)
    assert alone.outcome == FAIL and calls == []


# The reference suite as a 16-core Xeon measured it (shared/many-core): every cell's samples.
MANY_CORE = Path(__file__).parent / "data" / "many-core" / "reference-suite-16t-report.json"


def many_core_prompt_cells(test=None):
    rows = json.loads(MANY_CORE.read_text())["results"]
    return [Measurement.from_json(row) for row in rows
            if row["metric"] == "prompt_tps" and (test is None or row["nodeid"].endswith(test))]


def test_a_machine_not_yet_saturated_is_told_apart_from_an_unsteady_build():
    [check] = steadiness_checks(many_core_prompt_cells("test_prompt_encoding"), SteadyLimits.both(0.25))
    assert not check.passed and check.levels_off_at == 512
    assert check.message == (
        "prompt_tps not steady: prompt speed still rising with tokens per batch: 1778.5 t/s at 32 -> 6256.6 t/s at "
        "512; below about 512 tokens this machine is not saturated (spread 124% > 25%; size prompts x users to at "
        "least 32 tokens per thread)")


def test_the_sizing_rule_applied_to_the_16_core_figures_keeps_the_promise():
    # Every prompt cell of the 16-core run with at least prompt_fill_tokens(16) = 512 tokens per call.
    filled = [m for m in many_core_prompt_cells() if m.n_prompt * m.batch_size >= prompt_fill_tokens(16)]
    assert len(filled) == 3
    [check] = steadiness_checks(filled, SteadyLimits(prompt_tps=0.25, gen_tps=None, named=True))
    assert check.passed, check.message


def test_an_uneven_build_gets_no_saturation_excuse():
    cells = prompt_cells(330, 340, 165, 335)   # one cell at half speed amid level ones: not a climb
    [check] = steadiness_checks(cells, SteadyLimits.both(0.25))
    assert not check.passed and "still rising" not in check.message and "not steady: 165.0 t/s" in check.message


def test_a_miss_measured_while_other_processes_competed_is_inconclusive():
    def attempt(other_cpus):
        return [dataclasses.replace(m, other_cpus=other_cpus) for m in prompt_cells(330, 160, 335, 340)]

    def remeasured(*others):
        def measure_again(cells, number, why):
            return {m.key: m for m in attempt(others[number - 2])}
        return measure_again

    steady = ShapePromise(SteadyLimits.both(0.25), None)
    [contended] = confirm("t.py::x", [steady], attempt(1.0), attempts=3, measure_again=remeasured(0.9, 1.2))
    assert contended.outcome == INCONCLUSIVE and contended.first.other_cpus == 1.0
    assert contended.message().endswith("every attempt was measured while other processes used up to 1.2 CPU(s): "
                                        "the figures describe them, not the build; measure where nothing else "
                                        "competes")
    [once_quiet] = confirm("t.py::x", [steady], attempt(1.0), attempts=3, measure_again=remeasured(0.1, None))
    assert once_quiet.outcome == FAIL   # a miss on a quiet machine is evidence


def steadiness_over_attempts(*attempts_levels):
    """The steadiness verdict of prompt cells measured in several attempts (each attempt's four levels)."""
    attempts = [prompt_cells(*levels) for levels in attempts_levels]

    def measure_again(suspects, attempt, why):
        return {m.key: m for m in attempts[attempt - 1]}

    [verdict] = confirm("t.py::x", [ShapePromise(SteadyLimits.both(0.25), None)], attempts[0],
                        attempts=len(attempts), measure_again=measure_again)
    return verdict


def test_misses_whose_slowest_cell_moves_from_attempt_to_attempt_are_noise_and_inconclusive():
    # this machine's noise, as the reference suite met it: another cell slowest each time
    verdict = steadiness_over_attempts((280, 200, 285, 290), (200, 285, 280, 290), (285, 280, 290, 200))
    assert verdict.outcome == INCONCLUSIVE and [r.status for r in verdict.readings] == ["missed"] * 3
    assert ("the slowest cell changed from attempt to attempt (pp 128 batch 2, then pp 128 batch 1, then pp 2048 "
            "batch 2), and each cell's median over the attempts spreads 4%, within 25%") in verdict.message()


def test_a_cell_slow_in_every_attempt_still_fails():
    verdict = steadiness_over_attempts((280, 200, 285, 290), (285, 195, 280, 290), (290, 205, 285, 280))
    assert verdict.outcome == FAIL


def test_misses_that_move_but_stay_unsteady_pooled_still_fail():
    # an impossible limit, or a build whose cells differ: pooled over the attempts still beyond the limit
    verdict = steadiness_over_attempts((280, 150, 285, 290), (150, 285, 160, 290), (285, 280, 150, 155))
    assert verdict.outcome == FAIL
