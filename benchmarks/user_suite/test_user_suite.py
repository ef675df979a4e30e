"""The suite of issue 30, as a new user writes it: one prompt, one generation and one batched test, each
with a promise far below what the machine does, so that only the stored baseline can fail them."""

import pytest


@pytest.mark.axion_slo(prompt_tps=1)
def test_prompt(axion):
    axion.prompt(n_tokens=512)


@pytest.mark.axion_slo(gen_tps=1)
def test_generation(axion):
    axion.generate(n_tokens=128)


@pytest.mark.axion_slo(per_user_tps=1, max_batch=4)
def test_users(axion):
    axion.batched(n_prompt=128, n_gen=64, batch_sizes=[1, 2, 4])
