"""A capacity search against its stored baseline: stored, merged by a refresh, and judged through the one confirm
procedure, with fake measurements (the real-model path is in test_plugin_capacity_baseline)."""

import dataclasses
import io
import json

import pytest

from pytest_axion.cli import show, validate
from pytest_axion.errors import BaselineError
from pytest_axion.machine.hardware import HardwareFingerprint
from pytest_axion.promises.ab_capacity import AbCapacityPromise
from pytest_axion.promises.capacity import RequestPromise, judge_level
from pytest_axion.promises.capacity_baseline import CapacityBaselinePromise
from pytest_axion.promises.confirm import confirm
from pytest_axion.records import CapacitySearch, Measurement, requests_from_measurements
from pytest_axion.store.baselines import (
    Baseline,
    CapacityEntry,
    baseline_path,
    capacity_key,
    read_baseline,
    write_baseline,
)
from pytest_axion.store.gate import BaselineGate
from pytest_axion.store.refresh import RunData, capacity_of, combine, diff_rows, merge_capacities, run_from_report
from tests.test_baseline import MODEL, SETTINGS
from tests.test_baselines import HARDWARE, PROVENANCE

NODEID = "t.py::test_users"
READING = RequestPromise("per_user_tps", 5.0)


def cell(users, per_user_tps, n=35, nodeid=NODEID):
    """One in-process level: ``n`` repetitions of ``users`` users, every one at ``per_user_tps``."""
    return {metric: Measurement(nodeid, metric, users, 16, 16, 2, (value,) * n)
            for metric, value in (("ttft_ms", 100.0), ("per_user_tps", per_user_tps),
                                  ("gen_tps", per_user_tps * users))}


def search_over(speeds, by="users"):
    """A search whose levels (users -> per-user speed) were measured as ``speeds`` says; and their cells."""
    cells = {users: cell(users, speed) for users, speed in speeds.items()}
    levels = tuple(judge_level(users, requests_from_measurements(c), [READING], 0.9, n_gen=16)
                   for users, c in cells.items())
    search = CapacitySearch(NODEID, 16, 16, READING.describe(), 0.9, levels, "promise", "", limits=(("per_user_tps",
                                                                                                      5.0),), by=by)
    return search, [m for c in cells.values() for m in c.values()]


def entry(*runs, by="users"):
    return CapacityEntry(nodeid=NODEID, by=by, n_prompt=16, n_gen=16, threads=2, service_level=READING.describe(),
                         attainment=0.9, runs=runs)


def store(root, *entries):
    write_baseline(baseline_path(root, "hw-1", MODEL.label),
                   Baseline(hardware_id="hw-1", model_label=MODEL.label, provenance=PROVENANCE, entries={},
                            capacities={e.key: e for e in entries}))
    return BaselineGate(root, hardware=HardwareFingerprint.from_json(HARDWARE), model=MODEL, threads=2,
                        settings=SETTINGS)


class Remeasure:
    """Measures a level again at the next of ``speeds`` (per user), and counts calls."""

    def __init__(self, *speeds):
        self.speeds = list(speeds)
        self.calls = []

    def __call__(self, pending, attempt, why):
        self.calls.append((attempt, why))
        speed = self.speeds.pop(0)
        users = pending[0].batch_size
        fresh = cell(users, speed, n=5)
        return {m.key: fresh[m.metric] for m in pending}


def judge(gate, search, measurements, remeasure, *, tolerance=0.1, require=False):
    [verdict] = confirm(NODEID, [CapacityBaselinePromise(gate, search, tolerance, require)], measurements,
                        attempts=3, measure_again=remeasure)
    return verdict


# -- stored ---------------------------------------------------------------------------------------------------------

def test_capacity_entries_are_written_read_back_and_keyed_like_measurements(tmp_path):
    stored = entry((8, 9), (9, 10), (10, None))
    store(tmp_path, stored)
    path = baseline_path(tmp_path, "hw-1", MODEL.label)
    data = json.loads(path.read_text())
    assert data["schema_version"] == 3 and data["capacities"][stored.key]["summary"] == {"floor": 8}
    again = read_baseline(path).capacities[stored.key]
    assert again == stored and again.floor == 8 and again.runs_text() == "8/9, 9/10, 10/+"
    assert stored.key == capacity_key(NODEID, by="users", n_prompt=16, n_gen=16, threads=2) == (
        "t.py::test_users::capacity_users::pp16::tg16::t2")


def test_a_file_without_capacities_reads_as_none_and_a_bad_capacity_is_a_one_line_error(tmp_path):
    store(tmp_path)
    path = baseline_path(tmp_path, "hw-1", MODEL.label)
    data = json.loads(path.read_text())
    assert "capacities" not in data and read_baseline(path).capacities == {}
    data["schema_version"] = 2   # written before capacities existed
    path.write_text(json.dumps(data))
    assert read_baseline(path).capacities == {}
    data["schema_version"] = 3
    data["capacities"] = {"k": {**entry((8, 9)).to_json(), "runs": [{"most_passing": 8, "fewest_failing": 0}]}}
    path.write_text(json.dumps(data))
    with pytest.raises(BaselineError, match=r"violates the baseline schema at capacities/k/runs/0/fewest_failing.*"
                                            r"restore it from version control") as err:
        read_baseline(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# -- refreshed -------------------------------------------------------------------------------------------------------

def test_a_refresh_keeps_each_runs_bracket_of_tests_that_passed_in_every_run():
    search, _ = search_over({1: 9.0, 2: 9.0, 4: 1.0})
    as_reported = {"settings": {"threads": 2}, "results": [],
                   "tests": [{"nodeid": NODEID, "outcome": "passed", "capacity_search": search.to_json()}]}
    run = run_from_report(as_reported, source="r.json")
    assert run.capacities == (entry((2, 4)),)
    other = RunData((), frozenset({NODEID}), (capacity_of(NODEID, {**search.to_json(), "most_passing": 3,
                                                                  "fewest_failing": None}, threads=2),))
    merged, skipped = merge_capacities([run, other])
    assert merged == {entry((2, 4)).key: entry((2, 4), (3, None))} and skipped == []
    failed = RunData((), frozenset(), other.capacities)
    merged, skipped = merge_capacities([run, failed])
    assert merged == {} and skipped == [f"{entry().key}: its test passed with this search in 1 of 2 runs"]
    stricter_search = {**search.to_json(), "service_level": "TTFT <= 1 s"}
    stricter = RunData((), frozenset({NODEID}), (capacity_of(NODEID, stricter_search, threads=2),))
    assert merge_capacities([run, stricter])[1] == [f"{entry().key}: its promises differ between runs"]


def test_a_refresh_shows_the_floor_before_and_after_and_keeps_searches_it_did_not_run():
    old = Baseline("hw-1", MODEL.label, PROVENANCE, {}, {entry((8, 9)).key: entry((8, 9))})
    new = {entry().key: entry((6, 7), (7, 8))}
    [row] = diff_rows(old, {}, new)
    assert row[1:5] == ["8", "6 users (every run; 6/7, 7/8)", "0.75x", "2"]
    kept, dropped = combine(old, {}, hardware_id="hw-1", model_label=MODEL.label, provenance=PROVENANCE)
    assert kept.capacities == old.capacities and dropped == []
    other_build = {**PROVENANCE, "llama_cpp_python": "0.3.99"}
    kept, dropped = combine(old, {}, hardware_id="hw-1", model_label=MODEL.label, provenance=other_build)
    assert kept.capacities == {} and "1 older entr(ies) not measured by this refresh were dropped" in dropped[0]


# -- judged ----------------------------------------------------------------------------------------------------------

def test_a_search_that_serves_what_the_baseline_served_passes_without_measuring_again(tmp_path):
    gate = store(tmp_path, entry((8, 9), (9, 10)))
    search, measured = search_over({1: 9.0, 2: 9.0, 4: 9.0, 8: 9.0, 9: 1.0})
    remeasure = Remeasure()
    verdict = judge(gate, search, measured, remeasure)
    assert verdict.outcome == "pass" and remeasure.calls == []
    assert verdict.first.message == ("capacity 8/9 users (met/not met): ok; baseline: every run met 8 users (runs "
                                     "8/9, 9/10), band 10%")
    one_user_short, measured = search_over({1: 9.0, 2: 9.0, 4: 9.0, 8: 9.0, 9: 9.0, 10: 1.0})
    assert judge(store(tmp_path / "ten", entry((10, 11))), one_user_short, measured, Remeasure()).outcome == "pass"
    other_promises, measured = search_over({1: 9.0, 2: 1.0})
    other_promises = dataclasses.replace(other_promises, service_level="TTFT <= 1 s")
    shown = judge(gate, other_promises, measured, remeasure)
    assert shown.outcome == "info" and "the baseline's search kept other promises" in shown.message()


def test_a_capacity_below_the_band_fails_once_a_fresh_worker_misses_that_level_again(tmp_path):
    gate = store(tmp_path, entry((8, 9), (9, 10)))
    search, measured = search_over({1: 9.0, 2: 9.0, 4: 1.0, 3: 1.0})   # 3 and 4 failed: 4, nearer the floor
    remeasure = Remeasure(1.0, 1.0)
    verdict = judge(gate, search, measured, remeasure)
    assert verdict.outcome == "fail" and verdict.kind == "capacity_baseline" and len(remeasure.calls) == 2
    assert verdict.first.message.startswith("capacity regressed: 2/3 users (met/not met), below the 7.2 users the "
                                            "band requires; 4 users, which every baseline run served, not met "
                                            "(per-user speed p10 1 t/s < 5 t/s); baseline: every run met 8")
    assert [r.figure for r in verdict.readings] == ["2/3 users", "4 users 0%", "4 users 0%"]
    assert verdict.involved == tuple(m.key for m in measured if m.batch_size == 4)


def test_a_capacity_below_the_band_passes_when_a_fresh_worker_serves_that_level(tmp_path):
    gate = store(tmp_path, entry((8, 9)))
    search, measured = search_over({1: 9.0, 2: 9.0, 4: 1.0})
    remeasure = Remeasure(9.0)
    verdict = judge(gate, search, measured, remeasure)
    assert verdict.outcome == "pass" and len(remeasure.calls) == 1
    assert "a fresh attempt met it" in verdict.reason


def test_no_capacity_baseline_is_shown_and_fails_only_when_required(tmp_path):
    gate = store(tmp_path)
    search, measured = search_over({1: 9.0, 2: 1.0})
    remeasure = Remeasure()
    shown = judge(gate, search, measured, remeasure)
    assert shown.outcome == "info" and "capacity: no-baseline: not in the stored baseline" in shown.message()
    assert judge(gate, search, measured, remeasure, require=True).outcome == "fail" and remeasure.calls == []


def test_a_rate_search_below_the_band_is_inconclusive_as_its_level_is_not_measured_again(tmp_path):
    gate = store(tmp_path, entry((4.0, 4.4), by="rate"))
    search, measured = search_over({1: 9.0, 2: 1.0}, by="rate")
    remeasure = Remeasure()
    verdict = judge(gate, search, measured, remeasure)
    assert verdict.outcome == "inconclusive" and remeasure.calls == []
    assert "an open-loop level is not measured again alone" in verdict.message()


# -- the A/B gate on capacity ------------------------------------------------------------------------------------------

def pairs_of(speeds, n=10):
    """(A, B) rounds by B's key for levels ``users -> (A's per-user speed, B's)``, ``n`` rounds each."""
    found = {}
    for users, (a_speed, b_speed) in speeds.items():
        a_cell, b_cell = cell(users, a_speed, n=n), cell(users, b_speed, n=n)
        found.update({b.key: (a_cell[metric], b) for metric, b in b_cell.items()})
    return found


class AbRemeasure:
    """Measures the pending level again on both sides, into the promise's pairs, at the next (A, B) speeds."""

    def __init__(self, pairs, *speeds):
        self.pairs, self.speeds, self.calls = pairs, list(speeds), []

    def __call__(self, pending, attempt, why):
        self.calls.append(pending[0].batch_size)
        fresh = pairs_of({pending[0].batch_size: self.speeds.pop(0)}, n=5)
        self.pairs.update(fresh)
        return {key: b for key, (_, b) in fresh.items()}


def ab_judge(speeds, *again):
    search, measured = search_over({users: b for users, (_, b) in speeds.items()})
    pairs = pairs_of(speeds)
    remeasure = AbRemeasure(pairs, *again)
    [verdict] = confirm(NODEID, [AbCapacityPromise(search, pairs)], measured, attempts=3, measure_again=remeasure)
    return verdict, remeasure.calls


def test_b_serving_every_level_a_serves_passes_with_both_goodputs_shown():
    verdict, calls = ab_judge({1: (9.0, 9.0), 2: (9.0, 8.0), 4: (3.0, 2.0)})   # 4: beyond both
    assert verdict.outcome == "pass" and verdict.kind == "ab_capacity" and calls == []
    assert verdict.first.message.startswith("capacity B vs A at 90% of requests: B serves every level A serves (1 "
                                            "user: A 100% (goodput 0.533 requests/s), B 100% (0.533); 2 users: A ")
    assert [level["users"] for level in verdict.first.detail["levels"]] == [1, 2, 4]


def test_b_losing_a_level_a_serves_fails_when_fresh_workers_see_it_again_and_passes_when_they_do_not():
    slower = {1: (9.0, 9.0), 2: (9.0, 4.0), 4: (9.0, 2.0)}
    verdict, calls = ab_judge(slower, (9.0, 2.0), (9.0, 2.0))
    assert verdict.outcome == "fail" and calls == [2, 2]   # the largest gap first found: 2 users (100% -> 0%)
    assert "2 users: A 100% (goodput " in verdict.first.message and "B does not serve a level A serves" in (
        verdict.first.message)
    spell, calls = ab_judge(slower, (9.0, 9.0))
    assert spell.outcome == "pass" and calls == [2]


def test_show_and_validate_list_the_capacity_searches(tmp_path):
    store(tmp_path, entry((8, 9), (9, 10)))
    out = io.StringIO()
    assert show(root=tmp_path, out=out) == 0
    assert "t.py::test_users::capacity_users::pp16::tg16::t2  8 users          8/9, 9/10" in out.getvalue()
    out = io.StringIO()
    assert validate(root=tmp_path, out=out) == 0 and "(0 entries, 1 capacity search(es))" in out.getvalue()
