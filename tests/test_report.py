import dataclasses

import jsonschema
import pytest

from pytest_axion.machine.hardware import collect_hardware
from pytest_axion.machine.model import ModelFingerprint
from pytest_axion.promises.confirm import confirm
from pytest_axion.promises.marker import PromiseContext, parse_slo, promises_for
from pytest_axion.promises.reading import ReadingSpeed
from pytest_axion.promises.shape import ShapePromise
from pytest_axion.records import Measurement
from pytest_axion.report.json_report import build_report, write_report
from pytest_axion.report.junit import junit_properties
from pytest_axion.report.record import RunRecord
from pytest_axion.report.terminal import capacity_lines, header_lines, measurement_table, promise_table, search_line
from pytest_axion.schemas import validate_report

READING = ReadingSpeed(5.0, "reading speed 5 t/s (default)")
MODEL = ModelFingerprint(file_name="m.gguf", path="/m.gguf", sha256="a" * 64, architecture="llama",
                         quantization="Q4_1", n_params=135_000_000, size_bytes=98_000_000)


def run_record():
    measurements = [Measurement("t.py::test_users", "per_user_tps", b, 128, 64, 2, (v, v * 1.1, v * 0.9))
                    for b, v in ((1, 20.0), (2, 9.0), (4, 4.0))]
    measurements.append(Measurement("t.py::test_users", "ttft_ms", 4, 128, 64, 2, (900.0, 950.0)))
    spec = parse_slo((), {"per_user_tps": "reading"}, where="t.py::test_users")
    promises = promises_for(spec, PromiseContext("t.py::test_users", reading=lambda: READING))
    verdicts = confirm("t.py::test_users", promises, measurements, attempts=1, measure_again=None)
    return RunRecord(model=MODEL, hardware=collect_hardware(system_info="CPU : AVX2 = 1 | REPACK = 1 |"), threads=2,
                     repetitions=3, load_seconds=0.1, reading=READING, measurements=measurements,
                     verdicts=verdicts, test_outcomes={"t.py::test_users": "failed"})


def test_report_validates_and_keeps_samples_and_verdicts():
    report = build_report(run_record())
    validate_report(report)
    rows = report["results"]
    assert [r["batch_size"] for r in rows[:3]] == [1, 2, 4]
    assert rows[2]["samples"] == [4.0, 4.4, 3.6] and rows[2]["median"] == 4.0
    assert rows[2]["verdicts"] == ["axion.threshold.per_user_tps.b4.pp128.tg64"] and rows[3]["verdicts"] == []
    failed = report["verdicts"][2]
    assert failed["outcome"] == "fail" and "< 5.00 t/s" in failed["message"] and failed["kind"] == "threshold"
    assert failed["readings"][0]["status"] == "missed" and failed["readings"][0]["detail"]["batch_size"] == 4
    assert report["tests"] == [{"nodeid": "t.py::test_users", "outcome": "failed", "capacity": 2,
                                "capacity_search": None, "rate_levels": [], "slo_passed": False}]
    assert report["schema_version"] == 11 and report["ab"] is None and report["baseline"] is None
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
    table = measurement_table(run.measurements, run.verdicts)
    assert "test_users" in table and ">= 5.00 t/s (reading)" in table and " fail" in table
    assert capacity_lines(run) == [
        "capacity t.py::test_users: 2 concurrent user(s) at reading speed 5 t/s (default) "
        "(measured batch sizes 1, 2, 4)"]
    assert any("reading speed 5 t/s" in line for line in header_lines(run))


def capacity_search(*statuses: tuple[int, str], ended: str = "promise", stopped: str = ""):
    from pytest_axion.records import CapacityLevel, CapacitySearch
    levels = tuple(CapacityLevel(users=u, requests=40, meeting={"met": 40, "missed": 10, "inconclusive": 36}[st],
                                 low=0.5, high=0.95, status=st, attempts=2 if st == "inconclusive" else 1,
                                 worst="" if st == "met" else "TTFT p90 2.9 s > 2 s",
                                 figures=(("per_user_tps", 9.0), ("ttft_ms", 2900.0 if st != "met" else 900.0)))
                   for u, st in statuses)
    return CapacitySearch("t.py::test_users", 16, 16, "per-user speed >= reading speed 5 t/s (default), TTFT <= 2 s",
                          0.9, levels, ended, stopped)


def test_a_search_is_shown_as_its_bracket_with_the_promise_that_ended_it_and_validates():
    run = run_record()
    search = capacity_search((1, "met"), (2, "met"), (4, "met"), (8, "missed"), (6, "met"), (7, "met"))
    run = dataclasses.replace(run, capacity_searches={"t.py::test_users": search})
    assert run.capacities["t.py::test_users"] == 7
    assert capacity_lines(run) == [
        "capacity t.py::test_users: 7 concurrent user(s) with 90% of requests at per-user speed >= reading speed 5 "
        "t/s (default), TTFT <= 2 s; 8 did not: TTFT p90 2.9 s > 2 s (levels measured: 1, 2, 4, 8, 6, 7)"]
    report = build_report(run)
    validate_report(report)
    test = report["tests"][0]
    assert test["capacity"] == 7 and test["capacity_search"]["fewest_failing"] == 8
    assert [lv["users"] for lv in test["capacity_search"]["levels"]] == [1, 2, 4, 6, 7, 8]


def test_an_inconclusive_or_budget_ended_search_says_so():
    run = run_record()
    inconclusive = capacity_search((1, "met"), (2, "met"), (4, "inconclusive"), (3, "met"), ended="inconclusive")
    budget = capacity_search((1, "met"), (2, "met"), ended="budget", stopped="the time budget: 4 users would take "
                             "about 70 s, over the 20 s left of 60 s")
    lines = [search_line("t.py::test_users", s) for s in (inconclusive, budget)]
    assert lines == [
        "capacity t.py::test_users: 3 concurrent user(s) with 90% of requests at per-user speed >= reading speed 5 "
        "t/s (default), TTFT <= 2 s; 4 inconclusive (36 of 40 requests met every promise, 95% interval 50%-95%) "
        "(levels measured: 1, 2, 4?, 3)",
        "capacity t.py::test_users: at least 2 concurrent user(s) with 90% of requests at per-user speed >= reading "
        "speed 5 t/s (default), TTFT <= 2 s; stopped by the time budget: 4 users would take about 70 s, over the 20 s "
        "left of 60 s (levels measured: 1, 2)"]
    assert run.capacities["t.py::test_users"] == 2   # no search: from the per-user verdicts


def test_unwritable_report_path_is_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Exception) as err:
        write_report(blocker / "r.json", run_record())
    assert "cannot write the report" in str(err.value) and "\n" not in str(err.value)


def judged_record():
    from dataclasses import replace

    from pytest_axion.comparison import Side, compare
    from pytest_axion.promises.baseline import baseline_reading
    from pytest_axion.promises.verdict import Judgement, verdict_of
    from pytest_axion.report.record import BaselineStatus

    run = run_record()
    first = run.measurements[0]
    comparison = compare(Side(((20.0, 20.5, 19.5), (19.0, 19.4), (21.0,))), Side((first.samples,)),
                         higher_is_better=True)
    reading = baseline_reading(comparison, label="per_user_tps pp128+tg64", unit=first.unit, runs=3,
                               estimator="median", tolerance=0.1)
    verdict = verdict_of(first.nodeid, [Judgement(first.key, "baseline", "per_user_tps pp128+tg64 vs baseline",
                                                  (first.key,), reading)])
    status = BaselineStatus(path="baselines/hw/m.json", found=True, estimator="median", tolerance=0.1, confirm=2,
                            runs=3, recorded_at="2026-11-25T00:00:00+00:00", llama_cpp_python="0.3.36",
                            git_commit="abc", differences=("threads 4 -> 2",))
    return replace(run, baseline=status, verdicts=[*run.verdicts, verdict])


def test_baseline_columns_header_and_report_fields():
    run = judged_record()
    table = measurement_table(run.measurements, run.verdicts)
    assert "speedup [95% CI]" in table and "vs baseline" in table and "1.00x [" in table
    lines = header_lines(run)
    assert any(line.startswith("baseline: baselines/hw/m.json (3 run(s) per entry") and "estimator median" in line
               for line in lines)
    assert "baseline differs from this run: threads 4 -> 2" in lines
    report = build_report(run)
    validate_report(report)
    judged = report["verdicts"][-1]
    interval = judged["readings"][0]["detail"]["interval"]
    assert judged["outcome"] == "pass" and judged["kind"] == "baseline" and interval[0] < 1 < interval[1]
    assert report["baseline"]["differences"] == ["threads 4 -> 2"]
    assert report["results"][0]["verdicts"][-1] == "axion.baseline." + run.measurements[0].key


def version_4_report():
    """A report as schema version 4 wrote it: verdicts per measurement and per kind (SLO, baseline, shape)."""
    report = build_report(run_record())
    report["schema_version"] = 4
    del report["verdicts"]
    for row in report["results"]:
        del row["verdicts"]
        row["slo"] = [{"nodeid": row["nodeid"], "key": "per_user_tps", "metric": "per_user_tps", "batch_size": 4,
                       "n_prompt": 128, "n_gen": 64, "statistic": "median", "n_samples": 3, "observed": 4.0,
                       "threshold": 5.0, "unit": "tokens/s", "passed": False, "enforced": True,
                       "threshold_label": "reading speed 5 t/s (default)", "verdict": "FAIL",
                       "message": "per_user_tps at batch 4: 4.00 t/s < 5.00 t/s"}]
        if (row["metric"], row["batch_size"]) != ("per_user_tps", 4):
            row["slo"] = []
        row["baseline"] = None
        row["ab"] = None
    for test in report["tests"]:
        test["shape"] = []
    return report


def test_older_reports_still_validate():
    validate_report(version_4_report())
    version_1 = version_4_report()
    version_1["schema_version"] = 1
    del version_1["baseline"]
    for row in version_1["results"]:
        del row["baseline"]
    validate_report(version_1)


def test_junit_properties_name_every_verdict_alike_and_the_capacity():
    run = judged_record()
    properties = dict(junit_properties(run.verdicts))
    assert properties["axion.threshold.per_user_tps.b4.pp128.tg64"].startswith("fail: per_user_tps at batch 4")
    assert properties["axion.baseline." + run.measurements[0].key].startswith("pass: per_user_tps pp128+tg64: ok")
    assert properties["axion.capacity"] == "2"
    # with a search, its bracket is the capacity, and the search is one property in the summary's words
    searched = dict(junit_properties(run.verdicts, search=capacity_search((1, "met"), (2, "met"), (4, "missed"),
                                                                          (3, "met"))))
    assert searched["axion.capacity"] == "3"
    assert searched["axion.capacity_search"] == (
        "3 concurrent user(s) with 90% of requests at per-user speed >= reading speed 5 t/s (default), TTFT <= 2 s; "
        "4 did not: TTFT p90 2.9 s > 2 s (levels measured: 1, 2, 4, 3); ended on promise")


def scaling_run():
    cells = [Measurement("t.py::test_batch", "gen_tps", b, 8, 16, 2, (v, v, v))
             for b, v in ((1, 40.0), (2, 60.0), (4, 52.0))]
    again = {cells[2].key: Measurement("t.py::test_batch", "gen_tps", 4, 8, 16, 2, (70.0,) * 3)}
    [verdict] = confirm("t.py::test_batch", [ShapePromise(None, 1.5)], cells, attempts=3,
                        measure_again=lambda suspects, attempt, why: again)
    return cells, verdict


def test_shape_verdicts_reach_the_report_and_their_table_with_every_attempt():
    cells, verdict = scaling_run()
    record = run_record()
    record = RunRecord(**{**record.__dict__, "measurements": [*record.measurements, *cells],
                          "verdicts": [*record.verdicts, verdict]})
    report = build_report(record)
    validate_report(report)
    shape = report["verdicts"][-1]
    assert shape["outcome"] == "pass" and [r["status"] for r in shape["readings"]] == ["missed", "met"]
    assert [c["cell"] for c in shape["readings"][0]["detail"]["curve"]] == ["batch 1", "batch 2", "batch 4"]
    table = promise_table(record.verdicts)
    assert "gen_tps pp8+tg16" in table and ">= 1.5x" in table and "1.30x, 1.75x" in table and "scaling" in table
    assert " pass " in table and "batch 1: 40.0, batch 2: 60.0, batch 4: 52.0" in table
    assert "per_user_tps" not in table   # per-measurement promises sit on the measurement rows
    assert promise_table([]) == ""


def test_environment_warnings_are_in_the_header_and_the_report():
    record = dataclasses.replace(run_record(), environment=("load average 3.2 is above the 2 logical CPUs: x",))
    assert "environment: load average 3.2 is above the 2 logical CPUs: x" in header_lines(record)
    report = build_report(record)
    validate_report(report)
    assert report["environment_warnings"] == ["load average 3.2 is above the 2 logical CPUs: x"]
    assert build_report(run_record())["environment_warnings"] == []


def test_efficiency_reaches_the_report_and_its_table():
    from pytest_axion.machine.costs import ModelCosts
    from pytest_axion.machine.limits import Bandwidth, MachineLimits
    from pytest_axion.promises.efficiency import Roofs
    from pytest_axion.report.terminal import efficiency_lines

    bandwidth = Bandwidth(98_000_000, {"copy": 20.0, "add": 22.0, "read": 25.0},
                          {"copy": 19.0, "add": 21.0, "read": 24.0})
    limits = MachineLimits(threads=2, model=bandwidth, beyond_cache=bandwidth, compute_gflops=150.0,
                           compute_median_gflops=140.0)
    costs = ModelCosts(step_weight_bytes=96_000_000, embedding_row_bytes=0, matrix_params=134_000_000, n_layer=30,
                       n_head=9, n_head_kv=3, head_dim=64, tied_embedding=True)
    gen = Measurement("t.py::test_users", "gen_tps", 1, 128, 64, 2, (100.0, 100.0))
    run = dataclasses.replace(run_record(), measurements=[*run_record().measurements, gen],
                              roofs=Roofs(costs, limits), roofs_source="measured in this run")
    report = build_report(run)
    validate_report(report)
    (figure,) = report["efficiency"]["figures"]
    # 100 steps/s x (96 MB + 160 positions x 23,040 bytes) = 9.97 GB/s of 25 GB/s
    assert figure["kind"] == "gen_bandwidth" and figure["achieved"] == pytest.approx(9.9686, abs=1e-3)
    assert figure["fraction"] == pytest.approx(9.9686 / 25, abs=1e-4)
    lines = efficiency_lines(run)
    assert lines[0].startswith("machine limits (2 threads): read 25.0 GB/s over 93 MiB") and lines[0].endswith(
        "; measured in this run")
    assert "pp128+tg64 x1  generation bandwidth  9.97 GB/s" in lines[-1] and "40%" in lines[-1]
    broken = build_report(run)
    broken["efficiency"]["figures"][0]["fraction"] = -1
    with pytest.raises(jsonschema.ValidationError):
        validate_report(broken)
    assert build_report(run_record())["efficiency"] is None
    assert efficiency_lines(dataclasses.replace(run_record(), roofs_source="no numpy")) == [
        "efficiency: not measured: no numpy"]


def test_header_of_a_served_session_says_what_the_client_knows_and_no_library_build():
    local = run_record()
    elsewhere = dataclasses.replace(
        local, served="endpoint http://h:8000/v1: model m, build unknown, slots not reported", deployment="endpoint",
        served_elsewhere=True, model=ModelFingerprint(file_name="m@endpoint", path="http://h:8000/v1", sha256="ab" * 32,
                               architecture="served", quantization="unknown", n_params=0, size_bytes=0))
    lines = header_lines(elsewhere)
    assert lines[0] == f"model: m@endpoint (served elsewhere: size and parameters not reported; id {'ab' * 6})"
    assert not any(line.startswith("llama-cpp-python") for line in lines)
    started_here = header_lines(dataclasses.replace(local, served="endpoint http://127.0.0.1:1/v1: model m"))
    assert f"llama-server started here, threads {local.threads}" in started_here
    assert any(line.startswith("llama-cpp-python") for line in header_lines(local))
