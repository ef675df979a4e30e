"""Verdict quality of `pytest-axion compare` (a benchmark, never run in CI): no measuring, files only.

Two parts:

  rounds    recorded llama-bench rounds (one process each, e.g. the noise samples of 30 rounds of
            `llama-bench -p 512 -n 128 -r 10`): every ordered pair of rounds compared as two single-run
            sides, unchanged and with the second side made slower by each factor; the share of pairs
            each verdict gets, per comparison (no table around it)
  files     OLD and NEW as given (reports or baseline files), then NEW with every sample made slower
            by each factor (throughputs times f, latencies divided by f): the whole table's counts and
            the command's exit code, as a user sees them

    python benchmarks/compare_files.py rounds llama-bench-rounds.jsonl
    python benchmarks/compare_files.py files before.json after.json

A real regression is rarely uniform; a uniform one is the easiest to see, so the detection counts are
an upper bound for the same size of slowdown.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import re
import tempfile
from collections import Counter
from pathlib import Path

from pytest_axion.cli import compare_files
from pytest_axion.comparison import Side, compare
from pytest_axion.records import METRICS

FACTORS = (1.0, 0.9, 0.8, 0.75, 0.6)


def replay_rounds(path: Path) -> None:
    rounds = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for metric in ("pp", "tg"):
        for factor in FACTORS:
            verdicts: Counter[str] = Counter()
            for i, j in itertools.permutations(range(len(rounds)), 2):
                old = Side((tuple(rounds[i]["lb"][metric]),))
                new = Side((tuple(v * factor for v in rounds[j]["lb"][metric]),))
                verdicts[compare(old, new, higher_is_better=True).verdict] += 1
            total = sum(verdicts.values())
            print(f"{metric} x{factor}: " + ", ".join(f"{name} {verdicts[name] / total:.1%}"
                                                      for name in ("regressed", "inconclusive", "ok", "improved")))


def slowed(report: Path, factor: float, into: Path) -> Path:
    data = json.loads(report.read_text())
    for row in data.get("results", []):
        higher = METRICS[row["metric"]].higher_is_better
        row["samples"] = [v * factor if higher else v / factor for v in row["samples"]]
    into.write_text(json.dumps(data))
    return into


def compare_tables(old: Path, new: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for factor in FACTORS:
            out = io.StringIO()
            status = compare_files(old=old, new=slowed(new, factor, Path(folder) / f"x{factor}.json"),
                                   tolerance=0.10, estimator="median", out=out)
            counts = next(line for line in out.getvalue().splitlines() if re.match(r"\d+ ok, \d+ improved", line))
            print(f"new x{factor}: {counts}; exit {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="part", required=True)
    commands.add_parser("rounds").add_argument("path", type=Path)
    files = commands.add_parser("files")
    files.add_argument("old", type=Path)
    files.add_argument("new", type=Path, help="a --axion-report file (its samples are scaled)")
    args = parser.parse_args()
    if args.part == "rounds":
        replay_rounds(args.path)
    else:
        compare_tables(args.old, args.new)


if __name__ == "__main__":
    main()
