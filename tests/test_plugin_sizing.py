"""Prompt sizing in a real run: the rule by default, a measured sweep (cached) or a pinned number of tokens."""

import json

from pytest_axion.machine.sizing import fill_within_budget, gen_within_budget

PROMPT = """
def test_prompt(axion):
    axion.prompt(axion.fill_tokens, repetitions=2)
    print("gen_tokens", axion.gen_tokens(64))
"""
READS_THE_SIZE = """
def test_prompt(axion):
    assert axion.fill_tokens >= 16
    axion.prompt(16, repetitions=2)
"""
OPTIONS = ["--axion-slo", "--axion-efficiency=off", "--axion-confirm-spacing=1", "-p", "no:cacheprovider"]


def test_a_sweep_sizes_prompt_workloads_where_speed_levels_off_and_is_cached(pytester, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pytester.makepyfile(PROMPT)
    report = tmp_path / "r.json"
    result = pytester.runpytest(*OPTIONS, "--axion-prompt-sizing=sweep", f"--axion-report={report}")
    result.assert_outcomes(passed=1)
    sizing = json.loads(report.read_text())["settings"]["prompt_sizing"]
    tokens = [t for t, _ in sizing["points"]]
    assert tokens == [16, 32, 64, 128, 256, 512] and all(speed > 0 for _, speed in sizing["points"])
    fastest = max(speed for _, speed in sizing["points"])
    # the fewest tokens per call from which every larger call ran within 10% of the fastest (shortened if a call
    # of it would not fit 1/120 of the budget at the warm-up's speed), and the test measured with it
    slow = [t for t, speed in sizing["points"] if speed < 0.9 * fastest]
    swept = min((t for t, _ in sizing["points"] if not slow or t > max(slow)), default=512)
    assert sizing["fill_tokens"] == fill_within_budget(swept, sizing["tokens_per_s"], 120.0)
    (row,) = json.loads(report.read_text())["results"]
    assert row["n_prompt"] == sizing["fill_tokens"]
    result.stdout.fnmatch_lines([f"prompt sizing: {sizing['fill_tokens']} tokens per call (swept in this run*); "
                                 "prompt t/s by tokens per call 16: *, 512: *"])
    stored = [path for path in (tmp_path / "cache" / "pytest-axion" / "sizing").glob("*.json")
              if not path.name.endswith("-speed.json")]   # the sweep's file; the warm-up's speed has its own
    if "busy: not cached" in sizing["source"]:   # a busy machine (CI may be one): nothing stored, swept again
        assert stored == []
        return
    # the next session reads the sweep instead of measuring it again (its test measures a short prompt: the
    # header is what this run is for)
    [cached] = stored
    pytester.makepyfile(test_sizing_again=READS_THE_SIZE)
    result = pytester.runpytest(*OPTIONS, "--axion-prompt-sizing=sweep", "test_sizing_again.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"prompt sizing: {sizing['fill_tokens']} tokens per call (swept *, cached in "
                                 f"{cached}*"])


def test_the_rule_by_default_and_a_pinned_number_when_given(pytester, tmp_path):
    pytester.makepyfile(PROMPT)
    report = tmp_path / "r.json"
    result = pytester.runpytest(*OPTIONS, f"--axion-report={report}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["prompt sizing: * tokens per call (32 tokens per thread, at most one micro-batch)"])
    pinned = pytester.runpytest(*OPTIONS, "--axion-prompt-sizing=48", f"--axion-report={report}")
    pinned.assert_outcomes(passed=1)
    (row,) = json.loads(report.read_text())["results"]
    assert row["n_prompt"] == 48
    bad = pytester.runpytest(*OPTIONS, "--axion-prompt-sizing=lots")
    assert bad.ret == 4 and "--axion-prompt-sizing must be rule, sweep or a number of tokens" in bad.stderr.str()


def test_a_model_too_slow_for_its_budget_measures_shorter_calls_and_says_why(pytester, tmp_path, monkeypatch):
    # A 2 s budget makes the embedded model "slow": a call of the rule's 32 tokens a thread would take more than
    # 1/120 of it, as a 70B proxy's would of the default 120 s.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pytester.makepyfile(PROMPT)
    report = tmp_path / "r.json"
    result = pytester.runpytest(*OPTIONS, "-s", "--axion-budget=2", f"--axion-report={report}")
    result.assert_outcomes(passed=1)
    sizing = json.loads(report.read_text())["settings"]["prompt_sizing"]
    (row,) = json.loads(report.read_text())["results"]
    assert sizing["fill_tokens"] == row["n_prompt"] == 16
    # generation lengths follow the same speed: 64 where 64 prompt tokens fit 1/120 of the budget, else fewer
    fits = sizing["tokens_per_s"] * 2 / 120
    expected = gen_within_budget(64, sizing["tokens_per_s"], 2.0)
    assert expected == 64 if fits >= 64 else (expected == 8 or expected <= fits)
    result.stdout.fnmatch_lines([f"gen_tokens {expected}"])
    result.stdout.fnmatch_lines(["prompt sizing: 16 tokens per call (32 tokens per thread, at most one micro-batch, "
                                 "shortened from *: the model's prompt speed, * t/s (this run's warm-up*), fits about "
                                 "* tokens a call in 1/120 of the 2 s budget (--axion-budget))"])
