"""Under pytest-xdist: one measuring test at a time, one summary, report and refresh in the controller."""

import itertools
import json

FAST = ["--axion-slo", "--axion-repetitions=3", "--axion-threads=1", "--axion-confirm-spacing=1", "-p",
        "no:cacheprovider"]

SUITE = """
import pytest

@pytest.mark.axion_slo(prompt_tps=10)
def test_prompt(axion):
    axion.prompt(32)

@pytest.mark.axion_slo(gen_tps=5)
def test_generation(axion):
    axion.generate(16)

@pytest.mark.axion_slo(per_user_tps=1, max_batch=2)
def test_users(axion):
    axion.batched(n_prompt=16, n_gen=4, batch_sizes=[1, 2])

def test_plain_one():
    assert sum(range(1000)) == 499500

def test_plain_two():
    assert "axion".upper() == "AXION"
"""


def rows(path):
    report = json.loads(path.read_text())
    return ([(r["nodeid"], r["metric"], r["batch_size"], r["n_prompt"], r["n_gen"], len(r["samples"]))
             for r in report["results"]],
            sorted((t["nodeid"], t["outcome"], t["slo_passed"]) for t in report["tests"]))


INTERVALS = """
import glob, os, tempfile, time, pytest

@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    start = time.time()
    try:
        return (yield)
    finally:
        with open(os.path.join(os.environ["AXION_INTERVALS"], item.name), "w") as out:
            locks = len(glob.glob(os.path.join(tempfile.gettempdir(), "pytest-axion-*", "run-*")))
            out.write(f"{start} {time.time()} {os.getpid()} {locks}")
"""


def test_dash_n_2_gives_the_same_rows_as_a_run_without_xdist(pytester, monkeypatch, tmp_path):
    pytester.makepyfile(SUITE)
    plain = pytester.runpytest_subprocess(*FAST, "--axion-no-baselines", "--axion-report=plain.json")
    plain.assert_outcomes(passed=5)
    pytester.makeconftest(INTERVALS)
    monkeypatch.setenv("AXION_INTERVALS", str(tmp_path))
    locks = tmp_path / "tmp"
    locks.mkdir()
    monkeypatch.setenv("TMPDIR", str(locks))   # where the workers' run lock lives
    dist = pytester.runpytest_subprocess(*FAST, "--axion-no-baselines", "-n", "2", "--axion-report=dist.json")
    dist.assert_outcomes(passed=5)
    plain_rows, plain_tests = rows(pytester.path / "plain.json")
    dist_rows, dist_tests = rows(pytester.path / "dist.json")
    assert dist_tests == plain_tests and sorted(dist_rows) == sorted(plain_rows)
    out = dist.stdout.str()
    assert out.count("axion performance") == 1 and "report: dist.json" in out
    # no two measuring tests ran at the same time, on whichever workers they ran
    spans = sorted(tuple(map(float, (tmp_path / name).read_text().split()[:2]))
                   for name in ("test_prompt", "test_generation", "test_users"))
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans)), spans
    # the lock files existed while tests ran, and the controller deleted them at the end
    assert {(tmp_path / name).read_text().split()[3] for name in ("test_prompt", "test_users")} == {"2"}
    assert not list(locks.glob("pytest-axion-*/run-*"))
    [private] = locks.glob("pytest-axion-*")   # the run lock lived in this user's private folder
    assert private.stat().st_mode & 0o777 == 0o700


def test_a_refresh_under_xdist_writes_one_baseline_in_the_controller(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest_subprocess(*FAST, "-n", "2", "--axion-refresh-baselines", "--axion-runs=1",
                                           "--axion-force", "--axion-baselines=bl")
    result.assert_outcomes(passed=5)
    [written] = list((pytester.path / "bl").glob("*/*.json"))
    entries = json.loads(written.read_text())["entries"]
    assert len(entries) == 1 + 1 + 2 * 5
    assert result.stdout.str().count("baseline refresh: 1 run(s)") == 1


def test_dist_each_is_refused_because_every_worker_would_measure_at_once(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest_subprocess(*FAST, "-n", "2", "--dist", "each")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--dist each would run every measuring test on every worker*"])


def test_under_dash_n_2_the_prediction_covers_every_workers_rows(pytester, tmp_path, monkeypatch):
    """The controller predicts from all workers' measurements, not from the first worker's alone."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))   # the proxies, built once for both runs
    pytester.makepyfile("""
        def test_prompt(axion):
            axion.prompt(32)

        def test_generation(axion):
            axion.generate(8)
    """)
    proxy = ["--axion-slo", "--axion-repetitions=3", "--axion-threads=1", "--axion-efficiency=off",
             "--axion-no-baselines", "-p", "no:cacheprovider"]
    two = pytester.runpytest_subprocess(*proxy, "--axion-model=proxy:smollm2-135m:2", "--axion-report=2L.json")
    two.assert_outcomes(passed=2)
    four = pytester.runpytest_subprocess(*proxy, "--axion-model=proxy:smollm2-135m:4", "-n", "2",
                                         "--axion-report=4L.json", "--axion-predict-from=2L.json")
    four.assert_outcomes(passed=2)
    predicted = json.loads((pytester.path / "4L.json").read_text())["prediction"]
    assert predicted["problem"] is None and predicted["from_layers"] == [2, 4]
    # a row for each worker's test; a value where the fit gives one (on a busy VM, 4 layers' tg8 can come out as fast
    # as 2 layers', and a row without a positive per-layer cost says so instead of predicting)
    assert {(row["nodeid"].split("::")[1], row["metric"]) for row in predicted["rows"]} == \
        {("test_prompt", "prompt_tps"), ("test_generation", "gen_tps")}
    assert any(row["value"] for row in predicted["rows"])
    assert four.stdout.str().count("prediction for smollm2-135m (30 layers)") == 1
