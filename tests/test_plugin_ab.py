"""A/B sessions on the real embedded model, with the current interpreter on both sides (A/A)."""

import json
import sys
from pathlib import Path

from pytest_axion.schemas import validate_report

from .test_worker import crashing_interpreter

# A one-second confirmation pause: an unsure A/A pair is measured again in fresh workers at once (the pause's own
# length is tested in test_confirm.py); at the default 60 s, each unsure test waited minutes on a busy machine.
AB = ["--axion-slo", "--axion-threads=1", "--axion-ab-rounds=6", "--axion-confirm-spacing=1", "-p", "no:cacheprovider"]

SUITE = """
import pytest

@pytest.mark.axion_slo(prompt_tps=10)
def test_prompt(axion):
    axion.prompt(32)

@pytest.mark.axion_slo(per_user_tps=1, max_batch=2)
def test_users(axion):
    axion.batched(n_prompt=16, n_gen=4, batch_sizes=[1, 2])

def test_generate(axion):
    axion.generate(8)
"""
PAIRED_ROWS = 1 + 2 * 5 + 1   # pp32, five metrics per batch size, tg8


def test_an_a_a_session_names_both_sides_and_reports_paired_verdicts(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(*AB, f"--axion-ab-baseline={sys.executable}", "--axion-report=r.json")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "A/B baseline (A): llama-cpp-python *, llama.cpp * (ggml *), * [[]*python*]",
        "A/B current  (B): llama-cpp-python *",
        "A/B: 6 rounds in ABBA order, one repetition per side each; paired ratio B/A *tolerance 5%",
    ])
    result.stdout.fnmatch_lines(["test*metric*workload*A median*B median*unit*B/A*95% CI*pairs*verdict",
                                 "*test_prompt*prompt_tps*pp32*tokens/s*x*6*"])
    report = json.loads((pytester.path / "r.json").read_text())
    validate_report(report)
    assert report["schema_version"] == 11 and report["ab"]["rounds"] == 6 and report["baseline"] is None
    paired = {v["involved"][0]: v for v in report["verdicts"] if v["kind"] == "ab"}
    rows = report["results"]
    assert len(paired) == len(rows) == PAIRED_ROWS
    assert all(len(r["samples"]) == 6 or r["metric"] == "itl_ms" for r in rows)
    keys = {r["nodeid"] + "::" + "::".join([r["metric"], f"b{r['batch_size']}", f"pp{r['n_prompt']}",
                                            f"tg{r['n_gen']}", f"t{r['threads']}"]): r for r in rows}
    for key, verdict in paired.items():
        detail = verdict["readings"][0]["detail"]
        # one value per round on each side (a round's step latencies by their median)
        assert len(detail["ratios"]) == len(detail["baseline_samples"]) == len(detail["current_samples"]) == 6
        assert key in keys
    assert {v["outcome"] for v in paired.values()} <= {"pass", "inconclusive"}
    assert report["ab"]["baseline"]["llama_cpp_python_version"] == report["ab"]["current"]["llama_cpp_python_version"]


def test_a_missing_baseline_interpreter_fails_the_tests_with_one_line(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(*AB, "--axion-ab-baseline=/no/such/python")
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(["*A/B baseline (--axion-ab-baseline) interpreter /no/such/python does not exist*"])


def test_a_baseline_that_crashes_mid_session_loses_nothing_measured_before(pytester, tmp_path):
    pytester.makepyfile(SUITE)
    crashing = crashing_interpreter(tmp_path, 8)   # the prompt test's 6 rounds pass, the next workload dies
    result = pytester.runpytest(*AB, f"--axion-ab-baseline={crashing}", "--axion-report=r.json")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([f"llama.cpp crashed with exit code 9 while measuring batched * (A/B baseline "
                                 f"(--axion-ab-baseline), {crashing}); llama.cpp's last log lines: *"])
    report = json.loads((pytester.path / "r.json").read_text())
    # The prompt test's figures and verdicts survive; the generation test after the crash measures in fresh workers.
    assert [r["metric"] for r in report["results"]] == ["prompt_tps", "gen_tps"]
    assert [v["kind"] for v in report["verdicts"] if v["nodeid"].endswith("test_prompt")] == ["threshold", "ab"]


def test_an_a_a_session_under_xdist_keeps_every_paired_verdict(pytester):
    # the two single-workload tests, one per xdist worker: what is carried to the controller is the point here,
    # the batched test's paired rows are in the session above
    pytester.makepyfile(SUITE)
    result = pytester.runpytest_subprocess(*AB, f"--axion-ab-baseline={sys.executable}", "-n", "2",
                                           "--axion-report=r.json", "-k", "not test_users")
    result.assert_outcomes(passed=2)
    report = json.loads((pytester.path / "r.json").read_text())
    validate_report(report)
    assert {r["metric"] for r in report["results"]} == {"prompt_tps", "gen_tps"}
    assert len([v for v in report["verdicts"] if v["kind"] == "ab"]) == len(report["results"]) == 2
    assert report["ab"]["rounds"] == 6
    result.stdout.fnmatch_lines(["test*metric*workload*A median*B median*unit*B/A*95% CI*pairs*verdict"])


# B's per-user speed at one user sets the limit. B is stopped two thirds of every 20 ms (a third as fast; a short
# period keeps its speed steady over short workloads, so its warm-up settles soon): with
# two users each gets 40-55% of its one-user speed, A (three times as fast) 120-165% of it: A serves 2 users at
# 0.8x that limit, B does not. Attainment 0.5: a level decides on few rounds.
CAPACITY_SUITE = """
import pytest

def test_users(axion):
    one = axion.batched(n_prompt=8, n_gen=4, batch_sizes=[1])[1].per_user_tps.median
    axion.capacity(n_prompt=8, n_gen=4, per_user_tps=0.8 * one, attainment=0.5, batch_sizes=[1, 2], max_users=2)
"""


def test_a_b_that_serves_fewer_users_than_a_fails_the_capacity_gate_once_fresh_workers_agree(pytester, tmp_path,
                                                                                        contention_ignored):
    pytester.makepyfile(CAPACITY_SUITE)
    slowed = tmp_path / "third-speed-python"
    script = Path(__file__).parents[1] / "benchmarks" / "slowed_python.py"
    # a 5 ms cycle, shorter than one token's work (~7 ms), slows every request alike; with 20 ms, a 4-token
    # request could fall mostly between stops and meet the promise (one B attempt in about eight did)
    slowed.write_text(f"#!/bin/sh\nexec {sys.executable} {script} --stop 0.67 --period 0.005 -- \"$@\"\n")
    slowed.chmod(0o755)
    result = pytester.runpytest(*AB, f"--axion-ab-baseline={sys.executable}", f"--axion-python={slowed}",
                                "--axion-confirm=1", "--axion-report=r.json")
    result.assert_outcomes(failed=1)
    report = json.loads((pytester.path / "r.json").read_text())
    [verdict] = [v for v in report["verdicts"] if v["kind"] == "ab_capacity"]
    assert verdict["outcome"] == "fail", verdict["message"]
    assert [r["status"] for r in verdict["readings"]] == ["missed", "missed"]
    first = verdict["readings"][0]
    assert first["message"].startswith("capacity B vs A at 50% of requests: ") and (
        "B does not serve a level A serves" in first["message"])
    shares = {level["users"]: (level["baseline_share"], level["current_share"]) for level in first["detail"]["levels"]}
    assert shares[2][0] >= 0.5 > shares[2][1], shares
    assert all(level["baseline_goodput_rps"] > 0 for level in first["detail"]["levels"])
