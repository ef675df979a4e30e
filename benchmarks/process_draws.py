"""Process draws: is a gap between the worker and llama-batched-bench the process boundary or the process?

One llama.cpp process keeps offsets of its own for its whole life (where its buffers and threads land),
so comparing one long-lived worker with a tool that starts afresh for every sample compares one draw
with many. This benchmark takes one sample per *fresh process* on every side, in rotated order:

- worker: a fresh ``EngineProcess`` (the path every session measures through), one run of the cell;
- in-process: a fresh ``python -c`` that imports the engine module and runs the same cell in itself;
- tool: ``llama-batched-bench`` on the same cell, one invocation per sample.

Cell: per-user generation speed at ``-npp 128 -ntg 64 -npl 4`` (the row where one long-lived worker
read 0.93-0.94 of the tool). A benchmark, never run in CI:

    python benchmarks/process_draws.py --rounds 12
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fidelity import BATCHED_GEN, BATCHED_PROMPT, tool_batched_per_user
from llama_tools import build_tools

from pytest_axion.engines.worker import ENGINE_SCRIPT, EngineProcess
from pytest_axion.machine.model import embedded_model_path

PROMPT, GEN = BATCHED_PROMPT, BATCHED_GEN   # the cell fidelity.py measures
ROTATIONS = [("worker", "in-process", "tool"), ("tool", "in-process", "worker"), ("in-process", "tool", "worker"),
             ("worker", "tool", "in-process"), ("in-process", "worker", "tool"), ("tool", "worker", "in-process")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--reps", type=int, default=5, help="repetitions per process (tool: invocations)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = str(embedded_model_path())
    batched_bench = build_tools()["llama-batched-bench"]
    b, threads, reps = args.batch_size, args.threads, args.reps

    def worker() -> list[float]:
        engine = EngineProcess(sys.executable, model_path=model, threads=threads)
        try:
            run = engine.run("batched", n_prompt=PROMPT, n_gen=GEN, batch_size=b, repetitions=reps)
        finally:
            engine.close()
        return [GEN / s for s in run.gen_seconds]  # type: ignore[attr-defined]

    def in_process() -> list[float]:
        code = (f"import sys, json; sys.path.insert(0, {str(ENGINE_SCRIPT.parent)!r}); from llama import LlamaEngine; "
                f"e = LlamaEngine({model!r}, threads={threads}); r = e.run_batched({PROMPT}, {GEN}, {b}, "
                f"repetitions={reps}); print(json.dumps([{GEN} / s for s in r['gen_seconds']]))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        return [float(v) for v in json.loads(out.strip().splitlines()[-1])]

    def tool() -> list[float]:
        return tool_batched_per_user(batched_bench, Path(model), threads=threads, reps=reps, batch_size=b)

    sides: dict[str, Callable[[], list[float]]] = {"worker": worker, "in-process": in_process, "tool": tool}
    medians: dict[str, list[float]] = {name: [] for name in sides}
    for round_index in range(args.rounds):
        for name in ROTATIONS[round_index % len(ROTATIONS)]:
            medians[name].append(statistics.median(sides[name]()))
        print(f"round {round_index + 1}: " + ", ".join(f"{n} {m[-1]:.1f}" for n, m in medians.items()),
              file=sys.stderr, flush=True)
    print(f"per-user tg at pp{PROMPT} tg{GEN} B={b}, {threads} threads, {args.rounds} fresh processes a side "
          f"(median of {reps} repetitions each), tokens/s:")
    for name in ("worker", "in-process"):
        ratios = [x / t for x, t in zip(medians[name], medians["tool"], strict=True)]
        print(f"- {name}: median {statistics.median(medians[name]):.1f}; /tool: ratio of medians "
              f"{statistics.median(medians[name]) / statistics.median(medians['tool']):.3f}, per-round median "
              f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
    print(f"- tool: median {statistics.median(medians['tool']):.1f}; per-process medians "
          f"{min(medians['tool']):.1f}-{max(medians['tool']):.1f}")


if __name__ == "__main__":
    main()
