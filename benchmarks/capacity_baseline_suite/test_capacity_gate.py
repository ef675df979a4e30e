"""A capacity search gated by the stored baseline (benchmarks/verdicts.py --suite benchmarks/capacity_baseline_suite):
per-user speed falls as users share the steps, so at 40 t/s each SmolLM2-135M on 2 threads serves a few users, and
a build half as fast about half as many. Attainment 0.5 keeps a level to 4 repetitions (0.9 takes 35)."""

import pytest


@pytest.mark.axion_slo(per_user_tps=40, max_batch=1)
def test_capacity(axion):
    axion.capacity(n_prompt=16, n_gen=16, attainment=0.5, batch_sizes=[1, 2, 4, 8], repetitions=4, budget_s=60)
