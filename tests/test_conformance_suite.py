"""The README's quickstart suite passes on the embedded model, as a user runs it."""

from pathlib import Path

SUITE = Path(__file__).parent / "conformance"


def test_reference_suite_passes_with_axion_slo(pytester):
    result = pytester.runpytest("--axion-slo", "--axion-repetitions=2", str(SUITE))
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*axion performance*", "*test_concurrent_users*per_user_tps*8*"])


def test_reference_suite_skips_without_axion_slo(pytester):
    result = pytester.runpytest(str(SUITE))
    result.assert_outcomes(skipped=3)
