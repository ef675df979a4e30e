"""Steadiness and scaling under a slow episode (a benchmark, never run in CI).

Two series of separate `pytest --axion-slo` runs of benchmarks/shape_suite:
  burst    a busy process runs for the first seconds of each test, so the first cells measured are
           slowed; the confirmation (after the pause) must keep that from failing the promise alone
  calm     no competing process: every promise should pass at its first attempt

    python benchmarks/shape_noise.py --runs 10 --out shape_noise.json

Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUITE = "benchmarks/shape_suite"


def one_run(work: Path, name: str, burst: bool, spacing_s: float) -> list[dict[str, Any]]:
    report = work / f"{name}.json"
    env = {**os.environ, "AXION_BURST": "1" if burst else "0"}
    with (work / f"{name}.log").open("w") as log:
        code = subprocess.call([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", SUITE, "--axion-slo",
                                "--axion-no-baselines", f"--axion-confirm-spacing={spacing_s}",
                                "--axion-report", str(report)], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    data = json.loads(report.read_text())
    checks = []
    for test in data["tests"]:
        for shape in test["shape"]:
            checks.append({"test": test["nodeid"].split("::")[-1], "group": shape["group"],
                           "first_passed": shape["attempts"][0]["passed"], "verdict": shape["verdict"],
                           "attempts": [round(a["observed"], 3) for a in shape["attempts"]], "exit": code})
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--confirm-spacing", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("shape_noise.json"))
    args = parser.parse_args()
    record: dict[str, Any] = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or
                              platform.machine(), "cpus": os.cpu_count(),
                              "confirm_spacing": args.confirm_spacing, "series": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for series, burst in (("burst", True), ("calm", False)):
            checks = []
            for i in range(args.runs):
                run = one_run(Path(tmp), f"{series}-{i}", burst, args.confirm_spacing)
                checks += run
                print(f"[{series} {i + 1}/{args.runs}] " + "; ".join(
                    f"{c['group']}: {c['verdict']} {c['attempts']}" for c in run), flush=True)
            counts = Counter((c["first_passed"], c["verdict"]) for c in checks)
            record["series"][series] = {
                "checks": len(checks),
                "first_attempt_missed": sum(not c["first_passed"] for c in checks),
                "failed": counts.get((False, "FAIL"), 0),
                "inconclusive": counts.get((False, "inconclusive"), 0),
                "passed_first_time": counts.get((True, "pass"), 0),
                "runs": checks}
            print(json.dumps({k: v for k, v in record["series"][series].items() if k != "runs"}), flush=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
