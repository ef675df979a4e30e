"""--axion-replay REPORT: a recorded run judged again by the promises, the baselines and the reports, without
measuring (issue 28 item 5). The recording is a 16-thread run of the reference suite (tests/data/many-core);
that replaying a run measured here gives back its verdicts is tested in test_conformance_suite.py."""

import importlib
import json

import pytest

from tests.replay import MANY_CORE, recorded_cells, store_baseline

# Cells the 16-thread recording holds, each at least 512 tokens per call (its fill size).
SIZED = """
import pytest

@pytest.mark.axion_slo(prompt_tps=50, steady_within={"prompt_tps": 0.25})
def test_prompt(axion):
    assert axion.fill_tokens == 512 and axion.threads == 16
    axion.batched(n_prompt=128, n_gen=1, batch_sizes=[4])
    axion.batched(n_prompt=256, n_gen=4, batch_sizes=[2])

@pytest.mark.axion_slo(per_user_tps="reading", max_batch=8)
def test_users(axion):
    axion.batched(n_prompt=64, n_gen=32, batch_sizes=[1, 2, 4, 8])
"""
REPLAY = ["--axion-slo", f"--axion-replay={MANY_CORE}", "--axion-confirm-spacing=0", "-p", "no:cacheprovider"]
HARDWARE = "x86_64-icelake-16c-d338d0dc"


@pytest.fixture
def no_worker(monkeypatch):
    """A replay starts no llama.cpp worker: any attempt to is a failure of the test."""
    deployment = importlib.import_module("pytest_axion.engines.deployment")

    def refuse(*_args, **_kwargs):
        raise AssertionError("a replay started a worker")
    monkeypatch.setattr(deployment, "EngineProcess", refuse)


def test_a_replayed_report_is_judged_again_on_its_machine_and_says_nothing_was_measured(pytester, no_worker):
    pytester.makepyfile(SIZED)
    result = pytester.runpytest(*REPLAY, "--axion-no-baselines", "--axion-report=r.json", "--axion-markdown=r.md")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        f"axion: model SmolLM2-135M-Instruct.Q4_1, hardware {HARDWARE}, 16 threads, replaying {MANY_CORE} (nothing "
        "is measured); no stored baselines",
        f"replay of {MANY_CORE}: its samples judged again, nothing measured in this run; recorded with "
        "llama-cpp-python 0.3.36, threads 16"])
    report = json.loads((pytester.path / "r.json").read_text())
    assert report["deployment"] == "replay" and report["replay_of"] == str(MANY_CORE)
    assert report["hardware"]["hardware_id"] == HARDWARE and report["settings"]["threads"] == 16
    cells = recorded_cells(MANY_CORE)
    for row in report["results"]:
        assert row["samples"] == cells[(row["n_prompt"], row["n_gen"], row["batch_size"])][row["metric"]]
    assert {(r["n_prompt"], r["batch_size"]) for r in report["results"]} == {(128, 4), (256, 2), (64, 1), (64, 2),
                                                                             (64, 4), (64, 8)}
    assert "replay of" in (pytester.path / "r.md").read_text()


def test_a_promise_the_recording_misses_fails_on_replay_judged_once(pytester, no_worker):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.axion_slo(prompt_tps=100000)
        def test_prompt(axion):
            axion.batched(n_prompt=128, n_gen=1, batch_sizes=[4])
    """)
    result = pytester.runpytest(*REPLAY, "--axion-no-baselines")
    result.assert_outcomes(failed=1)
    # judged once: a replay has only what was recorded, and the same samples again would confirm nothing
    result.stdout.fnmatch_lines(["fail: prompt_tps at batch 4 (pp128+tg1): 6256.6 t/s < 100000.0 t/s (median of 5)"])
    assert "attempt" not in result.stdout.str()


def test_a_replay_against_a_faster_baseline_is_a_regression_and_against_its_own_figures_passes(pytester,
                                                                                             no_worker):
    pytester.makepyfile(SIZED)
    first = pytester.runpytest(*REPLAY, "--axion-no-baselines", "--axion-report=first.json")
    first.assert_outcomes(passed=2)
    faster = store_baseline(pytester.path / "first.json", pytester.path / "baselines", scale=1.3)
    assert faster.parent.name == HARDWARE
    regressed = pytester.runpytest(*REPLAY)
    regressed.assert_outcomes(failed=2)
    regressed.stdout.fnmatch_lines(["*regressed*"])
    store_baseline(pytester.path / "first.json", pytester.path / "baselines", scale=1.0)
    pytester.runpytest(*REPLAY).assert_outcomes(passed=2)


def test_a_workload_the_recording_lacks_fails_that_test_naming_the_report(pytester, no_worker):
    pytester.makepyfile("""
        def test_odd(axion):
            axion.batched(n_prompt=3, n_gen=1, batch_sizes=[1])

        def test_recorded(axion):
            axion.batched(n_prompt=128, n_gen=1, batch_sizes=[1])
    """)
    result = pytester.runpytest(*REPLAY, "--axion-no-baselines")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"*{MANY_CORE} holds no pp3+tg1 x1 workload: replay a report of the tests being "
                                 "run, with the same workload sizes*"])


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist: pass a --axion-report file"),
    ("{not json", "is not readable JSON"),
    ('{"entries": {}}', "is not a pytest-axion report: pass a --axion-report file"),
    ('{"results": []}', "violates the report schema: 'schema_version' is a required property"),
])
def test_a_bad_replay_file_is_a_one_line_usage_error_naming_it(pytester, content, message):
    path = pytester.path / "recorded.json"
    if content is not None:
        path.write_text(content)
    pytester.makepyfile("def test_x(axion):\n    axion.prompt(8)\n")
    result = pytester.runpytest("--axion-slo", f"--axion-replay={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --axion-replay: {path} {message}*"])


def test_a_capacity_search_ends_where_the_recording_ends(pytester, no_worker):
    # 5 recorded repetitions of one user are 5 requests: enough to decide at attainment 0.5 (4), not at 0.9 (35)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.axion_slo(per_user_tps="reading")
        def test_users(axion):
            axion.capacity(n_prompt=64, n_gen=32, batch_sizes=[1, 2, 4, 8], attainment=0.5)

        @pytest.mark.axion_slo(per_user_tps="reading")
        def test_strict(axion):
            axion.capacity(n_prompt=64, n_gen=32, batch_sizes=[1, 2, 4, 8])
    """)
    result = pytester.runpytest(*REPLAY, "--axion-no-baselines")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "capacity *test_users: at least 8 concurrent user(s) with 50% of requests at per-user speed >= reading speed "
        "5 t/s (default); stopped by the replayed recording, which holds no 16-user cell; goodput at 8 users * "
        "requests/s (* tokens/s) (levels measured: 1, 2, 4, 8)",
        "capacity *test_strict: 0 concurrent user(s) with 90% of requests at per-user speed >= reading speed 5 t/s "
        "(default); 1 inconclusive (5 of 5 requests met every promise, 95% interval 57%-100%); stopped by the "
        "replayed recording: 1 users got 5 of the 35 observations a level needs to be met at 90% (levels measured: "
        "1?, 2?, 4?, 8?)"])


def test_a_replay_under_xdist_reports_what_one_process_reports(pytester):
    pytester.makepyfile(test_a=SIZED, test_b="""
        import pytest

        @pytest.mark.axion_slo(per_user_tps="reading")
        def test_search(axion):
            axion.capacity(n_prompt=64, n_gen=32, batch_sizes=[1, 2, 4, 8])
    """)
    alone = pytester.runpytest(*REPLAY, "--axion-no-baselines", "--axion-report=alone.json")
    alone.assert_outcomes(passed=3)
    # the workers' runs cross to the controller as builtin types (pytest_axion.transport), never pickled
    spread = pytester.runpytest_subprocess(*REPLAY, "--axion-no-baselines", "--axion-report=spread.json", "-n", "2")
    spread.assert_outcomes(passed=3)
    one, two = (json.loads((pytester.path / name).read_text()) for name in ("alone.json", "spread.json"))

    def rows(report):
        return sorted(json.dumps(row, sort_keys=True) for row in report["results"])

    def verdicts(report):
        return sorted(json.dumps(v, sort_keys=True) for v in report["verdicts"])
    assert rows(one) == rows(two) and verdicts(one) == verdicts(two)
    assert sorted(json.dumps(t, sort_keys=True) for t in one["tests"]) == sorted(json.dumps(t, sort_keys=True)
                                                                                for t in two["tests"])
    assert two["deployment"] == "replay" and any(test["capacity_search"] for test in two["tests"])


def test_a_capacity_search_whose_own_batch_sizes_were_not_recorded_fails_in_one_line(pytester, no_worker):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.axion_slo(per_user_tps="reading")
        def test_users(axion):
            axion.capacity(n_prompt=64, n_gen=32, batch_sizes=[3])
    """)
    result = pytester.runpytest(*REPLAY, "--axion-no-baselines")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_users*holds no pp64+tg32 x3 workload*"])
    assert "Traceback" not in result.stdout.str() and "NotRecorded" not in result.stdout.str()
