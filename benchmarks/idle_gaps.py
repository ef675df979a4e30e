"""Why a low rate's TTFT sits above a lone closed-loop user's (issue 29): the server's idleness, not the client.

One 4-slot llama-server on the embedded model; 16 prompt and 16 output tokens throughout. A lone closed-loop
user (the next request follows the last answer at once) against open-loop requests at fixed gaps (one in
flight at a time, so only the idle time before each request differs) and at a Poisson 0.5 requests/s.
Never run in CI; nothing else may run on the machine meanwhile.

    python benchmarks/idle_gaps.py [--closed 20] [--poisson-seconds 80]
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--closed", type=int, default=20, help="requests of the lone closed-loop user")
    parser.add_argument("--poisson-seconds", type=float, default=80.0, help="length of the Poisson 0.5/s schedule")
    args = parser.parse_args()
    binary = build_programs((SERVER,))[SERVER]
    server = LlamaServer(binary, str(embedded_model_path()), threads=2, slots=4).start()
    engine = EndpointEngine(server.url, server=server, api_key=server.api_key)
    try:
        engine.warm_up(SHAPE["n_prompt"])
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
