import dataclasses

import jsonschema
import pytest

from pytest_axion.hardware import collect_hardware
from pytest_axion.model import ModelFingerprint
from pytest_axion.reading import ReadingSpeed
from pytest_axion.records import Measurement
from pytest_axion.report import (
    RunRecord,
    build_report,
    capacity_lines,
    header_lines,
    measurement_table,
    shape_table,
    validate_report,
    write_report,
)
from pytest_axion.shape import ShapeVerdict, evaluate_shape
from pytest_axion.slo import evaluate_slos, parse_slo

READING = ReadingSpeed(5.0, "reading speed 5 t/s (default)")
MODEL = ModelFingerprint(file_name="m.gguf", path="/m.gguf", sha256="a" * 64, architecture="llama",
                         quantization="Q4_1", n_params=135_000_000, size_bytes=98_000_000)


def run_record():
    measurements = [Measurement("t.py::test_users", "per_user_tps", b, 128, 64, 2, (v, v * 1.1, v * 0.9))
                    for b, v in ((1, 20.0), (2, 9.0), (4, 4.0))]
    measurements.append(Measurement("t.py::test_users", "ttft_ms", 4, 128, 64, 2, (900.0, 950.0)))
    spec = parse_slo((), {"per_user_tps": "reading"}, where="t.py::test_users")
    outcome = evaluate_slos(spec, measurements, nodeid="t.py::test_users", reading=READING)
    return RunRecord(model=MODEL, hardware=collect_hardware(system_info="CPU : AVX2 = 1 | REPACK = 1 |"), threads=2,
                     repetitions=3, load_seconds=0.1, reading=READING, measurements=measurements,
                     outcomes={"t.py::test_users": outcome}, test_outcomes={"t.py::test_users": "failed"})


def test_report_validates_and_keeps_samples_and_verdicts():
    report = build_report(run_record())
    validate_report(report)
    rows = report["results"]
    assert [r["batch_size"] for r in rows[:3]] == [1, 2, 4]
    assert rows[2]["samples"] == [4.0, 4.4, 3.6] and rows[2]["median"] == 4.0
    assert rows[2]["slo"][0]["verdict"] == "FAIL" and "< 5.00 t/s" in rows[2]["slo"][0]["message"]
    assert report["tests"] == [{"nodeid": "t.py::test_users", "outcome": "failed", "capacity": 2,
                                "capacity_search": None, "slo_passed": False, "shape": []}]
    assert report["schema_version"] == 4 and report["ab"] is None and report["baseline"] is None
    assert rows[0]["baseline"] is None and rows[0]["ab"] is None
    assert report["model"]["sha256"] == "a" * 64 and report["hardware"]["llama_cpp_system_info"]["AVX2"] == "1"


@pytest.mark.parametrize("breakage", [
    lambda r: r["results"][0].update(metric="speed"),
    lambda r: r["results"][0].update(samples=[-1.0]),
    lambda r: r.pop("hardware"),
    lambda r: r.update(schema_version=99),
])
def test_schema_rejects_broken_reports(breakage):
    report = build_report(run_record())
    breakage(report)
    with pytest.raises(jsonschema.ValidationError):
        validate_report(report)


def test_table_shows_slo_and_verdict_and_capacity_is_summarised():
    run = run_record()
    table = measurement_table(run.measurements, run.outcomes)
    assert "test_users" in table and ">= 5.00 t/s (reading)" in table and "FAIL" in table
    assert capacity_lines(run.outcomes) == [
        "capacity t.py::test_users: 2 concurrent user(s) at reading speed 5 t/s (default) "
        "(measured batch sizes 1, 2, 4)"]
    assert any("reading speed 5 t/s" in line for line in header_lines(run))


def test_unwritable_report_path_is_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Exception) as err:
        write_report(blocker / "r.json", run_record())
    assert "cannot write the report" in str(err.value) and "\n" not in str(err.value)


def judged_record():
    from dataclasses import replace

    from pytest_axion.report import BaselineStatus
    from pytest_axion.verdicts import Attempt, BaselineVerdict, Side, compare

    run = run_record()
    first = run.measurements[0]
    comparison = compare(Side(((20.0, 20.5, 19.5), (19.0, 19.4), (21.0,))), Side((first.samples,)),
                         higher_is_better=True)
    verdict = BaselineVerdict(key=first.key, label="per_user_tps pp128+tg64", metric=first.metric, unit=first.unit,
                              estimator="median", tolerance=0.1, verdict=comparison.verdict, reason="",
                              attempts=(Attempt(comparison, None, first.samples),), baseline_runs=3)
    status = BaselineStatus(path="baselines/hw/m.json", found=True, estimator="median", tolerance=0.1, confirm=2,
                            runs=3, recorded_at="2026-11-25T00:00:00+00:00", llama_cpp_python="0.3.36",
                            git_commit="abc", differences=("threads 4 -> 2",))
    return replace(run, baseline=status, baseline_verdicts={first.key: verdict})


def test_baseline_columns_header_and_report_fields():
    run = judged_record()
    table = measurement_table(run.measurements, run.outcomes, run.baseline_verdicts)
    assert "speedup [95% CI]" in table and "vs baseline" in table and "1.00x [" in table
    lines = header_lines(run)
    assert any(line.startswith("baseline: baselines/hw/m.json (3 run(s) per entry") and "estimator median" in line
               for line in lines)
    assert "baseline differs from this run: threads 4 -> 2" in lines
    report = build_report(run)
    validate_report(report)
    judged = report["results"][0]["baseline"]
    assert judged["verdict"] == "ok" and judged["attempts"][0]["interval"][0] < 1 < judged["attempts"][0]["interval"][1]
    assert report["baseline"]["differences"] == ["threads 4 -> 2"] and report["results"][1]["baseline"] is None


def test_a_version_1_report_still_validates():
    report = build_report(run_record())
    report["schema_version"] = 1
    del report["baseline"]
    for row in report["results"]:
        del row["baseline"]
    validate_report(report)


def test_a_version_2_report_without_shape_verdicts_still_validates():
    report = build_report(run_record())
    report["schema_version"] = 2
    for test in report["tests"]:
        del test["shape"]
    validate_report(report)


def scaling_run():
    cells = [Measurement("t.py::test_batch", "gen_tps", b, 8, 16, 2, (v, v, v))
             for b, v in ((1, 40.0), (2, 60.0), (4, 52.0))]
    first = evaluate_shape(cells, steady_within=None, gen_scaling=1.5)
    again = evaluate_shape([*cells[:2], Measurement("t.py::test_batch", "gen_tps", 4, 8, 16, 2, (70.0,) * 3)],
                           steady_within=None, gen_scaling=1.5)
    verdict = ShapeVerdict("t.py::test_batch", (first[0], again[0]))
    return cells, verdict


def test_shape_verdicts_reach_the_report_and_their_table_with_every_attempt():
    cells, verdict = scaling_run()
    record = run_record()
    record = RunRecord(**{**record.__dict__, "measurements": [*record.measurements, *cells],
                          "shape_verdicts": {"t.py::test_batch": [verdict]}})
    report = build_report(record)
    validate_report(report)
    shape = next(t for t in report["tests"] if t["nodeid"] == "t.py::test_batch")["shape"]
    assert shape[0]["verdict"] == "inconclusive" and [a["passed"] for a in shape[0]["attempts"]] == [False, True]
    assert [c["cell"] for c in shape[0]["curve"]] == ["batch 1", "batch 2", "batch 4"]
    table = shape_table(record.shape_verdicts)
    assert "gen_tps pp8+tg16" in table and "scales >= 1.5x" in table and "1.30x" in table
    assert "inconclusive" in table and "batch 1: 40.0, batch 2: 60.0, batch 4: 52.0" in table
    assert shape_table({}) == ""


def test_environment_warnings_are_in_the_header_and_the_report():
    record = dataclasses.replace(run_record(), environment=("load average 3.2 is above the 2 logical CPUs: x",))
    assert "environment: load average 3.2 is above the 2 logical CPUs: x" in header_lines(record)
    report = build_report(record)
    validate_report(report)
    assert report["environment_warnings"] == ["load average 3.2 is above the 2 logical CPUs: x"]
    assert build_report(run_record())["environment_warnings"] == []
