"""Verdict quality of the A/B upgrade gate (a benchmark, never run in CI).

Series of separate A/B sessions (`pytest --axion-slo --axion-ab-baseline A` run by interpreter B) over
the light suite (benchmarks/verdict_suite):

  aa        A = B = the same installation: every `regressed` verdict is a false alarm (target 0 of 20
            sessions); also the spread of the paired ratios next to unpaired ones on the same rounds
  slow      A = the normal build, B = a slower build of the same version: every session should fail
  replay    from the A/A rounds, B's samples scaled by a known slowdown s (0.80 .. 0.97): the share
            of measurements the gate calls `regressed`, i.e. the smallest slowdown caught; the next
            session's rounds of the same measurement stand in for the confirmation in fresh processes

    python benchmarks/ab_gate.py aa --python /work/venv/bin/python --sessions 20 --out aa.json
    python benchmarks/ab_gate.py slow --python /work/venvslow/bin/python --baseline /work/venv/bin/python \\
        --sessions 20 --out slow.json
    python benchmarks/ab_gate.py replay --from aa.json
    python benchmarks/ab_gate.py spread --from aa.json       # paired vs unpaired spread across sessions
    # on a proxy of Llama 3.3 70B, B a build without AVX-512 (pytest-axion installed in it too)
    python benchmarks/ab_gate.py slow --python /work/venv-noavx512/bin/python --baseline .venv/bin/python \\
        --sessions 1 --suite benchmarks/proxy_ab_suite --out noavx.json -- --axion-model proxy:llama-3.3-70b:4

Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_axion.promises.ab import compare_paired, spread_of_ratios, unpaired_ratios  # noqa: E402
from pytest_axion.records import Measurement  # noqa: E402

LIGHT = "benchmarks/verdict_suite"
SLOWDOWNS = (0.80, 0.85, 0.90, 0.93, 0.95, 0.97, 1.0)


_WORKLOAD = re.compile(r"(?:pp(\d+))?\+?(?:tg(\d+))?(?: x(\d+))?")   # pp64, tg16, pp16+tg8 x2


def ab_row(verdict: dict[str, Any]) -> dict[str, Any]:
    """One A/B verdict of a report: its final word (the last attempt's), each attempt's B/A, and the first
    attempt's samples of both sides (what ``replay`` scales)."""
    details = [reading["detail"] for reading in verdict["readings"]]
    first = details[0]
    shape = _WORKLOAD.fullmatch(first["workload"])
    assert shape is not None, first["workload"]
    n_prompt, n_gen, batch_size = (int(x or default) for x, default in zip(shape.groups(), (0, 0, 1), strict=True))
    return {"metric": first["metric"], "nodeid": first["nodeid"], "batch_size": batch_size, "n_prompt": n_prompt,
            "n_gen": n_gen, "outcome": verdict["outcome"], "verdict": details[-1]["verdict"],
            "attempt_ratios": [d["ratio"] for d in details], "a": first["baseline_samples"],
            "b": first["current_samples"]}


def session(python: str, baseline: str, report: Path, log: Path, extra: list[str],
            suite: str = LIGHT) -> dict[str, Any]:
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call([python, "-m", "pytest", "-p", "no:cacheprovider", "-q", suite, "--axion-slo",
                                "--axion-ab-baseline", baseline, "--axion-report", str(report), *extra],
                               cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    data = json.loads(report.read_text()) if report.exists() else {"verdicts": [], "ab": None}
    rows = [ab_row(v) for v in data["verdicts"] if v["kind"] == "ab"]
    verdicts = Counter(r["verdict"] for r in rows)
    throughput = [r for r in rows if r["metric"] in ("prompt_tps", "gen_tps")]
    return {"exit": code, "seconds": round(time.perf_counter() - start, 1), "verdicts": dict(verdicts),
            "ratios": {f"{r['metric']} {r['nodeid'].split('::')[-1]}": [round(x, 4) for x in r["attempt_ratios"]]
                       for r in throughput},
            "rows": rows,
            "sides": data.get("ab")}


def series(args: argparse.Namespace) -> None:
    record: dict[str, Any] = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                              "python_b": args.python, "python_a": args.baseline or args.python, "sessions": []}
    tmp = args.out.with_name(args.out.stem + "-sessions")   # every session's report and log kept
    tmp.mkdir(parents=True, exist_ok=True)
    for i in range(args.sessions):
        result = session(args.python, args.baseline or args.python, Path(tmp) / f"{i}.json",
                         Path(tmp) / f"{i}.log", args.pytest_args, args.suite)
        record["sessions"].append(result)
        print(f"[{args.phase} {i + 1}/{args.sessions}] exit {result['exit']} in {result['seconds']} s "
              f"{result['verdicts']} {result['ratios']}", flush=True)
        if result["exit"] not in (0, 1):
            print(Path(tmp, f"{i}.log").read_text()[-2000:], flush=True)
        time.sleep(args.gap)
    sessions = record["sessions"]
    record["summary"] = {
        "sessions": len(sessions),
        "sessions_with_regressed": sum(s["verdicts"].get("regressed", 0) > 0 for s in sessions),
        "sessions_failed": sum(s["exit"] == 1 for s in sessions),
        "verdicts": dict(sum((Counter(s["verdicts"]) for s in sessions), Counter())),
        "median_seconds": statistics.median(s["seconds"] for s in sessions),
    }
    record["summary"].update(spreads(sessions))
    if len(sessions) > 1:   # spreads across sessions need two
        record["summary"]["across_sessions"] = across_sessions(sessions)
    print(json.dumps(record["summary"], indent=1))
    args.out.write_text(json.dumps(record, indent=1) + "\n")


def measurements(row: dict[str, Any], scale: float = 1.0) -> tuple[Measurement, Measurement]:
    shape = (row["nodeid"], row["metric"], row["batch_size"], row["n_prompt"], row["n_gen"], 2)
    factor = scale if row["metric"] in ("prompt_tps", "gen_tps", "per_user_tps") else 1 / scale
    return Measurement(*shape, tuple(row["a"])), Measurement(*shape, tuple(v * factor for v in row["b"]))


def across_sessions(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """Per throughput measurement, over the sessions: the spread of the paired estimate B/A, next to the
    spread of B's median and of an unpaired comparison (B of one session / A of the session before,
    which is what a stored baseline gives)."""
    by_measurement: dict[str, list[tuple[float, float, float]]] = {}
    for s in sessions:
        for row in s["rows"]:
            if row["metric"] not in ("prompt_tps", "gen_tps"):
                continue
            a, b = measurements(row)
            paired = compare_paired(a, b, rounds=len(a.samples)).ratio
            key = f"{row['metric']} {row['nodeid'].split('::')[-1]}"
            by_measurement.setdefault(key, []).append((paired, b.median, a.median))
    table = {}
    for key, values in by_measurement.items():
        paired = [v[0] for v in values]
        b_levels = [v[1] for v in values]
        unpaired = [b / a for b, a in zip(b_levels[1:], [v[2] for v in values][:-1], strict=True)]
        table[key] = {"cv_paired_estimate": spread_of_ratios(paired), "cv_b_median": spread_of_ratios(b_levels),
                      "cv_unpaired_ratio": spread_of_ratios(unpaired),
                      "paired_range": [min(paired), max(paired)], "unpaired_range": [min(unpaired), max(unpaired)]}
    return table


def spreads(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, over throughput measurements, of the CV of paired ratios vs unpaired ratios vs one side."""
    paired, unpaired, side = [], [], []
    for s in sessions:
        for row in s["rows"]:
            if row["metric"] not in ("prompt_tps", "gen_tps"):
                continue
            a, b = measurements(row)
            rounds = len(a.samples)
            comparison = compare_paired(a, b, rounds=rounds)
            paired.append(spread_of_ratios(comparison.ratios))
            unpaired.append(spread_of_ratios(unpaired_ratios(a.samples, b.samples)))
            side.append(spread_of_ratios(list(b.samples)))
    if not paired:
        return {}
    return {"median_cv_paired_ratios": statistics.median(paired),
            "median_cv_unpaired_ratios": statistics.median(unpaired),
            "median_cv_one_side": statistics.median(side)}


def replay(args: argparse.Namespace) -> None:
    data = json.loads(args.source.read_text())
    tolerance = args.tolerance
    table = {}
    for scale in SLOWDOWNS:
        counts: Counter[str] = Counter()
        sessions_caught = 0
        sessions = data["sessions"]
        for index, s in enumerate(sessions):
            verdicts = []
            following = sessions[(index + 1) % len(sessions)]["rows"]
            for row, next_row in zip(s["rows"], following, strict=True):
                if row["metric"] not in ("prompt_tps", "gen_tps"):
                    continue
                a, b = measurements(row, scale)
                verdict = compare_paired(a, b, rounds=len(a.samples), tolerance=tolerance)
                if verdict.verdict == "regressed":
                    again_a, again_b = measurements(next_row, scale)
                    verdict = verdict.with_attempt(compare_paired(again_a, again_b, rounds=len(again_a.samples),
                                                                  tolerance=tolerance))
                verdicts.append(verdict.verdict)
            counts.update(verdicts)
            sessions_caught += "regressed" in verdicts
        total = sum(counts.values())
        table[f"{scale:.2f}"] = {"regressed_share": counts["regressed"] / total, "verdicts": dict(counts),
                                 "sessions_with_regressed": f"{sessions_caught}/{len(data['sessions'])}"}
        print(f"B/A {scale:.2f}: {counts['regressed'] / total:.0%} of {total} throughput measurements regressed, "
              f"sessions failing {sessions_caught}/{len(data['sessions'])}; {dict(counts)}")
    if args.out:
        args.out.write_text(json.dumps(table, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="phase", required=True)
    for name in ("aa", "slow"):
        p = sub.add_parser(name)
        p.add_argument("--python", required=True, help="interpreter B: runs pytest")
        p.add_argument("--baseline", default=None, help="interpreter A (default: B itself)")
        p.add_argument("--sessions", type=int, default=20)
        p.add_argument("--gap", type=float, default=5.0, help="seconds between sessions")
        p.add_argument("--suite", default=LIGHT, help=f"the tests each session runs (default {LIGHT})")
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("pytest_args", nargs="*")
    p = sub.add_parser("spread")
    p.add_argument("--from", dest="source", type=Path, required=True)
    p = sub.add_parser("replay")
    p.add_argument("--from", dest="source", type=Path, required=True)
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.phase == "replay":
        replay(args)
    elif args.phase == "spread":
        print(json.dumps(across_sessions(json.loads(args.source.read_text())["sessions"]), indent=1))
    else:
        series(args)


if __name__ == "__main__":
    main()
