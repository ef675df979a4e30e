"""The users' capacity search under reading speed and MLPerf's 2 s TTFT (docs/served.md, "Capacity and
queueing"), and the queueing deployment that stream speed alone would pass: run with a server, never in CI.

    for i in $(seq 10); do pytest benchmarks/capacity_suite -p no:cacheprovider --axion-slo --axion-serve 4 \
        --axion-efficiency=off --axion-report cap-$i.json; done

The search has the 120 s budget of docs/served.md's table.
"""

import pytest


@pytest.mark.axion_slo(per_user_tps="reading", max_batch=4)
def test_capacity(axion):
    axion.capacity(n_prompt=16, n_gen=16, ttft_ms=2000, budget_s=120)


@pytest.mark.axion_slo(per_user_tps="reading", ttft_ms=2000, ttft_percentile=90)
def test_thirty_two_users_queue_for_four_slots(axion):
    axion.batched(n_prompt=16, n_gen=16, batch_sizes=[32], repetitions=2)
