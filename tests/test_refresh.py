import subprocess
from pathlib import Path

import pytest

from pytest_axion.errors import AxionError
from pytest_axion.machine.hardware import HardwareFingerprint
from pytest_axion.records import Measurement
from pytest_axion.store.baselines import baseline_from_json
from pytest_axion.store.refresh import (
    RunData,
    child_arguments,
    child_timeout_s,
    combine,
    diff_rows,
    git_commit,
    merge_runs,
    noisy_entries,
    passed_nodeids,
    plan_line,
    provenance,
    run_from_report,
)
from tests.test_baselines import HARDWARE, make_baseline


def m(nodeid, level, metric="prompt_tps", spread=(0.99, 1.0, 1.01), batch=1):
    return Measurement(nodeid, metric, batch, 512, 0, 2, tuple(level * f for f in spread))


def test_child_arguments_drop_refresh_xdist_and_report_options_and_add_their_own():
    parent = ["tests/conformance", "--axion-slo", "--axion-refresh-baselines", "--axion-runs", "3",
              "--axion-run-spacing=5", "-n", "2", "-nauto", "--axion-report", "r.json", "--axion-plots=figs",
              "--axion-strict", "--axion-force", "-k", "prompt", "--axion-baselines", "b"]
    assert child_arguments(parent, Path("/tmp/run-2.json")) == [
        "tests/conformance", "--axion-slo", "--axion-strict", "-k", "prompt", "--axion-baselines", "b",
        "--axion-no-baselines", "-p", "no:cacheprovider", "--axion-report", "/tmp/run-2.json"]
    assert "--axion-slo" in child_arguments(["tests"], Path("r.json"))


def test_passed_nodeids_needs_every_phase_to_pass():
    phases = [("a", "passed"), ("a", "passed"), ("b", "passed"), ("b", "failed"), ("c", "skipped")]
    assert passed_nodeids(phases) == frozenset({"a"})


def test_merge_keeps_only_tests_that_passed_in_every_run():
    runs = [RunData((m("t::a", 100), m("t::b", 50)), frozenset({"t::a", "t::b"})),
            RunData((m("t::a", 102), m("t::b", 40)), frozenset({"t::a"})),
            RunData((m("t::a", 98), m("t::b", 51)), frozenset({"t::a", "t::b"}))]
    entries, skipped = merge_runs(runs)
    [key] = entries
    assert key.startswith("t::a::") and len(entries[key].runs) == 3 and entries[key].level == pytest.approx(100)
    assert skipped == [f"{m('t::b', 1).key}: its test passed in 2 of 3 runs"]


def test_noisy_entries_name_runs_that_disagree_or_spread_with_their_band_and_spare_per_step_latency():
    calm, _ = merge_runs([RunData((m("t::a", v),), frozenset({"t::a"})) for v in (100, 101, 99)])
    assert noisy_entries(calm) == []
    apart, _ = merge_runs([RunData((m("t::a", v),), frozenset({"t::a"})) for v in (100, 130, 80)])
    [problem] = noisy_entries(apart)
    assert "runs disagree by 24% (quiet: <= 15%), so its band is 49%" in problem
    wide = (0.6, 1.0, 1.4)
    spread, _ = merge_runs([RunData((m("t::a", 100, spread=wide),), frozenset({"t::a"}))] * 3)
    assert "repetitions spread 40%" in noisy_entries(spread)[0]
    itl, _ = merge_runs([RunData((m("t::a", 100, "itl_ms", spread=wide),), frozenset({"t::a"}))] * 3)
    assert noisy_entries(itl) == []


def test_later_runs_are_bounded_by_run_one_and_the_plan_says_so():
    assert child_timeout_s(10) == 120 and child_timeout_s(100) == 300
    # issue 26: run 1 took 96 s, and a later run that confirms a miss pauses 60 + 120 s: 3x run 1 cannot hold.
    # The bound is run 1's measuring (less its own pauses) x3, plus what confirming one test's misses may add:
    # its pauses (attempts 2-4 with --axion-confirm 2, the last for an unsure first attempt) and each attempt
    # measuring at most the whole run again
    from pytest_axion.store.refresh import confirm_allowance_s

    allowance = confirm_allowance_s(pauses_s=[60, 120, 240], first_run_measuring_s=96)
    assert allowance == 420 + 3 * 96
    assert child_timeout_s(276, paused_s=180, confirm_allowance_s=allowance) == 3 * 96 + allowance
    line = plan_line(runs=3, first_run_s=100, spacing_s=60)
    assert line.startswith("axion refresh: run 1 of 3 took 100 s; 2 more run(s), each after a 60 s pause: about "
                           "5.3 min (until ~")
    assert line.endswith("UTC); a run that takes over 300 s stops the refresh")


def test_combine_keeps_unmeasured_old_entries_and_diff_shows_old_to_new():
    old = make_baseline(level=100.0)
    new_entries, _ = merge_runs([RunData((m("t.py::other", v),), frozenset({"t.py::other"})) for v in (90, 91, 89)])
    merged, dropped = combine(old, new_entries, hardware_id="hw-1", model_label="m.Q4_1", provenance=old.provenance)
    assert set(merged.entries) == set(old.entries) | set(new_entries) and len(merged.entries) == 2 and not dropped
    [row] = diff_rows(old, new_entries)
    assert row[1] == "-" and row[3] == "new" and row[4] == "3"
    same_key = {next(iter(old.entries)): next(iter(new_entries.values()))}
    [row] = diff_rows(old, same_key)
    assert row[1] == "100" and row[3] == "0.90x"


def test_provenance_is_complete_and_validates_in_a_baseline():
    hardware = HardwareFingerprint.from_json(HARDWARE)
    record = provenance(hardware=hardware, model={"sha256": "c" * 64, "file_name": "m.gguf", "quantization": "Q4_1"},
                        threads=2, repetitions=5, runs=3, spacing_s=60.0, git="abc")
    assert record["hardware"] == HARDWARE and record["git_commit"] == "abc" and record["runs"] == 3
    data = make_baseline().to_json()
    data["provenance"] = record
    assert baseline_from_json(data, source="test").provenance["threads"] == 2


def test_git_commit_marks_uncommitted_changes_and_is_none_outside_git(tmp_path):
    assert git_commit(tmp_path) is None
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "f").write_text("1")
    subprocess.run(["git", "add", "f"], cwd=tmp_path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], cwd=tmp_path,
                   check=True)
    clean = git_commit(tmp_path)
    assert clean is not None and len(clean) == 40
    (tmp_path / "f").write_text("2")
    assert git_commit(tmp_path) == clean + "-dirty"


def test_run_from_report_reads_outcomes_and_refuses_old_reports():
    report = {"results": [m("t::a", 100).to_json()], "tests": [{"nodeid": "t::a", "outcome": "passed"}]}
    run = run_from_report(report, source="r.json")
    assert run.passed == frozenset({"t::a"}) and run.measurements[0].median == 100
    with pytest.raises(AxionError, match=r"r\.json lacks"):
        run_from_report({"results": []}, source="r.json")


def test_a_cell_measured_in_some_runs_only_says_so():
    # A capacity search stops where the machine's speed says: one run may measure 64 users, the next not.
    runs = [RunData((m("t::a", 100), m("t::a", 5, batch=64)), frozenset({"t::a"})),
            RunData((m("t::a", 101),), frozenset({"t::a"}))]
    entries, skipped = merge_runs(runs)
    assert len(entries) == 1
    assert skipped == [f"{m('t::a', 5, batch=64).key}: measured in 1 of 2 runs (a search that stopped at other "
                       "sizes)"]


def _later(provenance, **changes):
    return {**provenance, "recorded_at": "2026-12-03T07:00:00+00:00", "git_commit": "def", **changes}


def test_a_partial_refresh_keeps_old_entries_with_their_own_stamp_and_stamps_the_new_ones():
    old = make_baseline(level=100.0)
    [(old_key, old_entry)] = old.entries.items()
    new_entries, _ = merge_runs([RunData((m("t.py::other", v),), frozenset({"t.py::other"})) for v in (90, 91, 89)])
    merged, dropped = combine(old, new_entries, hardware_id="hw-1", model_label="m.Q4_1",
                              provenance=_later(old.provenance))
    assert not dropped
    assert merged.entries[old_key].recorded_at == old_entry.recorded_at != "2026-12-03T07:00:00+00:00"
    [new_key] = new_entries
    assert (merged.entries[new_key].recorded_at, merged.entries[new_key].git_commit) == (
        "2026-12-03T07:00:00+00:00", "def")
    # and the stamps survive the file: schema 2 keeps them per entry
    again = baseline_from_json(merged.to_json(), source="merged")
    assert again.entries[new_key].git_commit == "def" and again.to_json()["schema_version"] == 3


@pytest.mark.parametrize("change, named", [
    ({"llama_cpp_python": "0.3.99"}, "llama_cpp_python"),
    ({"threads": 16}, "threads"),
    ({"model": {"sha256": "d" * 64, "file_name": "m.gguf", "quantization": "Q4_1"}}, "model.sha256"),
])
def test_old_entries_recorded_under_another_library_threads_or_model_are_dropped_with_a_note(change, named):
    old = make_baseline(level=100.0)
    new_entries, _ = merge_runs([RunData((m("t.py::other", v),), frozenset({"t.py::other"})) for v in (90, 91, 89)])
    merged, dropped = combine(old, new_entries, hardware_id="hw-1", model_label="m.Q4_1",
                              provenance=_later(old.provenance, **change))
    assert set(merged.entries) == set(new_entries)
    [note] = dropped
    assert note.startswith("1 older entr(ies) not measured by this refresh were dropped") and named in note


def test_a_version_1_file_is_read_with_the_files_stamp_on_every_entry():
    data = make_baseline().to_json()
    data["schema_version"] = 1
    for entry in data["entries"].values():
        del entry["recorded_at"], entry["git_commit"]
    baseline = baseline_from_json(data, source="v1.json")
    assert {e.recorded_at for e in baseline.entries.values()} == {data["provenance"]["recorded_at"]}


def test_provenance_holds_no_path_of_this_machine():
    record = provenance(hardware=HardwareFingerprint.from_json(HARDWARE),
                        model={"sha256": "c" * 64, "file_name": "m.gguf", "quantization": "Q4_1",
                               "path": "/home/someone/models/m.gguf"},
                        threads=2, repetitions=5, runs=3, spacing_s=60.0, git="abc")
    assert "path" not in record["model"] and "/home/someone" not in str(record)


def test_a_later_run_that_overran_while_confirming_says_so_and_not_that_the_machine_was_busy(tmp_path):
    from pytest_axion.store.refresh import _overrun_message

    log = tmp_path / "run-3.log"
    log.write_text("t.py .\n  axion: t.py::test_prompt: 1 promise(s) not met (prompt_tps: spread 27%); attempt 2 of 3 "
                   "after a 60 s pause, in a fresh worker\n")
    message = _overrun_message(3, 3, 900, log)
    assert message.startswith("refresh run 3 of 3 took over 900 s while confirming misses (1 confirming attempt(s), "
                              "the last: axion: t.py::test_prompt: 1 promise(s) not met")
    assert "not the machine" in message and "busier" not in message
    log.write_text("t.py ..\n")
    assert "the machine is much slower or busier" in _overrun_message(3, 3, 900, log)
    assert "the machine is much slower or busier" in _overrun_message(3, 3, 900, tmp_path / "missing.log")
