"""The SLO gate as a release pipeline drives it: markers, verdicts, reports, figures (real model)."""

import json
import xml.etree.ElementTree as ET

import pytest

from pytest_axion.schemas import validate_report

FAST = ["--axion-slo", "--axion-repetitions=2", "--axion-confirm-spacing=0"]
SUITE = """
import pytest

@pytest.mark.axion_slo(prompt_tps=1, gen_tps=1)
def test_ok(axion):
    axion.prompt(32)
    axion.generate(8)

@pytest.mark.axion_slo(per_user_tps="reading", max_batch=2, itl_ms=10000)
def test_users(axion):
    axion.batched(n_prompt=16, n_gen=8, batch_sizes=[1, 2])
"""


def test_markers_lists_axion_slo_with_its_keys(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.axion_slo(prompt_tps=50.0, gen_tps=20.0, per_user_tps='reading', "
                                 "ttft_ms=2000, ttft_percentile=50, max_batch=4, steady_within=0.15, gen_scaling=1.5, "
                                 "tolerance=0.10, efficiency=?'gen_bandwidth': 0.5?, itl_ms=200, itl_percentile=99, "
                                 "requires=?'KLEIDIAI'?): *"])


def test_impossible_slo_fails_with_figures_and_statistic_after_a_fresh_attempt(pytester, contention_ignored):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.axion_slo(per_user_tps=1e6, max_batch=2)
        def test_impossible(axion):
            axion.batched(n_prompt=16, n_gen=8, batch_sizes=[1, 2])
    """)
    result = pytester.runpytest(*FAST, "--axion-confirm=1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*2 promise(s) not met (per_user_tps at batch 1: * t/s; per_user_tps at batch 2: * t/s); attempt 2 of 2 "
        "after a 0 s pause, in a fresh worker",
        "fail: per_user_tps at batch 1 (pp16+tg8): * t/s < 1000000.0 t/s (median of 2); "
        "attempts * t/s, * t/s; missed in *attempt*",
        "fail: per_user_tps at batch 2 (pp16+tg8): * t/s < 1000000.0 t/s (median of 2)*",
        "capacity *::test_impossible: 0 concurrent user(s) at 1000000.0 t/s*",
    ])
    assert "Traceback" not in result.stdout.str()


def test_passing_suite_with_capacity_report_and_junit(pytester, tmp_path):
    pytester.makepyfile(SUITE)
    report, junit = tmp_path / "r.json", tmp_path / "junit.xml"
    result = pytester.runpytest(*FAST, f"--axion-report={report}", f"--junitxml={junit}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "statistic: median of 2 repetitions (IQR, CV); reading speed 5 t/s (default)",
        "*test_users*per_user_tps*2*16*8*>= 5.00 t/s (reading)*pass*",
        "capacity test_passing_suite_with_capacity_report_and_junit.py::test_users: at least 2 concurrent user(s)*",
    ])
    data = json.loads(report.read_text())
    validate_report(data)
    assert {r["metric"] for r in data["results"]} == {"prompt_tps", "gen_tps", "per_user_tps", "ttft_ms", "itl_ms"}
    assert all(len(r["samples"]) == 2 or r["metric"] == "itl_ms" for r in data["results"])
    properties = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    assert properties["axion.threshold.per_user_tps.b2.pp16.tg8"].startswith(
        "pass: per_user_tps at batch 2 (pp16+tg8): ")
    assert properties["axion.threshold.prompt_tps.b1.pp32.tg0"].startswith("pass: ")
    assert properties["axion.capacity"] == "2"
    assert properties["axion.threshold.itl_ms.b2.pp16.tg8"].startswith("pass: itl_ms at batch 2 (pp16+tg8): ")
    assert properties["axion.threshold.itl_ms.b2.pp16.tg8"].endswith("<= 10000.0 ms (p99 of 16)")
    verdicts = {v["name"]: v for v in data["verdicts"]}
    assert verdicts["per_user_tps.b2.pp16.tg8"]["outcome"] == "pass" and data["schema_version"] == 11


@pytest.mark.parametrize("marker, expected", [
    ("axion_slo(prompt_tsp=50)", "*unknown axion_slo key(s) prompt_tsp; known: *"),
    ("axion_slo(gen_tps=-1)", "*gen_tps must be a positive number, got -1"),
    ("axion_slo(ttft_ms=100)", "*axion_slo(ttft_ms=...) but the test measured no ttft_ms: call axion.batched(...)"),
])
def test_marker_mistakes_fail_that_test_only_in_one_line(pytester, marker, expected):
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.{marker}
        def test_bad(axion):
            axion.prompt(16)

        def test_fine(axion):
            axion.prompt(16)
    """)
    result = pytester.runpytest(*FAST)
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 1 and outcomes.get("failed", 0) + outcomes.get("errors", 0) == 1
    result.stdout.fnmatch_lines([expected])
    assert "Traceback" not in result.stdout.str()


def test_reading_speed_in_words_per_minute_uses_the_tokenizer(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(*FAST, "--axion-reading-speed=238wpm")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*reading speed 238 wpm = *t/s at *tokens/word "
                                 "(SmolLM2-135M-Instruct.Q4_1 tokenizer; --axion-reading-speed)*"])


def test_bad_reading_speed_is_a_usage_error(pytester):
    result = pytester.runpytest("--axion-reading-speed=-5wpm")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --axion-reading-speed must be a positive speed*got '-5wpm'"])


def test_plots_are_drawn(pytester, tmp_path):
    pytester.makepyfile("""
        def test_curve(axion):
            axion.batched(n_prompt=16, n_gen=16, batch_sizes=[1, 2])
    """)
    result = pytester.runpytest(*FAST, f"--axion-plots={tmp_path / 'figs'}")
    result.assert_outcomes(passed=1)
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(
        f"{stem}.{ext}" for stem in ("fig1-prompt-encoding", "fig2-total-generation", "fig3-per-user-generation",
                                     "fig5-roofline")
        for ext in ("png", "svg"))


def test_progress_is_shown_while_measuring(pytester):
    pytester.makepyfile("def test_p(axion):\n    axion.prompt(16)\n")
    result = pytester.runpytest(*FAST)
    result.stdout.fnmatch_lines(["*axion: pp16: 2/2 repetitions*"])
    verbose = pytester.runpytest(*FAST, "-v")
    verbose.stdout.fnmatch_lines(["*axion: pp16: 1/2 repetitions*", "*axion: pp16: 2/2 repetitions*"])
