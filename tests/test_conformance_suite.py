"""The README's quickstart suite passes on the embedded model, as a user runs it."""

import json
from pathlib import Path

import pytest

from pytest_axion.schemas import validate_report
from tests.replay import MANY_CORE, TWO_THREADS, recorded_cells, replay

SUITE = Path(__file__).parent / "conformance"


@pytest.mark.user_threads
def test_reference_suite_passes_with_axion_slo(pytester, tmp_path):
    report = tmp_path / "r.json"
    # a short confirmation pause: a steadiness miss on a busy CI machine is confirmed in seconds, not minutes.
    # The prompt test is left out here: its steadiness (64-token calls at 2 threads) missed on unchanged code on
    # the 2-vCPU Intel VMs in 2 of 3 runs (spreads 26-52%): sizing prompts from a measured sweep (issue 26,
    # item 4) is the fix. Its promises are replayed on recorded figures below, and measured for real in
    # tests/test_plugin_shape.py. The capacity search gets 20 s beyond its first levels, not 120: the README's
    # quickstart, timed in a fresh clone, runs it with the default.
    # It runs at the user's default threads (user_threads), not at the one thread of the other tests that measure:
    # at one thread SmolLM2-135M's total generation does not rise with batch size on a 2-core Zen 5 VM (batch 1,
    # 2, 4: 143, 114, 136 t/s), and the suite rightly fails there.
    result = pytester.runpytest("--axion-slo", "--axion-repetitions=2", "--axion-confirm-spacing=5",
                                "--axion-capacity-budget=20",
                                f"--axion-report={report}", "-k", "not test_prompt_encoding", str(SUITE))
    result.assert_outcomes(passed=3, deselected=1)
    result.stdout.fnmatch_lines([
        "*axion performance*",
        "*test_every_user_reads_comfortably*per_user_tps*4*16*16*>= 5.00 t/s (reading)*pass*",
        "*test_every_user_reads_comfortably*per_user_tps*8*16*16*>= 5.00 t/s (reading)*info*",
        "capacity *test_every_user_reads_comfortably: * concurrent user(s) with 90% of requests at per-user speed >= "
        "reading speed 5 t/s (default), TTFT <= 2 s*",
    ])
    data = json.loads(report.read_text())
    validate_report(data)
    assert all(test["slo_passed"] for test in data["tests"])
    checked: dict[str, set[str]] = {}
    for verdict in data["verdicts"]:
        if verdict["kind"] in ("steady", "scaling"):
            checked.setdefault(verdict["nodeid"].split("::")[1], set()).add(verdict["label"])
    # steady_within={"gen_tps": ...}: the 8-token prompts of the generation test are not held to it
    assert checked["test_token_generation"] == {"gen_tps at batch 1", "gen_tps at batch 2", "gen_tps at batch 4",
                                                "gen_tps pp8+tg16", "gen_tps pp8+tg64"}

    # Replayed (--axion-replay), the run's own report gives back its samples and its verdicts, measuring nothing.
    again = tmp_path / "again.json"
    pytester.runpytest("--axion-slo", f"--axion-replay={report}", f"--axion-report={again}", "-k",
                       "not test_prompt_encoding", str(SUITE))
    replayed_data = json.loads(again.read_text())
    assert replayed_data["deployment"] == "replay" and data["deployment"] == "in process"

    def figures(run):
        return sorted((r["nodeid"], r["metric"], r["batch_size"], r["n_prompt"], r["n_gen"], r["samples"])
                      for r in run["results"])
    assert figures(replayed_data) == figures(data)
    # A report keeps each workload's first attempt; a verdict the run settled in its first attempt comes back as it
    # was (one settled by a confirming attempt is judged on the first attempt alone, as docs/replay.md says).
    replayed_verdicts = {(v["nodeid"], v["kind"], v["name"]): v for v in replayed_data["verdicts"]}
    first_attempt = [v for v in data["verdicts"] if len(v["readings"]) == 1]
    assert first_attempt and all(replayed_verdicts[(v["nodeid"], v["kind"], v["name"])]["outcome"] == v["outcome"]
                                 for v in first_attempt)
    assert len(replayed_verdicts) == len(data["verdicts"])


def test_reference_suite_skips_without_axion_slo(pytester):
    result = pytester.runpytest(str(SUITE))
    result.assert_outcomes(skipped=4)


# -- the suite's promises replayed on recorded figures (tests/replay.py) ---------------------------------

REPLAY = ["--axion-slo", "--axion-no-baselines", "--axion-confirm-spacing=0", "-p", "no:cacheprovider"]


def test_the_suite_replayed_at_two_threads_passes_with_its_capacity_bracket(pytester, monkeypatch, tmp_path):
    replay(monkeypatch, TWO_THREADS)
    result = pytester.runpytest(*REPLAY, "--axion-threads=2", f"--axion-plots={tmp_path}", str(SUITE))
    result.assert_outcomes(passed=4)
    assert {p.name for p in tmp_path.glob("fig6-*")} == {"fig6-capacity-test_every_user_reads_comfortably.png",
                                                        "fig6-capacity-test_every_user_reads_comfortably.svg"}
    # in process each level takes 35 repetitions (a repetition's users share every step: one observation); on 2
    # threads the recorded run's budget ended at 8 users, and the replay ends where the recording does
    result.stdout.fnmatch_lines([
        "capacity *test_every_user_reads_comfortably: at least 8 concurrent user(s) with 90% of requests at per-user "
        "speed >= reading speed 5 t/s (default), TTFT <= 2 s; stopped by the replayed recording, which holds no "
        "16-user cell; goodput at 8 users * requests/s (* tokens/s) (levels measured: 1, 2, 4, 8)"])


def test_a_build_whose_generation_does_not_scale_fails_the_suite(pytester, monkeypatch):
    def flat(cell, samples):
        n_prompt, n_gen, batch = cell
        if n_prompt != 8 or batch == 1:
            return samples
        return {**samples, "gen_tps": recorded_cells(TWO_THREADS)[(8, n_gen, 1)]["gen_tps"]}
    replay(monkeypatch, TWO_THREADS, flat)
    result = pytester.runpytest(*REPLAY, "--axion-threads=2", str(SUITE))
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*_ test_token_generation _*",
                                 "fail: gen_tps does not scale: * is 1.00x batch 1 * < 1.15x *; "
                                 "attempts 1.00x, 1.00x, 1.00x; missed in every attempt"])


def test_a_build_with_one_slow_prompt_cell_fails_steadiness_without_the_saturation_excuse(pytester, monkeypatch):
    def uneven(cell, samples):
        return {**samples, "prompt_tps": [v / 2 for v in samples["prompt_tps"]]} if cell == (64, 1, 2) else samples
    replay(monkeypatch, TWO_THREADS, uneven)
    result = pytester.runpytest(*REPLAY, "--axion-threads=2", str(SUITE))
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*_ test_prompt_encoding _*",
                                 "fail: prompt_tps not steady: * t/s at pp 64 batch 2 vs * (spread *% > "
                                 "25%); attempts *; missed in every attempt"])
    assert "still rising" not in result.stdout.str()


UNSIZED_PROMPT_TEST = """
import pytest

@pytest.mark.axion_slo(prompt_tps=50, steady_within=0.25)
def test_prompt_encoding(axion):
    for n_prompt in (32, 128):   # the suite's sizes before they followed the machine
        axion.batched(n_prompt=n_prompt, n_gen=1, batch_sizes=[1, 2, 3, 4])
"""
SIZED_CELLS_TEST = """
import pytest

@pytest.mark.axion_slo(prompt_tps=50, steady_within={"prompt_tps": 0.25})
def test_filled_cells(axion):
    # Every recorded 16-core cell of at least axion.fill_tokens (512) tokens per call.
    assert axion.fill_tokens == 512
    axion.batched(n_prompt=128, n_gen=1, batch_sizes=[4])
    axion.batched(n_prompt=64, n_gen=32, batch_sizes=[8])
    axion.batched(n_prompt=256, n_gen=4, batch_sizes=[2])
"""


def test_sixteen_cores_replayed_an_unsaturated_machine_is_explained_and_sized_cells_keep_the_promise(
        pytester, monkeypatch):
    replay(monkeypatch, MANY_CORE)
    pytester.makepyfile(test_unsized=UNSIZED_PROMPT_TEST, test_sized=SIZED_CELLS_TEST)
    result = pytester.runpytest(*REPLAY, "--axion-threads=16")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*_ test_prompt_encoding _*",
        "fail: prompt_tps not steady: prompt speed still rising with "
        "tokens per batch: 1778.5 t/s at 32 -> 6256.6 t/s at 512; below about 512 tokens this machine is not saturated "
        "(spread 124% > 25%; size prompts x users to at least 32 tokens per thread); attempts spread 124%, spread "
        "124%, spread 124%; missed in every attempt"])
    result.stdout.fnmatch_lines(["*test_sized.py::test_filled_cells*prompt_tps*spread 17%*pass*512 tokens*",
                                 "*test_unsized.py::test_prompt_encoding*prompt_tps*spread 124%*fail*512 tokens*"])
