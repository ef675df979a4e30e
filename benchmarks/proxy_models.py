"""Proxy models against the real model: do random weights measure like trained ones, and do few-layer proxies
predict the full model?

Proxies ``--like`` the embedded SmolLM2-135M (its exact shapes and per-tensor types) with 2, 4 and all 30
layers, and the real model, each in a worker process of its own (the one every session measures with),
measured round by round in rotating order so that all four live through the same slow spells of a shared
machine. The real model is a fresh copy written beside the proxies, as in ``proxy_fidelity.py`` (a freshly
written file generated up to 10% faster at batch 1 than the installed one on these VMs); ``--no-fresh-copy``
measures it where it lies. Reports, per workload, the 30-layer proxy's speed over the real model's (target:
within 3%), and the real model's figures predicted from the 2- and 4-layer proxies by fitting the time per token
(per step for batched users) as a fixed cost plus layers x a per-layer cost (target: within 10%). A benchmark, never
run in CI:

    python benchmarks/proxy_models.py --rounds 5 --json proxy-models.json
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

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_axion.engines.worker import EngineProcess
from pytest_axion.machine.model import embedded_model_path
from pytest_axion.proxy import spec_from_gguf, write_proxy
from pytest_axion.proxy.predict import LayerFigure, predict

PROXY_LAYERS = (2, 4)
PROMPT, GEN, BATCHED = 512, 128, (128, 64, 4)


def seconds_per_unit(engine: EngineProcess, workload: str, reps: int) -> float:
    """Median seconds per prompt token (prompt), per generated token (generation) or per step of four users."""
    if workload == "pp512":
        run = engine.request("prompt", n_prompt=PROMPT, repetitions=reps)
        return statistics.median(run["seconds"]) / PROMPT
    if workload == "tg128":
        run = engine.request("generation", n_gen=GEN, repetitions=reps)
        return statistics.median(run["seconds"]) / GEN
    n_prompt, n_gen, users = BATCHED
    run = engine.request("batched", n_prompt=n_prompt, n_gen=n_gen, batch_size=users, repetitions=reps)
    return statistics.median(run["gen_seconds"]) / n_gen


WORKLOADS = ("pp512", "tg128", "b4-step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-fresh-copy", action="store_true",
                        help="measure the real model where it lies, not a copy written beside the proxies")
    args = parser.parse_args()
    real = embedded_model_path()
    spec = spec_from_gguf(real)
    with tempfile.TemporaryDirectory(prefix="axion-proxies-") as folder:
        if not args.no_fresh_copy:
            real = Path(shutil.copyfile(real, Path(folder) / Path(real).name))
        files = {"real": real}
        for layers in (*PROXY_LAYERS, spec.n_layers):
            files[f"proxy-{layers}L"] = Path(folder) / f"proxy-{layers}.gguf"
            write_proxy(spec, layers=layers, quantization=None, path=files[f"proxy-{layers}L"])
        engines = {name: EngineProcess(sys.executable, model_path=str(path), threads=args.threads)
                   for name, path in files.items()}
        try:
            for engine in engines.values():
                engine.warm_up(64)
            names = list(engines)
            samples: dict[str, dict[str, list[float]]] = {n: {w: [] for w in WORKLOADS} for n in names}
            for round_index in range(args.rounds):
                order = names[round_index % len(names):] + names[:round_index % len(names)]
                for name in order:
                    for workload in WORKLOADS:
                        samples[name][workload].append(seconds_per_unit(engines[name], workload, args.reps))
                print(f"round {round_index + 1} of {args.rounds} done", flush=True)
        finally:
            for engine in engines.values():
                engine.close()
    level = {n: {w: statistics.median(v) for w, v in per.items()} for n, per in samples.items()}
    full = f"proxy-{spec.n_layers}L"
    rows, record = [], {}
    for workload in WORKLOADS:
        # the product's own predictor, on the rounds' figures as rates (units of work per second)
        figures = [LayerFigure(layers, tuple(1 / v for v in samples[f"proxy-{layers}L"][workload]), "tokens/s")
                   for layers in PROXY_LAYERS]
        prediction = predict(figures, spec.n_layers)
        truth = level["real"][workload]
        # paired by round: the 30-layer proxy's speed over the real model's in the same round
        pairs = zip(samples["real"][workload], samples[full][workload], strict=True)
        paired = statistics.median(real_s / proxy_s for real_s, proxy_s in pairs)
        rows.append([workload, f"{1 / truth:.1f}", f"{1 / level[full][workload]:.1f}", f"{paired:.3f}",
                     f"{prediction.value:.1f} [{prediction.low:.1f}-{prediction.high:.1f}]",
                     f"{prediction.value * truth:.3f}", f"{prediction.fixed * 1e3:.3f}",
                     f"{prediction.per_layer * 1e3:.3f}"])
        record[workload] = {"real_per_s": 1 / truth, "proxy_full_per_s": 1 / level[full][workload],
                            "proxy_full_over_real_paired": paired, "predicted_per_s": prediction.value,
                            "predicted_interval_per_s": [prediction.low, prediction.high],
                            "predicted_over_real": prediction.value * truth, "fixed_ms": prediction.fixed * 1e3,
                            "per_layer_ms": prediction.per_layer * 1e3,
                            "samples_s": {n: samples[n][workload] for n in names}}
    headers = ["workload", "real /s", f"proxy {spec.n_layers}L /s", "proxy/real (paired)",
               f"predicted from {PROXY_LAYERS[0]}L+{PROXY_LAYERS[1]}L /s [95%]", "predicted/real", "fixed ms",
               "per layer ms"]
    print(tabulate(rows, headers=headers, tablefmt="github"))
    print("(/s: prompt tokens per second for pp512, generated tokens per second for tg128, steps of 4 users per "
          "second for b4-step)")
    if args.json is not None:
        args.json.write_text(json.dumps({"when": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                                         "machine": platform.processor() or platform.machine(),
                                         "threads": args.threads, "rounds": args.rounds, "reps": args.reps,
                                         "workloads": record}, indent=2))


if __name__ == "__main__":
    main()
