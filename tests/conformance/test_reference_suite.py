"""The reference conformance suite: Arm's Llama 3.3 70B on Axion benchmark, as tests.

Run it with ``pytest --axion-slo tests/conformance``. Without ``--axion-slo`` every test here is
skipped, so an ordinary ``pytest`` stays fast.
"""

PROMPT_SIZES = (128, 512)
GENERATION_LENGTHS = (32, 128)
BATCH_SIZES = (1, 2, 4, 8)


def test_prompt_encoding(axion):
    """Figure 1: prompt encoding speed at two prompt sizes."""
    for n_tokens in PROMPT_SIZES:
        assert axion.prompt(n_tokens).median > 0


def test_token_generation(axion):
    """Figure 2 at batch 1: generation speed at two generation lengths."""
    for n_tokens in GENERATION_LENGTHS:
        assert axion.generate(n_tokens).median > 0


def test_concurrent_users(axion):
    """Figures 2 and 3: total and per-user generation speed as concurrent users grow."""
    result = axion.batched(n_prompt=128, n_gen=64, batch_sizes=BATCH_SIZES)
    assert result.batch_sizes == list(BATCH_SIZES)
