"""Served deployments (llama-server) measured by the plugin: a benchmark, never run in CI.

  compare   the same model, threads and users served by llama-server (4 slots) and run in process,
            alternating round by round (ABBA) at batch 1, 2 and 4: per-user speed, total speed, TTFT
  aa        A/A: separate pytest sessions, each starting its own 4-slot server (B, --axion-serve 4) and
            pairing it with a second, identical 4-slot server (A, --axion-ab-endpoint): every failed session
            is a false alarm
  worse     the same, with B deliberately worse (--slots 1: users queue; or --threads 1): every session
            should fail
  suite     the reference suite's user promises (reading speed up to 4 users, TTFT p90 <= 2 s) against a
            4-slot server started by the session (--axion-serve 4)

    python benchmarks/served.py compare --rounds 10 --out compare.json
    python benchmarks/served.py aa --sessions 10 --out aa.json
    python benchmarks/served.py worse --slots 1 --sessions 5 --out worse-slots.json
    python benchmarks/served.py worse --threads 1 --sessions 5 --out worse-threads.json
    python benchmarks/served.py suite --out suite.json

Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_axion.engines.endpoint import EndpointEngine  # noqa: E402
from pytest_axion.engines.paired import PairedEngine  # noqa: E402
from pytest_axion.engines.worker import EngineProcess  # noqa: E402
from pytest_axion.machine.model import embedded_model_path  # noqa: E402
from pytest_axion.records import measurements_of  # noqa: E402
from pytest_axion.serve.build import SERVER, build_programs  # noqa: E402
from pytest_axion.serve.llama_server import LlamaServer  # noqa: E402

SUITE = "benchmarks/served_suite"
THREADS = 2


def server(slots: int, threads: int = THREADS) -> LlamaServer:
    binary = build_programs((SERVER,))[SERVER]
    # as --axion-serve starts it (context per slot included), so that an A/A pairs two identical servers
    return LlamaServer(binary, str(embedded_model_path()), threads=threads, slots=slots)


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """A = in process, B = served, one repetition each per round, ABBA."""
    table: dict[str, Any] = {}
    with server(4) as served:
        paired = PairedEngine(lambda: EngineProcess(sys.executable, model_path=str(embedded_model_path()),
                                                    threads=THREADS),
                              lambda: EndpointEngine(served.url, api_key=served.api_key), rounds=args.rounds)
        try:
            paired.warm_up(64)
            for batch in (1, 2, 4):
                run = paired.measure_pair("batched", n_prompt=args.n_prompt, n_gen=args.n_gen, batch_size=batch)
                local = measurements_of(run.baseline, nodeid="in-process", threads=THREADS)
                remote = measurements_of(run.current, nodeid="served", threads=THREADS)
                row = {metric: {"in_process": local[metric].median, "served": remote[metric].median,
                                "served_over_in_process": remote[metric].median / local[metric].median}
                       for metric in ("per_user_tps", "gen_tps", "ttft_ms", "itl_ms") if metric in remote}
                row["client_lag_ms"] = max(r.client_lag_ms for r in run.current_rounds)  # type: ignore[union-attr]
                table[f"B={batch}"] = row
                print(f"B={batch}: " + ", ".join(f"{m} {v['in_process']:.1f} vs {v['served']:.1f} "
                                                  f"({v['served_over_in_process']:.3f}x)"
                                                  for m, v in row.items() if isinstance(v, dict)), flush=True)
        finally:
            paired.close()
    return table


def session(extra: list[str], report: Path, log: Path, tests: str = SUITE) -> dict[str, Any]:
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", tests, "--axion-slo",
                                "--axion-efficiency=off", f"--axion-report={report}", *extra],
                               cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    data = json.loads(report.read_text()) if report.exists() else {"verdicts": []}
    paired = [v for v in data.get("verdicts", []) if v["kind"] == "ab"]
    return {"exit": code, "seconds": round(time.perf_counter() - start, 1),
            "outcomes": dict(Counter(v["outcome"] for v in data.get("verdicts", []))),
            "ab": {v["name"].split("::", 1)[1]: {"ratio": v["readings"][0]["detail"]["ratio"],
                                                  "interval": v["readings"][0]["detail"]["interval"],
                                                  "verdicts": [r["detail"]["verdict"] for r in v["readings"]]}
                   for v in paired},
            "served": data.get("served"), "failures": [v["message"] for v in data.get("verdicts", [])
                                                       if v["outcome"] != "pass"][:6]}


def sessions(args: argparse.Namespace, b_slots: int, b_threads: int) -> dict[str, Any]:
    results = []
    with server(4) as a, tempfile.TemporaryDirectory() as tmp:
        for i in range(args.sessions):
            result = session([f"--axion-serve={b_slots}", f"--axion-threads={b_threads}",
                              f"--axion-ab-endpoint={a.url}"], Path(tmp) / f"{i}.json", Path(tmp) / f"{i}.log")
            results.append(result)
            ratios = {k.split("::")[0] + " " + k.split("::")[1]: round(v["ratio"], 3) for k, v in result["ab"].items()}
            print(f"[{args.phase} {i + 1}/{args.sessions}] exit {result['exit']} in {result['seconds']} s "
                  f"{result['outcomes']} {ratios}", flush=True)
            if result["exit"] not in (0, 1):
                print(Path(tmp, f"{i}.log").read_text()[-2000:], flush=True)
    return {"b_slots": b_slots, "b_threads": b_threads, "sessions": results,
            "summary": {"sessions": len(results), "passed": sum(r["exit"] == 0 for r in results),
                        "failed": sum(r["exit"] == 1 for r in results),
                        "median_seconds": statistics.median(r["seconds"] for r in results)}}


def suite(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        result = session(["--axion-serve=4", "-k", "reads_comfortably or first_token"], Path(tmp) / "r.json",
                         Path(tmp) / "log", tests="tests/conformance")
        report = json.loads(Path(tmp, "r.json").read_text())
        print(Path(tmp, "log").read_text()[-4000:])
    cells = {f"{r['nodeid'].split('::')[-1]} {r['metric']} B={r['batch_size']}": r["median"]
             for r in report["results"] if r["metric"] in ("per_user_tps", "ttft_ms")}
    return {**result, "capacity": {t["nodeid"].split("::")[-1]: t["capacity"] for t in report["tests"]
                                   if t["capacity"]}, "cells": cells}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="phase", required=True)
    p = sub.add_parser("compare")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--n-prompt", type=int, default=32)
    p.add_argument("--n-gen", type=int, default=32)
    for name in ("aa", "worse"):
        p = sub.add_parser(name)
        p.add_argument("--sessions", type=int, default=10)
        if name == "worse":
            p.add_argument("--slots", type=int, default=4)
            p.add_argument("--threads", type=int, default=THREADS)
    sub.add_parser("suite")
    for p in sub.choices.values():
        p.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    if args.phase == "compare":
        result = compare(args)
    elif args.phase == "aa":
        result = sessions(args, 4, THREADS)
    elif args.phase == "worse":
        result = sessions(args, args.slots, args.threads)
    else:
        result = suite(args)
    record = {"date": started, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "phase": args.phase, "result": result}
    if "summary" in result:
        print(json.dumps(result["summary"]))
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
