"""The README's quickstart suite passes on the embedded model, as a user runs it."""

import json
from pathlib import Path

from pytest_axion.report import validate_report

SUITE = Path(__file__).parent / "conformance"


def test_reference_suite_passes_with_axion_slo(pytester, tmp_path):
    report = tmp_path / "r.json"
    result = pytester.runpytest("--axion-slo", "--axion-repetitions=2", f"--axion-report={report}", str(SUITE))
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([
        "*axion performance*",
        "*test_every_user_reads_comfortably*per_user_tps*4*64*32*>= 5.00 t/s (reading)*pass*",
        "*test_every_user_reads_comfortably*per_user_tps*8*64*32*>= 5.00 t/s (reading)*info*",
        "capacity *test_every_user_reads_comfortably: * concurrent user(s) at reading speed 5 t/s (default)*",
    ])
    data = json.loads(report.read_text())
    validate_report(data)
    assert all(test["slo_passed"] for test in data["tests"])
    checked = {test["nodeid"].split("::")[1]: {check["group"] for check in test.get("shape", [])}
               for test in data["tests"]}
    assert "prompt_tps" in checked["test_prompt_encoding"]
    # steady_within={"gen_tps": ...}: the 8-token prompts of the generation test are not held to it
    assert checked["test_token_generation"] == {"gen_tps at batch 1", "gen_tps at batch 2", "gen_tps at batch 4",
                                                "gen_tps pp8+tg16", "gen_tps pp8+tg64"}


def test_reference_suite_skips_without_axion_slo(pytester):
    result = pytester.runpytest(str(SUITE))
    result.assert_outcomes(skipped=4)
