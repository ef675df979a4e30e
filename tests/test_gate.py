"""The gate's procedure with a fake re-measurement (the real-model path is in test_plugin_baselines)."""

import dataclasses

import pytest

from pytest_axion.baselines import Baseline, BaselineEntry, baseline_path, write_baseline
from pytest_axion.errors import BaselineError
from pytest_axion.gate import BaselineGate, GateSettings
from pytest_axion.hardware import HardwareFingerprint
from pytest_axion.model import ModelFingerprint
from pytest_axion.records import Measurement
from tests.test_baselines import HARDWARE, PROVENANCE

MODEL = ModelFingerprint(file_name="m.gguf", path="/m.gguf", sha256="a" * 64, architecture="llama",
                         quantization="Q4_1", n_params=1, size_bytes=1)
SETTINGS = GateSettings(estimator="median", confirm=2, spacing_s=60.0, default_tolerance=0.10)
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
    sleeps = []
    hardware = HardwareFingerprint.from_json(HARDWARE)
    g = BaselineGate(root, hardware=hardware, model=MODEL, threads=2,
                     settings=dataclasses.replace(SETTINGS, **overrides), sleep=sleeps.append)
    return g, sleeps


class Remeasure:
    """Hands out the next level for every re-measured measurement, and counts calls."""

    def __init__(self, *levels):
        self.levels = list(levels)
        self.calls = 0

    def __call__(self, pending):
        self.calls += 1
        level = self.levels.pop(0)
        return {m.key: measured(level, m.metric, m.nodeid) for m in pending}


def test_no_baseline_file_gives_no_baseline_verdicts_and_the_record_command(tmp_path):
    g, _ = gate(tmp_path)
    assert not g.found and "pytest --axion-slo --axion-refresh-baselines" in g.missing_message()
    [verdict] = g.judge([measured(100)], tolerance=None, remeasure=Remeasure())
    assert verdict.verdict == "no-baseline" and verdict.attempts == ()


def test_steady_level_is_ok_without_remeasuring(tmp_path):
    store(tmp_path)
    g, sleeps = gate(tmp_path)
    remeasure = Remeasure()
    [verdict] = g.judge([measured(101)], tolerance=None, remeasure=remeasure)
    assert verdict.verdict == "ok" and remeasure.calls == 0 and sleeps == []
    assert verdict.baseline_runs == 3 and verdict.estimator == "median" and g.differences == ()


def test_regression_is_confirmed_by_spaced_fresh_attempts_before_it_fails(tmp_path):
    store(tmp_path)
    g, sleeps = gate(tmp_path)
    remeasure, waits = Remeasure(51, 49), []
    [verdict] = g.judge([measured(50)], tolerance=None, remeasure=remeasure, wait_message=waits.append)
    assert verdict.verdict == "regressed" and remeasure.calls == 2 and sleeps == [60.0, 60.0]
    assert [round(a.comparison.speedup, 2) for a in verdict.attempts] == [0.5, 0.51, 0.49]
    message = verdict.message()
    assert message.startswith("prompt_tps pp512: regressed: 50.0 tokens/s vs baseline 100.0 tokens/s (median of 3")
    assert "attempts 0.50x, 0.51x, 0.49x" in message and "attempt 2 of 3" in waits[0]


def test_a_transient_slowdown_is_inconclusive_and_stops_remeasuring(tmp_path):
    store(tmp_path)
    g, sleeps = gate(tmp_path)
    remeasure = Remeasure(100, 100)
    [verdict] = g.judge([measured(50)], tolerance=None, remeasure=remeasure)
    assert verdict.verdict == "inconclusive" and remeasure.calls == 1 and len(sleeps) == 1
    assert "0.50x, 1.00x" in verdict.message()


def test_confirm_zero_fails_on_the_first_attempt_and_marker_tolerance_wins(tmp_path):
    store(tmp_path)
    g, _ = gate(tmp_path, confirm=0)
    assert g.judge([measured(50)], tolerance=None, remeasure=Remeasure())[0].verdict == "regressed"
    assert g.judge([measured(85)], tolerance=0.2, remeasure=Remeasure())[0].verdict == "ok"
    assert g.judge([measured(85)], tolerance=None, remeasure=Remeasure())[0].verdict == "regressed"


def test_a_measurement_missing_from_the_baseline_is_no_baseline(tmp_path):
    store(tmp_path)
    g, _ = gate(tmp_path)
    other = Measurement("t.py::other", "gen_tps", 1, 0, 128, 2, STEADY)
    verdicts = g.judge([measured(100), other], tolerance=None, remeasure=Remeasure())
    assert [v.verdict for v in verdicts] == ["ok", "no-baseline"]
    assert verdicts[1].reason == "not in the stored baseline"


def test_what_differs_from_the_stored_fingerprint_is_named_next_to_the_verdict(tmp_path):
    other_machine = {**HARDWARE, "microarch": "zen3",
                     "llama_cpp_system_info": {**HARDWARE["llama_cpp_system_info"], "AVX512": "1"}}
    store(tmp_path, hardware=other_machine, model_sha="b" * 64, threads=4)
    g, _ = gate(tmp_path)
    assert "model sha256 bbbbbbbbbbbb -> aaaaaaaaaaaa" in g.differences and "threads 4 -> 2" in g.differences
    assert any(d.startswith("microarch zen3 -> ") for d in g.differences)
    assert "llama.cpp AVX512 1 -> absent" in g.differences
    [verdict] = g.judge([measured(100)], tolerance=None, remeasure=Remeasure())
    assert "baseline differs: model sha256" in verdict.message()


def test_a_corrupt_baseline_is_an_error_naming_the_file_and_stays_untouched(tmp_path):
    path = baseline_path(tmp_path, "hw-1", MODEL.label)
    path.parent.mkdir(parents=True)
    path.write_text('{"schema_version": 1, "hardware_id": ')
    with pytest.raises(BaselineError, match=str(path)) as err:
        gate(tmp_path)
    assert "\n" not in str(err.value)
    assert path.read_text() == '{"schema_version": 1, "hardware_id": '
