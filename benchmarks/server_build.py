"""What a first llama-server build costs, step by step: the way it is built now against the way it was.

Each round builds ``llama-server`` against the installed library into a fresh scratch cache twice, in turns
(``now`` then ``before``, the next round the other way round, so that a slow spell falls on both):

- ``now``: the sdist fetched straight from pip's indexes, every target's objects compiled side by side;
- ``before``: ``pip download`` (which installs the build backend to prepare the sdist's metadata) and one
  target at a time (``make <target>/fast``), as pytest-axion built until 2026-12-07.

It prints each step's seconds (what the build runs through ``_run``) and the totals, and each round's ratio.
Never run in CI (minutes of both cores); nothing else may run on the machine meanwhile.

    python benchmarks/server_build.py [--rounds 1] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from pytest_axion.serve import build
from pytest_axion.serve.sdist import NotFound


def timed_build(way: str, jobs: int) -> tuple[float, list[tuple[str, float]]]:
    steps: list[tuple[str, float]] = []
    run = build._run

    def timed_run(command: list[str], what: str, log: Path) -> None:
        started = time.monotonic()
        run(command, what, log)
        steps.append((what, time.monotonic() - started))

    def no_direct_fetch(project: str, version: str, into: Path) -> Path:
        raise NotFound("the way before: pip download")

    scratch = Path(tempfile.mkdtemp(prefix=f"server-build-{way}-"))
    patches = [mock.patch.object(build, "_run", timed_run),
               mock.patch.dict(os.environ, {"XDG_CACHE_HOME": str(scratch)})]
    if way == "before":
        patches += [mock.patch.object(build, "fetch_sdist", no_direct_fetch),
                    mock.patch.object(build, "_compile_side_by_side", lambda *args: None)]
    started = time.monotonic()
    try:
        for patch in patches:
            patch.start()
        build.build_programs([build.SERVER], jobs=jobs)
        return time.monotonic() - started, steps
    finally:
        for patch in reversed(patches):
            patch.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    totals: dict[str, list[float]] = {"now": [], "before": []}
    for round_index in range(args.rounds):
        order = ("now", "before") if round_index % 2 == 0 else ("before", "now")
        for way in order:
            total, steps = timed_build(way, args.jobs)
            totals[way].append(total)
            print(f"round {round_index + 1} {way}: {total:.1f} s", flush=True)
            for what, seconds in steps:
                if seconds >= 0.5:
                    print(f"    {seconds:7.1f} s  {what}", flush=True)
        print(f"round {round_index + 1}: now / before = {totals['now'][-1] / totals['before'][-1]:.3f}", flush=True)
    now, before = statistics.median(totals["now"]), statistics.median(totals["before"])
    print(f"median of {args.rounds} round(s): now {now:.1f} s, before {before:.1f} s, ratio {now / before:.3f} "
          f"({args.jobs} jobs, {os.cpu_count()} CPUs, python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
