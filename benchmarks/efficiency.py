"""Efficiency: the limits against an independent tool, and the promise against a build without SIMD kernels.

1. Bandwidth check: the plugin's ``copy`` kernel with one thread over 512 MiB
   (``pytest_axion.machine.limits``) against ``perf bench mem memcpy -s 512MB`` (glibc memcpy, one thread),
   interleaved, ``--rounds`` times. perf prints bytes copied per second in units of 2^30; the plugin
   counts bytes read plus bytes written (STREAM's convention), so perf's figure is doubled.
2. The promise: ``benchmarks/efficiency_suite`` (generation bandwidth, prompt compute) run in separate
   pytest sessions with no baseline, alternating the normal build and ``--slow-python`` (a venv whose
   llama-cpp-python was built without its SIMD kernels, see BENCHMARKS.md), ``--sessions`` each.

    python benchmarks/efficiency.py --rounds 5 --sessions 3 --slow-python /tmp/venv-avx/bin/python
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_axion.machine.limits import measure_in_subprocess

SUITE = Path(__file__).resolve().parent / "efficiency_suite"
MIB = 1 << 20


def perf_memcpy_gbs(size_mib: int) -> float:
    done = subprocess.run(["perf", "bench", "mem", "memcpy", "-s", f"{size_mib}MB", "-l", "5", "-f", "default"],
                          capture_output=True, text=True, check=True)
    match = re.search(r"([\d.]+) GB/sec", done.stdout)
    if match is None:
        sys.exit(f"perf bench printed no GB/sec: {done.stdout}{done.stderr}")
    return float(match.group(1)) * (1 << 30) / 1e9 * 2   # bytes copied per s (2^30 units) -> read + written


def bandwidth_check(rounds: int, size_mib: int) -> None:
    ours, ours_median, perf = [], [], []
    for i in range(rounds):
        order = ("ours", "perf") if i % 2 == 0 else ("perf", "ours")
        for side in order:
            if side == "ours":
                limits = measure_in_subprocess(1, size_mib * MIB, budget_s=1.0)
                ours.append(limits.model.best_gbs["copy"])
                ours_median.append(limits.model.median_gbs["copy"])
            else:
                perf.append(perf_memcpy_gbs(size_mib))
        print(f"round {i + 1}: plugin copy {ours[-1]:.2f} GB/s, perf memcpy x2 {perf[-1]:.2f} GB/s", file=sys.stderr)
    ratio = statistics.median(ours) / statistics.median(perf)
    print(f"bandwidth, 1 thread, {size_mib} MiB: plugin copy (best repetition, as the roofs use) median "
          f"{statistics.median(ours):.2f} GB/s ({min(ours):.2f}-{max(ours):.2f}), its repetitions' median "
          f"{statistics.median(ours_median):.2f} GB/s; perf bench mem memcpy x2 median {statistics.median(perf):.2f} "
          f"GB/s ({min(perf):.2f}-{max(perf):.2f}); ratio best/perf {ratio:.3f}, median/perf "
          f"{statistics.median(ours_median) / statistics.median(perf):.3f}")


def session(python: str | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "r.json"
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(SUITE), "--axion-slo",
                   "--axion-no-baselines", "--axion-confirm-spacing=20", f"--axion-report={report}"]
        if python:
            command.append(f"--axion-python={python}")
        done = subprocess.run(command, capture_output=True, text=True, cwd=folder)
        data = json.loads(report.read_text()) if report.exists() else {}
    figures = {f["kind"]: round(f["fraction"], 3) for f in (data.get("efficiency") or {}).get("figures", [])}
    outcomes = {v["name"]: v["outcome"] for v in data.get("verdicts", [])}
    tps = {r["metric"]: round(r["median"], 1) for r in data.get("results", [])}
    return {"exit": done.returncode, "figures": figures, "outcomes": outcomes, "tokens_per_s": tps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--slow-python", default=None, help="python of a venv with a llama.cpp built without SIMD")
    args = parser.parse_args()
    bandwidth_check(args.rounds, args.size_mib)
    if args.slow_python is None:
        return
    for i in range(args.sessions):
        for name, python in (("normal", None), ("no SIMD", args.slow_python))[:: 1 if i % 2 == 0 else -1]:
            result = session(python)
            print(f"session {i + 1} {name}: exit {result['exit']}, fractions {result['figures']}, "
                  f"outcomes {result['outcomes']}, tokens/s {result['tokens_per_s']}", flush=True)


if __name__ == "__main__":
    main()
