"""Fidelity: does the plugin's engine measure what llama.cpp's own tools measure?

Runs `llama-bench` / `llama-batched-bench` (built from the installed llama-cpp-python's sdist, see
llama_tools.py) and the plugin's engine, in the worker process every session measures with, on the
same model and threads, interleaved workload by
workload, alternating which side goes first (ABBA), so that both sides live through the same slow
episodes of a shared machine. Prints plugin/tool ratios of medians; the target is >= 0.97 for every
workload. A benchmark, never run in CI:

    python benchmarks/fidelity.py --rounds 6 --reps 5 --json fidelity.json
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
import time
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llama_tools import build_tools, installed_version

from pytest_axion.engines.worker import EngineProcess
from pytest_axion.machine.model import embedded_model_path

TARGET_RATIO = 0.97
BATCHED_PROMPT, BATCHED_GEN = 128, 64


@dataclass
class Workload:
    """One comparison row; samples are tokens/s, kept per round for both sides."""

    name: str
    tool: list[list[float]] = field(default_factory=list)
    plugin: list[list[float]] = field(default_factory=list)


def run_tool(command: list[str]) -> list[dict[str, object]]:
    """Run a llama.cpp tool with JSON-lines output; return its JSON records."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-15:])
        sys.exit(f"{command[0]} failed with exit code {done.returncode}:\n{tail}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def tool_bench(bench: Path, model: Path, *, threads: int, reps: int, n_prompt: int, n_gen: int) -> list[float]:
    records = run_tool([str(bench), "-m", str(model), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
                        "-r", str(reps), "-o", "jsonl"])
    (record,) = records
    return [float(v) for v in record["samples_ts"]]  # type: ignore[attr-defined]


def tool_batched_per_user(batched_bench: Path, model: Path, *, threads: int, reps: int, batch_size: int) -> list[float]:
    # One sample per invocation (batched-bench's own warm-up is 16 tokens once per process; the
    # engine warms up with a full cell; both are outside the timed region).
    n_ctx = batch_size * (BATCHED_PROMPT + BATCHED_GEN)
    samples = []
    for _ in range(reps):
        (record,) = run_tool([str(batched_bench), "-m", str(model), "-t", str(threads), "-c", str(n_ctx),
                              "-npp", str(BATCHED_PROMPT), "-ntg", str(BATCHED_GEN), "-npl", str(batch_size),
                              "--output-format", "jsonl"])
        samples.append(BATCHED_GEN / float(record["t_tg"]))  # type: ignore[arg-type]
    return samples


def plugin_side(engine: EngineProcess, name: str, reps: int) -> list[float]:
    if name == "pp512":
        return [512 / s for s in engine.run("prompt", n_prompt=512, repetitions=reps).seconds]
    if name == "tg128":
        return [128 / s for s in engine.run("generation", n_gen=128, repetitions=reps).seconds]
    batch_size = int(name.rsplit("B=", 1)[1])
    run = engine.run("batched", n_prompt=BATCHED_PROMPT, n_gen=BATCHED_GEN, batch_size=batch_size, repetitions=reps)
    return [BATCHED_GEN / s for s in run.gen_seconds]  # type: ignore[union-attr]


def tool_side(tools: dict[str, Path], model: Path, name: str, *, threads: int, reps: int) -> list[float]:
    if name == "pp512":
        return tool_bench(tools["llama-bench"], model, threads=threads, reps=reps, n_prompt=512, n_gen=0)
    if name == "tg128":
        return tool_bench(tools["llama-bench"], model, threads=threads, reps=reps, n_prompt=0, n_gen=128)
    return tool_batched_per_user(tools["llama-batched-bench"], model, threads=threads, reps=reps,
                                 batch_size=int(name.rsplit("B=", 1)[1]))


def machine_line() -> str:
    model_name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model_name}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def report(workloads: list[Workload], *, threads: int, rounds: int, reps: int, seconds: float,
           system_info: str) -> str:
    rows = []
    for w in workloads:
        tool_median = statistics.median(v for r in w.tool for v in r)
        plugin_median = statistics.median(v for r in w.plugin for v in r)
        per_round = [statistics.median(p) / statistics.median(t) for p, t in zip(w.plugin, w.tool, strict=True)]
        ratio = plugin_median / tool_median
        rows.append([w.name, f"{tool_median:.1f}", f"{plugin_median:.1f}", f"{ratio:.3f}",
                     f"{statistics.median(per_round):.3f} ({min(per_round):.3f}-{max(per_round):.3f})",
                     "ok" if ratio >= TARGET_RATIO else f"BELOW {TARGET_RATIO}"])
    head = [
        f"- date: {datetime.date.today().isoformat()}",
        f"- machine: {machine_line()}",
        f"- llama-cpp-python {installed_version()}; llama.cpp: {system_info}",
        "- plugin side: a fresh worker process each round (pytest_axion/engines/llama.py), as sessions measure",
        f"- threads {threads}, {rounds} rounds x {reps} repetitions per side, interleaved ABBA; {seconds / 60:.1f} min",
        "",
    ]
    table = tabulate(rows, headers=["workload (tokens/s)", "tool median", "plugin median", "plugin/tool",
                                    "per-round ratio median (min-max)", "target"],
                     tablefmt="github", disable_numparse=True)
    return "\n".join(head) + table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write every raw sample here")
    args = parser.parse_args()

    model = args.model or embedded_model_path()
    tools = build_tools()
    workloads = [Workload(name) for name in ("pp512", "tg128", "per-user tg B=1", "per-user tg B=2",
                                             "per-user tg B=4")]
    start = time.monotonic()
    system_info = ""
    for round_index in range(args.rounds):
        tool_first = round_index % 2 == 0  # ABBA: alternate who goes first
        # A fresh worker each round, as each tool sample is a fresh process: a process keeps offsets of its
        # own for life (where buffers and threads land), worth up to 15% at B=4 here, so one long-lived
        # worker is one draw of that offset, not a measure of the engine (BENCHMARKS.md, "process draws").
        engine = EngineProcess(sys.executable, model_path=str(model), threads=args.threads)
        system_info = engine.facts.system_info
        for w in workloads:
            sides = ["tool", "plugin"] if tool_first else ["plugin", "tool"]
            for side in sides:
                if side == "tool":
                    w.tool.append(tool_side(tools, model, w.name, threads=args.threads, reps=args.reps))
                else:
                    w.plugin.append(plugin_side(engine, w.name, args.reps))
            print(f"round {round_index + 1}/{args.rounds} {w.name}: tool {statistics.median(w.tool[-1]):.1f} "
                  f"plugin {statistics.median(w.plugin[-1]):.1f} t/s", file=sys.stderr, flush=True)
        engine.close()
    print(report(workloads, threads=args.threads, rounds=args.rounds, reps=args.reps,
                 seconds=time.monotonic() - start, system_info=system_info))
    if args.json:
        args.json.write_text(json.dumps({w.name: {"tool": w.tool, "plugin": w.plugin} for w in workloads}, indent=1))


if __name__ == "__main__":
    main()
