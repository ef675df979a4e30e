"""The A/B upgrade gate on a proxy of a production model (run with ``--axion-model proxy:llama-3.3-70b:4``).

One cell of each kernel path a llama.cpp upgrade can change, sized for a model whose token takes ~80 ms on 2
cores: a 64-token prompt (the batched matrix-matrix path), 16 generated tokens (matrix-vector) and two users'
steps. The promises are floors every build clears: an A/B session judges B against A, and these only check
that B's figures are figures. A round of both sides takes about 8 s here, a session of 10 rounds 2 minutes.
"""

import pytest


@pytest.mark.axion_slo(prompt_tps=1)
def test_prompt(axion):
    axion.prompt(64)


@pytest.mark.axion_slo(gen_tps=1)
def test_generation(axion):
    axion.generate(16)


@pytest.mark.axion_slo(per_user_tps=1, max_batch=2)
def test_two_users(axion):
    axion.batched(n_prompt=16, n_gen=8, batch_sizes=[2])
