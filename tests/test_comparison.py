import io
import json

from pytest_axion.cli import compare_files, main
from pytest_axion.report.json_report import build_report
from pytest_axion.store.baselines import baseline_path, write_baseline
from tests.test_baselines import make_baseline
from tests.test_report import run_record


def compare(old, new, tolerance=0.10):
    out = io.StringIO()
    status = compare_files(old=old, new=new, tolerance=tolerance, estimator="median", out=out)
    return status, out.getvalue()


def baseline_file(root, level, flags=None):
    baseline = make_baseline(level=level)
    if flags is not None:
        baseline.provenance["llama_cpp_system_info"] = flags
    path = baseline_path(root, "hw-1", "m.Q4_1")
    write_baseline(path, baseline)
    return path


def test_two_baselines_twice_as_slow_regress_with_exit_1_and_flag_changes_named(tmp_path):
    old = baseline_file(tmp_path / "old", 100.0, {"AVX2": "1", "REPACK": "1"})
    new = baseline_file(tmp_path / "new", 50.0, {"AVX2": "1"})
    status, text = compare(old, new)
    assert status == 1
    assert "llama.cpp flags: REPACK 1 -> absent" in text and f"old: {old} (baseline)" in text
    assert "test prompt_tps b1 pp512 tg0" in text and "0.500" in text and "regressed" in text
    assert "0 ok, 0 improved, 1 regressed, 0 inconclusive" in text


def test_same_report_twice_is_ok_and_old_version_reports_still_compare(tmp_path):
    report = build_report(run_record())
    new = tmp_path / "new.json"
    new.write_text(json.dumps(report))
    old_report = json.loads(json.dumps(report))
    old_report["schema_version"] = 1   # rows with per-measurement SLO verdicts, no baseline parts
    del old_report["verdicts"]
    for row in old_report["results"]:
        del row["verdicts"]
        row["slo"] = []
    del old_report["baseline"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(old_report))
    status, text = compare(old, new)
    assert status == 0 and "4 ok, 0 improved, 0 regressed" in text
    assert "llama.cpp flags: identical on both sides" in text


def test_bad_inputs_exit_2_with_one_line_naming_the_file(tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    good = baseline_file(tmp_path, 100.0)
    for bad, message in ((junk, f"error: {junk} is not valid JSON"),
                         (other, f"error: {other} is neither a pytest-axion report nor a baseline file"),
                         (tmp_path / "missing.json", "error: cannot read")):
        status, text = compare(bad, good)
        assert status == 2 and text.startswith(message) and text.count("\n") == 1, text
    report = tmp_path / "r.json"
    report.write_text(json.dumps(build_report(run_record())))
    status, text = compare(good, report)
    assert status == 2 and "share no measurement" in text


def test_cli_parses_compare_options(tmp_path, capsys):
    path = baseline_file(tmp_path, 100.0)
    assert main(["compare", str(path), str(path), "--tolerance", "5%", "--estimator", "best"]) == 0
    assert "band = max(tolerance 5%" in capsys.readouterr().out


def single_run(level):
    from pytest_axion.comparison import Side
    return Side(((level * 0.99, level, level * 1.01),))


def test_a_table_is_judged_as_a_whole_so_chance_strays_among_many_rows_are_inconclusive():
    """Two single-run files: a row 0.72x alone is significant (p about 0.02), but among 20 rows a stray that
    far is expected by chance; a row at 0.5x stays regressed, and one row alone keeps its own verdict."""
    from pytest_axion.comparison import compare as compare_sides_of_one
    from pytest_axion.store.compare import p_value, together

    stray, halved = (compare_sides_of_one(single_run(100), single_run(100 * f), higher_is_better=True)
                     for f in (0.72, 0.5))
    unchanged = [compare_sides_of_one(single_run(100), single_run(100), higher_is_better=True)] * 18
    assert stray.verdict == halved.verdict == "regressed" and 0.01 < p_value(stray) < 0.05
    assert together([stray, halved, *unchanged]) == ["inconclusive", "regressed", *["ok"] * 18]
    assert together([stray]) == ["regressed"]


def test_two_single_run_reports_say_what_they_cannot_tell(tmp_path):
    report = build_report(run_record())
    (tmp_path / "a.json").write_text(json.dumps(report))
    (tmp_path / "b.json").write_text(json.dumps(report))
    status, text = compare(tmp_path / "a.json", tmp_path / "b.json")
    assert status == 0 and "one run on each side: how much whole runs differ is unknown and assumed 10%" in text
