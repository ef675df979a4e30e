"""How large a workload must be to fill a machine, and where measured prompt speed levels off. Pure.

Prompt encoding speed depends on the tokens decoded in one call (prompt length x users), not on how
they split into users: 128 tokens as one prompt or as four of 32 ran alike on 16 cores (3596 vs 3651
t/s). It rises with those tokens until the threads have enough work each, then levels off: at 90% of
the fastest speed after about 16 tokens with 1 thread, 64 with 2 (llama-bench, this project's 2-vCPU
EPYC VMs) and about 512 with 16 (a 16-core Xeon, ``shared/many-core``). So a promise that prompt speed
is steady only means something on calls of at least that many tokens: ``TOKENS_PER_THREAD`` per
thread, and never more than one micro-batch (llama.cpp splits longer calls into ``n_ubatch`` pieces,
512 by default, so beyond it the speed cannot keep rising).
"""

from __future__ import annotations

from collections.abc import Sequence

TOKENS_PER_THREAD = 32
DEFAULT_N_UBATCH = 512       # llama.cpp's (and llama-bench's) micro-batch
LEVEL_OFF_FRACTION = 0.9     # "levelled off": within 10% of the fastest measured speed
RISING_RANK_CORRELATION = 0.8


def prompt_fill_tokens(threads: int, *, n_ubatch: int = DEFAULT_N_UBATCH) -> int:
    """Tokens per call that keep ``threads`` threads busy: 32 per thread, at most one micro-batch."""
    return max(1, min(n_ubatch, TOKENS_PER_THREAD * max(1, threads)))


# A slow model's workloads follow its speed: a call of fill tokens takes at most 1/120 of a test's budget, because
# the reference suite's prompt test decodes 30 fills' worth of tokens per pass (prompts of fill and 2 x fill at 1-4
# users), a warm-up and 3 repetitions at least: 120 fills within its budget. A proxy of a 70B (45 t/s on 2 cores)
# would otherwise take 200 s of a 120 s budget on that test alone. Its prompt speed is level from 16 tokens per
# call (44 t/s at 16, 47 at 64, 49 at 512, BENCHMARKS), so shorter calls measure the same kernels at the same speed.
FILLS_PER_BUDGET = 120
MIN_CAPPED_FILL = 16


def fill_within_budget(fill: int, tokens_per_s: float, budget_s: float) -> int:
    """``fill``, or fewer tokens where a call of ``fill`` would take more than ``budget_s / 120`` seconds at
    ``tokens_per_s``: then the largest power of two that fits, at least 16 (0 budget or no speed: ``fill``)."""
    return _within(fill, tokens_per_s * budget_s / FILLS_PER_BUDGET, floor=MIN_CAPPED_FILL)


# Generation lengths follow the same speed, by the same count: the reference suite's generation test decodes its
# longest and a quarter of it at 1, 2 and 4 users, 3 to 5 repetitions each. A model whose prompt tokens fit 49 to a
# 1-second call (1/120 of 120 s) generated 13.5 t/s at one user and 18.5 in all at four (the 70B proxy on 2 cores):
# 64 steps at four users took 14 s a repetition, past a cell's 15 s share at three; 32 fit.
MIN_GEN_TOKENS = 8


def gen_within_budget(longest: int, tokens_per_s: float, budget_s: float) -> int:
    """``longest`` generated tokens, or fewer where more than ``budget_s / 120`` seconds of prompt tokens at
    ``tokens_per_s`` would be needed: the largest power of two within it, at least 8."""
    return _within(longest, tokens_per_s * budget_s / FILLS_PER_BUDGET, floor=MIN_GEN_TOKENS)


def _within(tokens: int, fits: float, *, floor: int) -> int:
    if fits <= 0 or tokens <= fits:
        return tokens
    capped = floor
    while capped * 2 <= fits:
        capped *= 2
    return min(tokens, capped)


# The short sweep that finds where this machine's prompt speed levels off for this model: tokens per call up
# to one micro-batch (beyond it llama.cpp splits the call, so the speed cannot keep rising).
SWEEP_TOKENS = (16, 32, 64, 128, 256, 512)
SWEEP_REPETITIONS = 3


def sweep_tokens(n_ubatch: int = DEFAULT_N_UBATCH) -> tuple[int, ...]:
    """Tokens per call of the prompt sweep: powers of two from 16 to one micro-batch."""
    return tuple(tokens for tokens in SWEEP_TOKENS if tokens <= n_ubatch)


def fill_from_sweep(points: Sequence[tuple[int, float]], *, threads: int) -> int:
    """Tokens per call for prompt workloads: the fewest from which every larger call of the sweep ran within
    90% of the fastest (so that, as far as the sweep saw, cells of that size and more differ by at most 10%
    for the machine's sake); the rule of thumb without points."""
    if not points:
        return prompt_fill_tokens(threads)
    fastest = max(speed for _, speed in points)
    slow = [tokens for tokens, speed in points if speed < LEVEL_OFF_FRACTION * fastest]
    settled = [tokens for tokens, _ in points if not slow or tokens > max(slow)]
    return min(settled) if settled else max(tokens for tokens, _ in points)


def levels_off_at(points: Sequence[tuple[int, float]]) -> int | None:
    """The fewest tokens per call at which speed reached 90% of the fastest measured; None without points.

    ``points`` are (tokens per call, median tokens/s).
    """
    if not points:
        return None
    fastest = max(speed for _, speed in points)
    return min(tokens for tokens, speed in points if speed >= LEVEL_OFF_FRACTION * fastest)


def still_rising(points: Sequence[tuple[int, float]]) -> bool:
    """Speed grows with the tokens per call (rank correlation >= 0.8) and levels off above the smallest call:
    the machine was not yet saturated by the smaller calls, which is not a build that runs unevenly."""
    if len({tokens for tokens, _ in points}) < 3:
        return False
    knee = levels_off_at(points)
    return knee is not None and knee > min(tokens for tokens, _ in points) and _rank_correlation(points) >= \
        RISING_RANK_CORRELATION


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 0, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2
        start = end + 1
    return ranks


def _rank_correlation(points: Sequence[tuple[int, float]]) -> float:
    """Spearman's rank correlation between tokens per call and speed."""
    x, y = _ranks([float(t) for t, _ in points]), _ranks([s for _, s in points])
    mean_x, mean_y = sum(x) / len(x), sum(y) / len(y)
    covariance = sum((a - mean_x) * (b - mean_y) for a, b in zip(x, y, strict=True))
    spread = (sum((a - mean_x) ** 2 for a in x) * sum((b - mean_y) ** 2 for b in y)) ** 0.5
    return covariance / spread if spread else 0.0
