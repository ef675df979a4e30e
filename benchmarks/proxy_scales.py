"""Does a proxy's batch-1 generation depend on how its block scales vary? One scale per tensor against scales that
vary from block to block as a trained model's do.

On x86, llama.cpp's CPU dot products read each quantized block's fp16 scale through a 256 KiB lookup table
(``ggml_table_f32_f16``), so a tensor whose blocks share one scale keeps that table in cache. This writes two
proxies ``--like`` the model with all of its layers, one with one scale per tensor (``SCALE_SPREAD`` and
``MIN_SPREAD`` at 0: the writer of proxy format 1) and one as the writer makes them now, beside a fresh copy of the
model, and measures one workload (default: 8 prompt tokens, 64 generated, one user) in pairs, each proxy against
the model in its own worker process, alternating which goes first. Reports the median of the pairs' speed ratios
(proxy over model), prompt and generation, with their spread. ``--model`` may be a proxy itself (a proxy of
Llama 3.3 70B from the cache, say): the comparison is then of the two ways of writing its blocks. A benchmark,
never run in CI:

    python benchmarks/proxy_scales.py --pairs 40
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_axion.engines.worker import EngineProcess
from pytest_axion.machine.model import embedded_model_path
from pytest_axion.proxy import blocks, spec_from_gguf, write_proxy


def write(real: Path, path: Path, *, varying: bool) -> None:
    spread, min_spread = blocks.SCALE_SPREAD, blocks.MIN_SPREAD
    if not varying:
        blocks.SCALE_SPREAD = blocks.MIN_SPREAD = 0.0
    blocks._rms_at_unit_scale.cache_clear()
    try:
        spec = spec_from_gguf(real)
        write_proxy(spec, layers=spec.n_layers, quantization=None, path=path)
    finally:
        blocks.SCALE_SPREAD, blocks.MIN_SPREAD = spread, min_spread
        blocks._rms_at_unit_scale.cache_clear()


def seconds(engine: EngineProcess, shape: dict[str, int]) -> tuple[float, float]:
    """One repetition: (prompt seconds, generation seconds)."""
    run = engine.request("batched", repetitions=1, **shape)
    return float(run["prompt_seconds"][0]), float(run["gen_seconds"][0])


def pairs(model: Path, proxy: Path, shape: dict[str, int], n_pairs: int, threads: int) -> dict[str, list[float]]:
    """The proxy's speed over the model's, prompt and generation, pair by pair (alternating which goes first)."""
    engines = [EngineProcess(sys.executable, model_path=str(path), threads=threads) for path in (model, proxy)]
    try:
        for engine in engines:
            engine.warm_up(64)
            seconds(engine, shape)
        ratios: dict[str, list[float]] = {"prompt": [], "generation": []}
        for index in range(n_pairs):
            order = (0, 1) if index % 2 == 0 else (1, 0)
            got = {side: seconds(engines[side], shape) for side in order}
            for phase, (model_s, proxy_s) in zip(ratios, zip(got[0], got[1], strict=True), strict=True):
                ratios[phase].append(model_s / proxy_s)
        return ratios
    finally:
        for engine in engines:
            engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="the real GGUF (default: the embedded SmolLM2-135M)")
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-prompt", type=int, default=8)
    parser.add_argument("--n-gen", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()
    shape = dict(n_prompt=args.n_prompt, n_gen=args.n_gen, batch_size=args.batch_size)
    started = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    with tempfile.TemporaryDirectory(prefix="axion-proxy-scales-") as folder:
        model = Path(shutil.copyfile(args.model or embedded_model_path(), Path(folder) / "model.gguf"))
        proxies = {"one scale per tensor (format 1)": Path(folder) / "constant.gguf",
                   "scales varying by block (now)": Path(folder) / "varying.gguf"}
        for path, varying in zip(proxies.values(), (False, True), strict=True):
            write(model, path, varying=varying)
        # the two proxies in turn, twice, so that a slow spell does not fall on one of them only
        for label, path in [*proxies.items(), *proxies.items()]:
            by_phase = pairs(model, path, shape, args.pairs // 2, args.threads)
            for phase, ratios in by_phase.items():
                quartiles = statistics.quantiles(ratios, n=4)
                rows.append([label, phase, len(ratios), f"{statistics.median(ratios):.3f}",
                             f"{quartiles[0]:.3f}-{quartiles[2]:.3f}", f"{sum(r > 1 for r in ratios)}/{len(ratios)}"])
                print(rows[-1], flush=True)
    print(tabulate(rows, headers=["proxy", "phase", "pairs", "proxy/model speed (median)", "IQR", "proxy faster"],
                   tablefmt="github"))
    print(f"pp{args.n_prompt}+tg{args.n_gen} at batch {args.batch_size}, {args.threads} threads, "
          f"{(datetime.datetime.now(datetime.timezone.utc) - started).total_seconds():.0f} s")


if __name__ == "__main__":
    main()
