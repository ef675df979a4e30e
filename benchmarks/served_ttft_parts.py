"""Where a served user's first token goes, against the same users in process (issue 29: in process and a server
with a slot for every user disagree on capacity).

One llama-server with a slot for every user (32) on the embedded model, 16 prompt and 16 output tokens, greedy,
``ignore_eos``, no prompt cache, as the plugin's endpoint engine asks. For 1, 4, 8 and 16 users in a closed loop
(each user sends its next request as soon as its last answer ends) for ``--seconds`` each, every request's
time to first token as the client sees it is split by the server's own ``timings.prompt_ms`` (the time its prompt
was being evaluated) into that and the rest (waiting for the server's loop, HTTP, tokenizing). The same users in
process (every user's prompt in one batch at the start of a repetition) give the in-process engine's TTFT.
Never run in CI; nothing else may run on the machine meanwhile.

    python benchmarks/served_ttft_parts.py [--seconds 20] [--threads 2] [--users 1 4 8 16] [--slots 32]
        [--ctx-per-slot 4096] [--server-arg=--cache-ram --server-arg=0] [--samplers top_k --top-k 1]

``--server-arg`` passes an argument to llama-server (repeat it); ``--samplers`` and ``--top-k`` go into every
request's body (llama-server's own sampler chain, ``samplers``), to see what the server's per-slot sampling costs
a step against the in-process engine, which samples nothing (as llama-batched-bench).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time

import httpx
from tabulate import tabulate

from pytest_axion.engines.worker import EngineProcess
from pytest_axion.machine.model import embedded_model_path
from pytest_axion.records import BatchedRun
from pytest_axion.serve.build import SERVER, build_programs
from pytest_axion.serve.llama_server import LlamaServer

N_PROMPT, N_GEN, SLOTS = 16, 16, 32


EXTRA_BODY: dict[str, object] = {}


async def one_request(client: httpx.AsyncClient, url: str, rng: random.Random) -> dict[str, float]:
    body = {"prompt": [rng.randrange(100, 40000) for _ in range(N_PROMPT)], "max_tokens": N_GEN, "stream": True,
            "ignore_eos": True, "temperature": 0.0, "cache_prompt": False, **EXTRA_BODY}
    sent = time.perf_counter()
    first = None
    timings: dict[str, float] = {}
    async with client.stream("POST", f"{url}/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            if first is None and any(c.get("text") for c in event.get("choices") or []):
                first = time.perf_counter()
            timings = event.get("timings") or timings
    end = time.perf_counter()
    return {"ttft_ms": ((first or end) - sent) * 1e3, "prompt_ms": float(timings.get("prompt_ms", 0.0)),
            "predicted_ms": float(timings.get("predicted_ms", 0.0)), "total_ms": (end - sent) * 1e3}


async def closed_loop(url: str, headers: dict[str, str], users: int, seconds: float) -> list[dict[str, float]]:
    done: list[dict[str, float]] = []
    stop = time.perf_counter() + seconds

    async def user(index: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(index)
        while time.perf_counter() < stop:
            done.append(await one_request(client, url, rng))

    limits = httpx.Limits(max_connections=users, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=120, headers=headers, trust_env=False) as client:
        await one_request(client, url, random.Random(99))   # warm-up
        await asyncio.gather(*(user(i, client) for i in range(users)))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--slots", type=int, default=SLOTS)
    parser.add_argument("--ctx-per-slot", type=int, default=4096, help="the plugin's default; less: a smaller cache")
    parser.add_argument("--server-arg", action="append", default=[], help="an argument for llama-server")
    parser.add_argument("--samplers", nargs="*", help="the requests' sampler chain (llama-server's `samplers`)")
    parser.add_argument("--top-k", type=int, help="the requests' top_k")
    parser.add_argument("--skip-in-process", action="store_true", help="measure the server only")
    args = parser.parse_args()
    if args.samplers is not None:
        EXTRA_BODY["samplers"] = args.samplers
    if args.top_k is not None:
        EXTRA_BODY["top_k"] = args.top_k
    model = str(embedded_model_path())
    rows = []
    binary = build_programs((SERVER,))[SERVER]
    with LlamaServer(binary, model, threads=args.threads, slots=args.slots, ctx_per_slot=args.ctx_per_slot,
                     extra_args=tuple(args.server_arg)) as server:
        headers = {"Authorization": f"Bearer {server.api_key.value}"}
        served = {n: asyncio.run(closed_loop(server.url, headers, n, args.seconds)) for n in args.users}
    engine = EngineProcess(sys.executable, model_path=model, threads=args.threads)
    try:
        engine.warm_up(N_PROMPT)
        for n in args.users:
            requests = served[n]
            median = {k: statistics.median(r[k] for r in requests) for k in requests[0]}
            in_process_ttft = in_process_step = float("nan")
            if not args.skip_in_process:
                run = engine.run("batched", n_prompt=N_PROMPT, n_gen=N_GEN, batch_size=n, repetitions=5)
                assert isinstance(run, BatchedRun)
                in_process_ttft = statistics.median(run.prompt_seconds) * 1e3   # TTFT: the batch's prompt phase
                in_process_step = statistics.median(s for steps in run.step_seconds for s in steps) * 1e3
            served_step = median["predicted_ms"] / (N_GEN - 1)
            rows.append([n, len(requests), f"{median['ttft_ms']:.1f}", f"{median['prompt_ms']:.1f}",
                         f"{median['ttft_ms'] - median['prompt_ms']:.1f}", f"{served_step:.1f}",
                         f"{in_process_ttft:.1f}", f"{in_process_step:.1f}"])
            print(rows[-1], flush=True)
    finally:
        engine.close()
    print(tabulate(rows, headers=["users", "requests", "served TTFT ms", "server prompt ms", "rest ms",
                                  "served step ms", "in-process TTFT ms", "in-process step ms"],
                   tablefmt="github"))


if __name__ == "__main__":
    main()
