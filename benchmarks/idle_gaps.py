"""Why a low rate's TTFT sits above a lone closed-loop user's (issue 29): the server's idleness, not the client.

One 4-slot llama-server on the embedded model; 16 prompt and 16 output tokens throughout. A lone closed-loop
user (the next request follows the last answer at once) against open-loop requests at fixed gaps (one in
flight at a time, so only the idle time before each request differs) and at a Poisson 0.5 requests/s.
Never run in CI; nothing else may run on the machine meanwhile.

    python benchmarks/idle_gaps.py [--closed 20] [--poisson-seconds 80]

``--interleave ROUNDS`` compares the two sides the done-when compares, side by side: each round a lone
closed-loop user (``--closed`` requests), then a Poisson schedule at ``--rate`` for ``--poisson-seconds`` (a new
seed each round), so that a slow spell of the machine falls on both; it prints each side's median and p90 and
their ratios with a bootstrap 90% interval over the requests.

    python benchmarks/idle_gaps.py --interleave 10 --closed 20 --poisson-seconds 40 --rate 0.5
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Sequence

from pytest_axion.engines.arrivals import arrival_times
from pytest_axion.engines.endpoint import EndpointEngine
from pytest_axion.machine.model import embedded_model_path
from pytest_axion.serve.build import SERVER, build_programs
from pytest_axion.serve.llama_server import LlamaServer

SHAPE = {"n_prompt": 16, "n_gen": 16}


def ttfts_ms(requests: Sequence) -> list[float]:
    return [(r.first_token - r.due) * 1e3 for r in requests]


def show(name: str, values: list[float]) -> None:
    ordered = sorted(values)
    p90 = ordered[max(0, int(0.9 * len(ordered)) - 1)]
    print(f"{name:34s} n={len(ordered):3d}  TTFT median {statistics.median(ordered):6.1f} ms  p90 {p90:6.1f} ms",
          flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(q * len(ordered)) - 1)]


def ratio_interval(low_rate: list[float], closed: list[float], q: float, *, draws: int = 2000) -> tuple[float, float]:
    """A bootstrap 90% interval of percentile(low_rate) / percentile(closed), resampling each side's requests."""
    rng = random.Random(1)
    ratios = sorted(percentile(rng.choices(low_rate, k=len(low_rate)), q)
                    / percentile(rng.choices(closed, k=len(closed)), q) for _ in range(draws))
    return ratios[int(0.05 * draws)], ratios[int(0.95 * draws)]


def interleave(engine: EndpointEngine, rounds: int, closed_requests: int, rate: float, seconds: float) -> None:
    closed: list[float] = []
    low_rate: list[float] = []
    for round_index in range(rounds):
        run = engine.run("batched", **SHAPE, batch_size=1, repetitions=closed_requests)
        closed += ttfts_ms(run.requests)
        schedule = arrival_times(rate, seconds, 1.0, seed=100 + round_index)
        low_rate += ttfts_ms(engine.open_loop(schedule, **SHAPE, max_in_flight=8).requests)
        print(f"round {round_index + 1}/{rounds}: closed median {statistics.median(closed):.1f} ms, "
              f"{rate}/s median {statistics.median(low_rate):.1f} ms", flush=True)
    show("closed loop, lone user", closed)
    show(f"open loop, Poisson {rate}/s", low_rate)
    for name, q in (("median", 0.5), ("p90", 0.9)):
        low, high = ratio_interval(low_rate, closed, q)
        print(f"{name}: {rate}/s / closed = {percentile(low_rate, q) / percentile(closed, q):.3f} "
              f"(90% interval {low:.3f}-{high:.3f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--closed", type=int, default=20, help="requests of the lone closed-loop user")
    parser.add_argument("--poisson-seconds", type=float, default=80.0, help="length of the Poisson 0.5/s schedule")
    parser.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                        help="alternate a lone user and a Poisson schedule for ROUNDS rounds (the gaps are skipped)")
    parser.add_argument("--rate", type=float, default=0.5, help="requests/s of the interleaved Poisson schedule")
    args = parser.parse_args()
    binary = build_programs((SERVER,))[SERVER]
    server = LlamaServer(binary, str(embedded_model_path()), threads=2, slots=4).start()
    engine = EndpointEngine(server.url, server=server, api_key=server.api_key)
    try:
        engine.warm_up(SHAPE["n_prompt"])
        if args.interleave:
            interleave(engine, args.interleave, args.closed, args.rate, args.poisson_seconds)
            return
        closed = engine.run("batched", **SHAPE, batch_size=1, repetitions=args.closed)
        show("closed loop, lone user", ttfts_ms(closed.requests))
        for gap in (0.4, 1.0, 2.0, 4.0):
            arrivals = [i * gap for i in range(max(12, int(30 / gap)))]
            run = engine.open_loop(arrivals, **SHAPE, max_in_flight=8)
            show(f"open loop, fixed gap {gap} s", ttfts_ms(run.requests))
        poisson = engine.open_loop(arrival_times(0.5, args.poisson_seconds, 1.0, seed=7), **SHAPE, max_in_flight=8)
        show("open loop, Poisson 0.5/s", ttfts_ms(poisson.requests))
    finally:
        engine.close()


if __name__ == "__main__":
    main()
