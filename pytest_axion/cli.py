"""The ``pytest-axion`` command: argparse adapters over keyword-only functions that return exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tabulate import tabulate

from pytest_axion.baselines import Baseline, baseline_files, read_baseline, summarise_entries
from pytest_axion.errors import AxionError, BaselineError

DEFAULT_BASELINES = Path("baselines")


def _check_location(path: Path, baseline: Baseline) -> None:
    # The folder and file name select a baseline; a file moved by hand must not judge another machine.
    if path.parent.name != baseline.hardware_id or path.stem != baseline.model_label:
        raise BaselineError(
            f"baseline file {path} says hardware {baseline.hardware_id!r} and model {baseline.model_label!r} but "
            f"lies at {path.parent.name}/{path.name}: move it to {baseline.hardware_id}/{baseline.model_label}.json"
        )


def validate(*, root: Path, out: TextIO) -> int:
    """Schema-check every baseline file under ``root``; 1 if any is bad, else 0."""
    files = baseline_files(root)
    if not files:
        print(f"no baseline files under {root}", file=out)
        return 0
    bad = 0
    for path in files:
        try:
            baseline = read_baseline(path)
            _check_location(path, baseline)
        except AxionError as err:
            bad += 1
            print(f"FAIL {err}", file=out)
            continue
        print(f"ok   {path} ({len(baseline.entries)} entries)", file=out)
    print(f"{len(files) - bad} valid, {bad} invalid", file=out)
    return 1 if bad else 0


def show(*, root: Path, out: TextIO) -> int:
    """What is stored, per hardware and model, with each entry's between-run spread."""
    files = baseline_files(root)
    if not files:
        print(f"no baseline files under {root}", file=out)
        return 0
    status = 0
    for path in files:
        try:
            baseline = read_baseline(path)
        except AxionError as err:
            print(f"FAIL {err}", file=out)
            status = 1
            continue
        p = baseline.provenance
        print(f"{baseline.hardware_id} / {baseline.model_label}: recorded {p['recorded_at']}, llama-cpp-python "
              f"{p['llama_cpp_python']}, commit {p['git_commit'] or 'unknown'} ({path})", file=out)
        rows = [[r["key"], f"{r['level']:.2f} {r['unit']}", r["runs"], r["samples"],
                 f"{r['between_run_cv'] * 100:.1f}%"] for r in summarise_entries(baseline)]
        print(tabulate(rows, headers=["entry", "level (median of run medians)", "runs", "samples",
                                      "between-run CV"], tablefmt="simple", disable_numparse=True), file=out)
        print("", file=out)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytest-axion", description="Manage pytest-axion baselines.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("validate", "schema-check every baseline file; exit 1 if any is bad"),
                            ("show", "list stored baselines with their between-run spread")):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("root", nargs="?", type=Path, default=DEFAULT_BASELINES,
                         help=f"baselines folder (default: {DEFAULT_BASELINES})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"validate": validate, "show": show}[args.command]
    return command(root=args.root, out=sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
