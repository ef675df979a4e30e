"""Users of a served deployment for benchmarks/served.py: the reference suite's user promises (reading speed
up to 4 users, TTFT p90 at most 2 s) on one batched workload, so that an A/B session of two servers takes
about a minute."""

import pytest


@pytest.mark.axion_slo(per_user_tps="reading", max_batch=4, ttft_ms=2000, ttft_percentile=90)
def test_users(axion):
    axion.batched(n_prompt=32, n_gen=32, batch_sizes=[1, 2, 4])
