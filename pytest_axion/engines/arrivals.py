"""When an open-loop load sends its requests: arrival times with gamma-distributed gaps, as vLLM's serving
benchmark draws them (``--request-rate``, ``--burstiness``). Pure.

At burstiness 1 the gaps are exponential (a Poisson process); below 1 requests come in bursts, above 1 more
evenly. The gaps' mean is ``1 / requests_per_s`` whatever the burstiness: shape ``burstiness``, scale
``1 / (requests_per_s * burstiness)``.
"""

from __future__ import annotations

import random


def arrival_times(requests_per_s: float, duration_s: float, burstiness: float = 1.0, *,
                  seed: int = 0) -> tuple[float, ...]:
    """Seconds from the start at which each request is due, up to ``duration_s``; the same seed gives the same
    schedule, so that two runs of one level send the same load."""
    rng = random.Random(seed)
    scale = 1.0 / (requests_per_s * burstiness)
    times: list[float] = []
    now = 0.0
    while True:
        now += rng.gammavariate(burstiness, scale)
        if now > duration_s:
            return tuple(times)
        times.append(now)
