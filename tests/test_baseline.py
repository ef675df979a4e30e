"""The stored-baseline promise through the one confirm procedure, with a fake re-measurement (the real-model path
is in test_plugin_baselines)."""

import dataclasses

import pytest

from pytest_axion.errors import BaselineError
from pytest_axion.machine.hardware import HardwareFingerprint
from pytest_axion.machine.model import ModelFingerprint
from pytest_axion.promises.baseline import BaselinePromise
from pytest_axion.promises.confirm import confirm
from pytest_axion.records import Measurement
from pytest_axion.store.baselines import Baseline, BaselineEntry, baseline_path, write_baseline
from pytest_axion.store.gate import BaselineGate, GateSettings
from tests.test_baselines import HARDWARE, PROVENANCE

MODEL = ModelFingerprint(file_name="m.gguf", path="/m.gguf", sha256="a" * 64, architecture="llama",
                         quantization="Q4_1", n_params=1, size_bytes=1)
SETTINGS = GateSettings(estimator="median", default_tolerance=0.10)
STEADY = (0.99, 1.0, 1.01, 0.995, 1.005)


def measured(level, metric="prompt_tps", nodeid="t.py::test"):
    return Measurement(nodeid, metric, 1, 512, 0, 2, tuple(level * f for f in STEADY))


def store(root, level=100.0, hardware=None, model_sha="a" * 64, threads=2):
    m = measured(level)
    entry = BaselineEntry(nodeid=m.nodeid, metric=m.metric, batch_size=1, n_prompt=512, n_gen=0, threads=2,
                          unit="tokens/s", runs=tuple(tuple(level * g * f for f in STEADY) for g in (0.99, 1, 1.01)))
    provenance = {**PROVENANCE, "model": {**PROVENANCE["model"], "sha256": model_sha}, "threads": threads,
                  "hardware": (hardware or HARDWARE)}
    write_baseline(baseline_path(root, "hw-1", MODEL.label),
                   Baseline(hardware_id="hw-1", model_label=MODEL.label, provenance=provenance,
                            entries={m.key: entry}))


def gate(root, **overrides):
    hardware = HardwareFingerprint.from_json(HARDWARE)
    return BaselineGate(root, hardware=hardware, model=MODEL, threads=2,
                        settings=dataclasses.replace(SETTINGS, **overrides))


class Remeasure:
    """Hands out the next level for every re-measured measurement, and counts calls and their reasons."""

    def __init__(self, *levels):
        self.levels = list(levels)
        self.calls = 0
        self.reasons = []

    def __call__(self, pending, attempt, why):
        self.calls += 1
        self.reasons.append((attempt, why))
        level = self.levels.pop(0)
        return {m.key: measured(level, m.metric, m.nodeid) for m in pending}


def judge(g, measurements, *, tolerance=0.10, confirm_attempts=2, remeasure=None):
    return confirm("t.py::test", [BaselinePromise(g, tolerance)], measurements, attempts=1 + confirm_attempts,
                   measure_again=remeasure or Remeasure())


def test_no_baseline_file_gives_no_baseline_verdicts_shown_not_failed_unless_required(tmp_path):
    g = gate(tmp_path)
    assert not g.found and "pytest --axion-slo --axion-refresh-baselines" in g.missing_message()
    remeasure = Remeasure()
    [verdict] = judge(g, [measured(100)], remeasure=remeasure)
    assert verdict.outcome == "info" and remeasure.calls == 0 and "no-baseline: none for this hardware" in (
        verdict.message())
    [required] = confirm("t.py::test", [BaselinePromise(g, 0.1, require_baseline=True)], [measured(100)],
                         attempts=3, measure_again=remeasure)
    assert required.outcome == "fail" and remeasure.calls == 0 and "(--axion-require-baseline)" in required.message()


def test_steady_level_is_ok_without_remeasuring(tmp_path):
    store(tmp_path)
    g = gate(tmp_path)
    remeasure = Remeasure()
    [verdict] = judge(g, [measured(101)], remeasure=remeasure)
    assert verdict.outcome == "pass" and remeasure.calls == 0
    assert verdict.first.detail["baseline_runs"] == 3 and verdict.first.detail["word"] == "ok"
    assert g.differences == () and verdict.kind == "baseline"


def test_regression_is_confirmed_by_fresh_attempts_before_it_fails(tmp_path):
    store(tmp_path)
    g = gate(tmp_path)
    remeasure = Remeasure(51, 49)
    [verdict] = judge(g, [measured(50)], remeasure=remeasure)
    assert verdict.outcome == "fail" and remeasure.calls == 2
    assert [r.figure for r in verdict.readings] == ["0.50x", "0.51x", "0.49x"]
    message = verdict.message()
    assert message.startswith("fail: prompt_tps pp512: regressed: 50.0 tokens/s vs baseline 100.0 tokens/s "
                              "(median of 3")
    assert "attempts 0.50x, 0.51x, 0.49x" in message
    assert remeasure.reasons[0] == (2, "1 promise(s) not met (prompt_tps pp512 vs baseline: 0.50x)")


def test_a_transient_slowdown_passes_with_its_figures_and_stops_remeasuring(tmp_path):
    store(tmp_path)
    g = gate(tmp_path)
    remeasure = Remeasure(100, 100)
    [verdict] = judge(g, [measured(50)], remeasure=remeasure)
    assert verdict.outcome == "pass" and remeasure.calls == 1
    assert "attempts 0.50x, 1.00x; slower at first" in verdict.message()


def test_confirm_zero_fails_on_the_first_attempt_and_marker_tolerance_wins(tmp_path):
    store(tmp_path)
    g = gate(tmp_path)
    assert judge(g, [measured(50)], confirm_attempts=0)[0].outcome == "fail"
    assert judge(g, [measured(85)], tolerance=0.2, confirm_attempts=0)[0].outcome == "pass"
    assert judge(g, [measured(85)], confirm_attempts=0)[0].outcome == "fail"


def test_a_measurement_missing_from_the_baseline_is_no_baseline(tmp_path):
    store(tmp_path)
    g = gate(tmp_path)
    other = Measurement("t.py::other", "gen_tps", 1, 0, 128, 2, STEADY)
    verdicts = judge(g, [measured(100), other])
    assert [v.outcome for v in verdicts] == ["pass", "info"]
    assert verdicts[1].first.message == "gen_tps tg128: no-baseline: not in the stored baseline"


def test_what_differs_from_the_stored_fingerprint_is_named_next_to_a_slowdown(tmp_path):
    other_machine = {**HARDWARE, "microarch": "zen3",
                     "llama_cpp_system_info": {**HARDWARE["llama_cpp_system_info"], "AVX512": "1"}}
    store(tmp_path, hardware=other_machine, model_sha="b" * 64, threads=4)
    g = gate(tmp_path)
    assert "model sha256 bbbbbbbbbbbb -> aaaaaaaaaaaa" in g.differences and "threads 4 -> 2" in g.differences
    assert any(d.startswith("microarch zen3 -> ") for d in g.differences)
    assert "llama.cpp AVX512 1 -> absent" in g.differences
    [verdict] = judge(g, [measured(50)], confirm_attempts=0)
    assert "baseline differs: model sha256" in verdict.message()


def test_a_corrupt_baseline_is_an_error_naming_the_file_and_stays_untouched(tmp_path):
    path = baseline_path(tmp_path, "hw-1", MODEL.label)
    path.parent.mkdir(parents=True)
    path.write_text('{"schema_version": 1, "hardware_id": ')
    with pytest.raises(BaselineError, match=str(path)) as err:
        gate(tmp_path)
    assert "\n" not in str(err.value)
    assert path.read_text() == '{"schema_version": 1, "hardware_id": '


UNEVEN = (0.91, 1.0, 1.09, 0.95, 1.05)   # within-run spread 7%


@pytest.mark.parametrize("first, again", [
    (measured(88), (83, 83, 75)),                                                            # prompt_tps, issue 30
    (Measurement("t.py::test", "prompt_tps", 1, 512, 0, 2, tuple(81 * f for f in UNEVEN)), (79, 82, 90)),   # gen_tps
    (Measurement("t.py::test", "prompt_tps", 1, 512, 0, 2, tuple(81 * f for f in UNEVEN)), (79, 82, 89.5)),
])
def test_the_attempts_of_issue_30_through_the_gate_are_never_a_fail(tmp_path, first, again):
    store(tmp_path)
    remeasure = Remeasure(*again)
    [verdict] = judge(gate(tmp_path), [first], remeasure=remeasure)
    assert verdict.outcome in ("pass", "inconclusive"), verdict.message()
    assert "looked busy" not in verdict.message()


def test_a_confirming_attempt_is_judged_with_the_earlier_ones_and_a_steady_slowdown_fails(tmp_path):
    store(tmp_path)
    g = gate(tmp_path)
    [verdict] = judge(g, [measured(85)], remeasure=Remeasure(85, 85))
    assert verdict.outcome == "fail" and [r.figure for r in verdict.readings] == ["0.85x", "0.85x", "0.85x"]
    assert "all 3 attempts pooled: 85.0 tokens/s" in verdict.readings[-1].message
    assert [r.detail.get("pooled", {}).get("attempts") for r in verdict.readings] == [None, 2, 3]
    [disagreeing] = judge(g, [measured(88)], remeasure=Remeasure(83, 83))
    assert disagreeing.outcome == "inconclusive" and disagreeing.readings[-1].unsettled


def test_the_promise_counts_a_record_judged_again_unchanged_as_no_new_attempt(tmp_path):
    store(tmp_path)
    promise = BaselinePromise(gate(tmp_path), 0.10)
    slow, other = measured(80), measured(100, nodeid="t.py::other")
    promise.judge([slow, other])
    [again, _] = promise.judge([slow, other])   # nothing measured again: still one attempt each
    assert "pooled" not in again.reading.detail
    [fresh, _] = promise.judge([measured(81), other])
    assert fresh.reading.detail["pooled"]["attempts"] == 2


def test_uneven_samples_name_the_cpu_other_processes_were_measured_to_take(tmp_path):
    store(tmp_path)
    g = gate(tmp_path)
    uneven = Measurement("t.py::test", "prompt_tps", 1, 512, 0, 2, tuple(50 * f for f in UNEVEN))
    [unmeasured] = BaselinePromise(g, 0.1).judge([uneven])
    assert unmeasured.reading.busy == "within-run spread 7% vs 1% in the baseline, other processes' CPU not measured"
    [quiet] = BaselinePromise(g, 0.1).judge([dataclasses.replace(uneven, other_cpus=0.2)])   # measured, not contended
    assert quiet.reading.busy.endswith("other processes used 0.2 CPUs") and quiet.reading.other_cpus is None
    [seen] = BaselinePromise(g, 0.1).judge([dataclasses.replace(uneven, other_cpus=0.8)])
    assert seen.reading.busy.endswith("other processes used 0.8 CPUs") and seen.reading.other_cpus == 0.8
