"""A light suite for the slowdown studies of benchmarks/verdicts.py: the reference suite's three kinds
of workload (prompt, generation, batched users) at small sizes, so that twenty runs, each with its
confirming attempts under a slowed machine, fit in well under half an hour."""

import pytest


@pytest.mark.axion_slo(prompt_tps=50)
def test_prompt(axion):
    axion.prompt(128)


@pytest.mark.axion_slo(gen_tps=20)
def test_generation(axion):
    axion.generate(64)


@pytest.mark.axion_slo(per_user_tps="reading", max_batch=2)
def test_two_users(axion):
    axion.batched(n_prompt=32, n_gen=16, batch_sizes=[2])
