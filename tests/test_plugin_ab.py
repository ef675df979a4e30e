"""A/B sessions on the real embedded model, with the current interpreter on both sides (A/A)."""

import json
import sys

from pytest_axion.report import validate_report

from .test_worker import crashing_interpreter

AB = ["--axion-slo", "--axion-threads=2", "--axion-ab-rounds=6", "-p", "no:cacheprovider"]

SUITE = """
import pytest

@pytest.mark.axion_slo(prompt_tps=10)
def test_prompt(axion):
    axion.prompt(32)

@pytest.mark.axion_slo(per_user_tps=1, max_batch=2)
def test_users(axion):
    axion.batched(n_prompt=16, n_gen=4, batch_sizes=[1, 2])
"""


def test_an_a_a_session_names_both_sides_and_reports_paired_verdicts(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(*AB, f"--axion-ab-baseline={sys.executable}", "--axion-report=r.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "A/B baseline (A): llama-cpp-python *, llama.cpp * (ggml *), * [[]*python*]",
        "A/B current  (B): llama-cpp-python *",
        "A/B: 6 rounds in ABBA order, one repetition per side each; paired ratio B/A *tolerance 5%",
    ])
    result.stdout.fnmatch_lines(["test*metric*workload*A median*B median*unit*B/A*95% CI*pairs*verdict",
                                 "*test_prompt*prompt_tps*pp32*tokens/s*x*6*"])
    report = json.loads((pytester.path / "r.json").read_text())
    validate_report(report)
    assert report["schema_version"] == 4 and report["ab"]["rounds"] == 6 and report["baseline"] is None
    rows = [r for r in report["results"] if r["ab"] is not None]
    assert len(rows) == len(report["results"]) == 1 + 2 * 5   # pp32, and five metrics per batch size
    assert all(len(r["samples"]) == 6 or r["metric"] == "itl_ms" for r in rows)
    assert all(len(r["ab"]["ratios"]) == 6 and len(r["ab"]["baseline_samples"]) == len(r["samples"]) for r in rows)
    assert {r["ab"]["verdict"] for r in rows} <= {"ok", "improved", "inconclusive"}
    assert report["ab"]["baseline"]["llama_cpp_python_version"] == report["ab"]["current"]["llama_cpp_python_version"]


def test_a_missing_baseline_interpreter_fails_the_tests_with_one_line(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(*AB, "--axion-ab-baseline=/no/such/python")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*A/B baseline (--axion-ab-baseline) interpreter /no/such/python does not exist*"])


def test_a_baseline_that_crashes_mid_session_loses_nothing_measured_before(pytester, tmp_path):
    pytester.makepyfile(SUITE)
    crashing = crashing_interpreter(tmp_path, 8)   # the prompt test's 6 rounds pass, the next workload dies
    result = pytester.runpytest(*AB, f"--axion-ab-baseline={crashing}", "--axion-report=r.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"*interpreter {crashing} stopped with exit code 9 while measuring batched*"])
    report = json.loads((pytester.path / "r.json").read_text())
    assert [r["metric"] for r in report["results"]] == ["prompt_tps"] and report["results"][0]["ab"] is not None
