"""Efficiency through the plugin on the real model: figures in every report, and the promise, met and missed."""

import json
import xml.etree.ElementTree as ET

from pytest_axion.schemas import validate_report

FAST = ["--axion-slo", "--axion-repetitions=2", "--axion-confirm-spacing=0", "--axion-confirm=1"]


def test_efficiency_figures_and_promise(pytester, tmp_path, monkeypatch, contention_ignored):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))   # the limits are measured afresh here
    pytester.makepyfile("""
        import pytest

        @pytest.mark.axion_slo(efficiency={"gen_bandwidth": 0.001, "prompt_compute": 0.001})
        def test_uses_the_machine(axion):
            axion.prompt(64)
            axion.generate(16)

        @pytest.mark.axion_slo(efficiency={"gen_bandwidth": 1.0})
        def test_all_of_the_bandwidth(axion):
            axion.generate(16)
    """)
    report, junit = tmp_path / "r.json", tmp_path / "junit.xml"
    result = pytester.runpytest(*FAST, f"--axion-report={report}", f"--junitxml={junit}",
                                f"--axion-plots={tmp_path / 'figs'}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*fail: efficiency gen_bandwidth at tg16 x1: *% of the machine's read bandwidth (* of * GB/s: * steps/s x "
        "96.8 MB per step (weights 96.6 MB + KV 1 x 8 positions)) < 100%*",
        "machine limits (1 thread): read * GB/s over 92 MiB (the model's size), * GB/s over * MiB; float32 matmul * "
        "GFLOP/s (* s to measure); measured in this run",
        "model costs: 96.6 MB of weights per step (the embedding is also the output matrix, read whole); *",
        "*test_uses_the_machine*pp64*prompt compute*GFLOP/s*%*",
        "*test_uses_the_machine*tg16 x1*generation bandwidth*GB/s*%*",
    ])
    data = json.loads(report.read_text())
    validate_report(data)
    efficiency = data["efficiency"]
    assert efficiency["source"] == "measured in this run" and efficiency["limits"]["threads"] == 1
    kinds = sorted((f["kind"], f["nodeid"].rsplit("::", 1)[1]) for f in efficiency["figures"])
    assert kinds == [("gen_bandwidth", "test_all_of_the_bandwidth"), ("gen_bandwidth", "test_uses_the_machine"),
                     ("prompt_compute", "test_uses_the_machine")]
    assert all(0 < f["fraction"] < 1 for f in efficiency["figures"])
    outcomes = {(v["nodeid"].rsplit("::", 1)[1], v["name"]): v["outcome"] for v in data["verdicts"]}
    assert outcomes[("test_all_of_the_bandwidth", "gen_bandwidth.b1.pp0.tg16")] == "fail"
    assert outcomes[("test_uses_the_machine", "prompt_compute.b1.pp64.tg0")] == "pass"
    case = next(c for c in ET.parse(junit).iter("testcase") if c.get("name") == "test_uses_the_machine")
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["axion.efficiency.gen_bandwidth.b1.pp0.tg16"].startswith("pass: efficiency gen_bandwidth")
    assert " of " in properties["axion.efficiency_figure.prompt_compute.b1.pp64.tg0"]
    assert (tmp_path / "figs" / "fig5-roofline.png").stat().st_size > 10_000
    # the second run of the session reads the limits from the cache of this hardware id and thread count
    again = pytester.runpytest(*FAST, "-k", "uses_the_machine")
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(["machine limits (1 thread): *; cached, measured * UTC (*)"])


def test_efficiency_off_measures_nothing_and_says_so_for_a_promise(pytester):
    pytester.makepyfile("""
        import pytest

        def test_plain(axion):
            axion.prompt(32)

        @pytest.mark.axion_slo(efficiency={"gen_bandwidth": 0.1})
        def test_promised(axion):
            axion.generate(8)
    """)
    result = pytester.runpytest(*FAST, "--axion-efficiency=off")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_promised*axion_slo(efficiency=...) needs the machine's limits, which "
                                 "--axion-efficiency off turned off: use cached or fresh to check efficiency"])
    assert "machine limits" not in result.stdout.str()
