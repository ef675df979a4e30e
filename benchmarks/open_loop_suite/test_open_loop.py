"""Open-loop load against a served deployment (issue 29, item 2): run with a server, never in CI.

    pytest benchmarks/open_loop_suite -p no:cacheprovider --axion-slo --axion-serve 4 \
        --axion-report open-loop.json --axion-efficiency=off

Lone and four-user closed loops give one-request-per-slot arithmetic; a low rate's TTFT is compared with a lone
user's; a rate well beyond what the slots serve shows its queue; the rate search finds the capacity under
reading speed and MLPerf's 2 s TTFT. The figures are in the JSON report and the terminal's rate/capacity lines.
"""

import pytest

SHAPE = {"n_prompt": 16, "n_gen": 16}


def test_closed_loop_lone_and_four_users(axion):
    axion.batched(**SHAPE, batch_sizes=[1, 4], repetitions=20)


@pytest.mark.axion_slo(ttft_ms=2000)
def test_low_rate(axion):
    axion.rate(0.5, duration_s=100, **SHAPE)


@pytest.mark.axion_slo(ttft_ms=2000)
def test_beyond_capacity(axion):
    axion.rate(40.0, duration_s=20, **SHAPE)


@pytest.mark.axion_slo(per_user_tps="reading", ttft_ms=2000)
def test_rate_capacity(axion):
    axion.capacity(by="rate", budget_s=300, **SHAPE)
