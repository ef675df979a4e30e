"""Do a server's closed-loop users drift apart? Users in process spread evenly over a request's steps, against the
same users in step (issue 29: in process and a server with a slot for every user disagree on capacity).

The served figures (``benchmarks/served_ttft_parts.py``) put a server's generation step at 1.6-1.7 times the
in-process one from 8 users on, and one explanation on record was drift: a server's users fall out of step, so its
steps also carry the prompts of users whose next request just arrived. This measures the far end of that
explanation in process, on the same model and threads: every user's next prompt joins the running batch at the
step after its last answer ended (continuous batching, as llama-server batches its slots), the users' first
requests spread evenly over one request's steps so that they stay apart, against the in-process engine's users in
step (every prompt of a repetition in one batch, then one token per user per step). If the server's users drifted
apart, its TTFT would fall towards the spread users' and its step rise towards theirs.

A benchmark, never run in CI; nothing else may run on the machine meanwhile:

    python benchmarks/drifting_users.py [--threads 2] [--users 1 4 8 16] [--requests 5]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from typing import Any

import llama_cpp
from tabulate import tabulate

from pytest_axion.engines.llama import LlamaEngine, _Batch
from pytest_axion.machine.model import embedded_model_path


class _StepBatch(_Batch):
    """A batch filled again before every step (its size changes as prompts join)."""

    def fill(self, tokens: list[int], positions: list[int], seqs: list[int], logits: list[bool]) -> None:
        b = self.batch
        for i, (token, pos, seq, logit) in enumerate(zip(tokens, positions, seqs, logits, strict=True)):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logit
            b.seq_id[i][0] = seq
        b.n_tokens = self.n_tokens = len(tokens)


class SpreadUsers(LlamaEngine):
    """The in-process engine, plus users in a closed loop batched as a server's continuous batching does."""

    def run_spread(self, n_prompt: int, n_gen: int, users: int, requests: int) -> list[tuple[float, float]]:
        """(TTFT s, step s) of each user's requests after its first (the first ones spread the users apart)."""
        ctx = self._context(n_ctx=users * (n_prompt + n_gen), n_seq=users)
        start_step = [(u * n_gen) // users for u in range(users)]   # evenly over one request's n_gen steps
        position, produced = [0] * users, [0] * users
        due, first = [0.0] * users, [0.0] * users
        done: list[list[tuple[float, float]]] = [[] for _ in range(users)]
        most = users * n_prompt   # every user's prompt in one step at most
        batch = _StepBatch([0] * most, [0] * most, [0] * most, [False] * most)
        ctx.clear()
        clock, began, step = time.perf_counter, time.perf_counter(), 0
        try:
            while min(len(d) for d in done) <= requests:   # the first request of each is not kept
                stepping = [u for u in range(users) if start_step[u] <= step]
                tokens: list[int] = []
                positions: list[int] = []
                seqs: list[int] = []
                logits: list[bool] = []
                for u in stepping:
                    count = n_prompt if produced[u] == 0 else 1   # a new request's whole prompt, else one token
                    tokens += [self._random_token() for _ in range(count)]
                    positions += range(position[u], position[u] + count)
                    seqs += [u] * count
                    logits += [False] * (count - 1) + [True]
                    position[u] += count
                batch.fill(tokens, positions, seqs, logits)
                for view in batch.views(ctx.n_batch):
                    ctx.decode(view)
                llama_cpp.llama_synchronize(ctx.ctx)
                now = clock() - began
                for u in stepping:
                    produced[u] += 1
                    if produced[u] == 1:
                        first[u] = now
                    if produced[u] == n_gen:   # answered: the next request is due now, in a fresh sequence
                        done[u].append((first[u] - due[u], (now - first[u]) / (n_gen - 1)))
                        llama_cpp.llama_memory_seq_rm(ctx.memory, u, -1, -1)
                        position[u], produced[u], due[u] = 0, 0, now
                step += 1
        finally:
            batch.free()
            ctx.clear()
        return [figures for d in done for figures in d[1:requests + 1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=5, help="timed requests per user (and repetitions in step)")
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)
    engine = SpreadUsers(str(embedded_model_path()), threads=args.threads)
    engine.warm_up(64)
    rows: list[list[Any]] = []
    for users in args.users:
        spread = engine.run_spread(16, 16, users, args.requests)
        in_step = engine.run_batched(16, 16, users, repetitions=args.requests)
        rows.append([users, len(spread), f"{statistics.median(t for t, _ in spread) * 1e3:.1f}",
                     f"{statistics.median(s for _, s in spread) * 1e3:.1f}",
                     f"{statistics.median(in_step['prompt_seconds']) * 1e3:.1f}",
                     f"{statistics.median(in_step['gen_seconds']) / 16 * 1e3:.1f}"])
    engine.close()
    print(f"SmolLM2-135M Q4_1 (embedded), {args.threads} threads, 16 prompt and 16 output tokens, "
          f"{started:%Y-%m-%d %H:%M} UTC")
    print(tabulate(rows, headers=["users", "requests", "spread TTFT ms", "spread step ms", "in-step TTFT ms",
                                  "in-step step ms"], tablefmt="github"))


if __name__ == "__main__":
    main()
