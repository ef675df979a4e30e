"""Verdict quality of the baseline gate on a real, noisy machine (a benchmark, never run in CI).

Phases, each a series of separate `pytest --axion-slo` processes against one recorded baseline:

  baseline    `pytest-axion refresh --runs 3` over the light suite
  unchanged   the reference suite, unchanged code, default settings, spread over >= 30 minutes:
              every run that fails with a `regressed` verdict is a false alarm (target 0 of 20)
  unchanged   the light suite (three tests), unchanged code, default settings: every run that fails
              is a false alarm (target 0 of 20); every run with an inconclusive verdict would fail
              under --axion-strict (target at most 2 of 20)
  persistent  the light suite measured by a slowed build (``--axion-python`` = slowed_python.py: the
              worker stopped 25% of every 100 ms, a 0.75x slowdown of the measured process itself):
              every run should fail on the baseline (target at least 19 of 20)
  transient   the light suite with a busy process on one core during the first seconds of the run
              only: confirmation must make it pass or inconclusive, never a failure (target 0)
  contended   the light suite with a busy process for the whole run: other processes' work, not the
              build, so inconclusive, never a failure (a machine made busy is no evidence on the build)

    python benchmarks/verdicts.py --out verdicts.json                # everything (about 60 minutes)
    python benchmarks/verdicts.py --phases unchanged --runs 5        # one phase, fewer runs
    python benchmarks/verdicts.py --suite benchmarks/capacity_baseline_suite --slow-k test_capacity \
        --phases baseline,unchanged,persistent --runs 5 --slowdown-stop 0.5   # a capacity search against its baseline

Nothing else may run on the machine meanwhile (two measuring processes distort each other).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LIGHT = "benchmarks/verdict_suite"
USER = "benchmarks/user_suite"
BUSY_LOOP = "import time\nwhile True:\n    pass\n"


def pytest_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]


def run_suite(suite: str, baselines: Path, report: Path, extra: list[str], log: Path) -> dict[str, Any]:
    """One separate pytest process; returns exit code, verdict counts and first-attempt speedups."""
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(pytest_command(suite, "--axion-slo", "--axion-baselines", str(baselines),
                                              "--axion-report", str(report), *extra), cwd=ROOT, stdout=out,
                               stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    data = json.loads(report.read_text()) if report.exists() else {"verdicts": []}
    verdicts: Counter[str] = Counter()   # "<kind> <outcome>", every kind of promise
    speedups, attempts = [], []
    for verdict in data.get("verdicts", []):
        verdicts[f"{verdict['kind']} {verdict['outcome']}"] += 1
        detail = verdict["readings"][0]["detail"]
        if verdict["kind"] == "capacity_baseline":   # the bracket, then each level measured again
            attempts.append([r["figure"] for r in verdict["readings"]])
        if verdict["kind"] == "baseline" and "speedup" in detail:
            speedups.append(detail["speedup"])
            if len(verdict["readings"]) > 1:
                attempts.append([r["figure"] for r in verdict["readings"]])
    geo = math.exp(statistics.fmean(math.log(s) for s in speedups)) if speedups else None
    return {"exit": code, "seconds": round(seconds, 1), "verdicts": dict(verdicts), "geomean_speedup": geo,
            "min_speedup": min(speedups) if speedups else None, "confirmed_attempts": attempts, "log": str(log)}


def failed_by_regression(run: dict[str, Any]) -> bool:
    """Failed by the stored baseline: a measurement's, or a capacity search's (suite capacity_baseline_suite)."""
    return run["exit"] == 1 and (run["verdicts"].get("baseline fail", 0) + run["verdicts"].get(
        "capacity_baseline fail", 0)) > 0


def inconclusive(run: dict[str, Any]) -> bool:
    return any(key.endswith(" inconclusive") for key in run["verdicts"])


def slowed_interpreter(work: Path, stop: float) -> Path:
    """An executable 'python' whose workers run ``1 - stop`` as fast (benchmarks/slowed_python.py)."""
    script = work / f"slowed-python-{stop:g}"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {ROOT / 'benchmarks' / 'slowed_python.py'} --stop {stop} "
                      '-- "$@"\n')
    script.chmod(0o755)
    return script


class Background:
    """A competing process: started before a run, stopped after it (or after `seconds`)."""

    def __init__(self, script: str, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", script, *args])

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def phase_baseline(work: Path, runs: int, suite: str) -> None:
    code = subprocess.call([sys.executable, "-m", "pytest_axion.cli", "refresh", "--runs", str(runs), "--",
                            suite, "-p", "no:cacheprovider", "-q",
                            "--axion-baselines", str(work / "baselines")], cwd=ROOT)
    if code != 0:
        sys.exit(f"baseline refresh failed with exit code {code}")


def series(name: str, work: Path, count: int, suite: str, extra: list[str], *, gap_s: float,
           background: tuple[str, ...] | None = None, transient_s: float | None = None) -> list[dict[str, Any]]:
    results = []
    for i in range(count):
        competitor = Background(*background) if background else None
        stopper = None
        if competitor is not None and transient_s is not None:
            stopper = subprocess.Popen([sys.executable, "-c",
                                        f"import os,time,signal; time.sleep({transient_s}); "
                                        f"os.kill({competitor.process.pid}, signal.SIGKILL)"])
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        try:
            result = run_suite(suite, work / "baselines", work / f"{name}-{i}.json", extra,
                               work / f"{name}-{i}.log")
        finally:
            if competitor is not None:
                competitor.stop()
            if stopper is not None:
                stopper.wait()
        result["started"] = started
        results.append(result)
        flag = "FAIL(baseline)" if failed_by_regression(result) else f"exit {result['exit']}"
        print(f"[{name} {i + 1}/{count}] {started} {flag} in {result['seconds']} s, geomean speedup "
              f"{result['geomean_speedup'] or float('nan'):.3f}, verdicts {result['verdicts']}", flush=True)
        if i + 1 < count:
            time.sleep(gap_s)
    return results


def summary(name: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    failures = sum(failed_by_regression(r) for r in results)
    speedups = [r["geomean_speedup"] for r in results if r["geomean_speedup"]]
    verdicts: Counter[str] = Counter()
    for r in results:
        verdicts.update(r["verdicts"])
    return {"phase": name, "runs": len(results), "failed_by_regression": failures,
            "runs_with_inconclusive": sum(inconclusive(r) for r in results),
            "other_failures": sum(r["exit"] != 0 and not failed_by_regression(r) for r in results),
            "median_geomean_speedup": statistics.median(speedups) if speedups else None,
            "verdicts": dict(verdicts)}


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # so that `finally` stops the competing process


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", default="baseline,unchanged,persistent,transient")
    parser.add_argument("--runs", type=int, default=20,
                        help="runs per phase (transient and contended: half)")
    parser.add_argument("--work", type=Path, default=None, help="folder for baselines, reports, logs")
    parser.add_argument("--unchanged-gap", type=float, default=10.0, help="seconds between unchanged runs")
    parser.add_argument("--slow-confirm-spacing", type=float, default=5.0,
                        help="confirm spacing in the persistent and contended phases (the slowdown outlasts it)")
    parser.add_argument("--slow-k", default="test_prompt",
                        help="-k selection of the light suite for the slowdown phases (keeps 20 runs short)")
    parser.add_argument("--slowdown-stop", type=float, default=0.25,
                        help="persistent phase: fraction of every 100 ms the slowed build's worker is stopped")
    parser.add_argument("--transient-seconds", type=float, default=6.0,
                        help="the busy process runs this long from the start: over the first attempt only")
    parser.add_argument("--suite", default=LIGHT,
                        help=f"the suite every phase runs (default {LIGHT}; {USER}: issue 30's user-style suite)")
    parser.add_argument("--out", type=Path, default=Path("verdicts.json"))
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="axion-verdicts-"))
    work.mkdir(parents=True, exist_ok=True)
    phases = args.phases.split(",")
    record: dict[str, Any] = {"date": datetime.date.today().isoformat(), "machine": platform.processor()
                              or platform.machine(), "cpus": os.cpu_count(), "work": str(work), "phases": {}}
    print(f"work folder: {work}", flush=True)
    started = time.perf_counter()
    if "baseline" in phases:
        phase_baseline(work, 3, args.suite)
    slow = ["--axion-confirm-spacing", str(args.slow_confirm_spacing), "-k", args.slow_k]
    if "unchanged" in phases:
        results = series("unchanged", work, args.runs, args.suite, [], gap_s=args.unchanged_gap)
        record["phases"]["unchanged"] = {"summary": summary("unchanged", results), "runs": results}
    if "persistent" in phases:
        slowed = ["--axion-python", str(slowed_interpreter(work, args.slowdown_stop))]
        results = series("persistent", work, args.runs, args.suite, [*slow, *slowed], gap_s=5)
        record["phases"]["persistent"] = {"summary": summary("persistent", results), "runs": results}
    if "contended" in phases:
        results = series("contended", work, max(1, args.runs // 2), args.suite, slow, gap_s=5,
                         background=(BUSY_LOOP,))
        record["phases"]["contended"] = {"summary": summary("contended", results), "runs": results}
    if "transient" in phases:
        results = series("transient", work, max(1, args.runs // 2), args.suite,
                         ["--axion-confirm-spacing", "20", "-k", args.slow_k],
                         gap_s=5, background=(BUSY_LOOP,), transient_s=args.transient_seconds)
        record["phases"]["transient"] = {"summary": summary("transient", results), "runs": results}
    record["minutes"] = round((time.perf_counter() - started) / 60, 1)
    args.out.write_text(json.dumps(record, indent=1))
    for phase in record["phases"].values():
        print(json.dumps(phase["summary"]))
    print(f"total {record['minutes']} min; details in {args.out}")


if __name__ == "__main__":
    main()
