"""The reference conformance suite: Arm's "Llama 3.3 70B on Google Axion" benchmark, as tests.

Run it with ``pytest --axion-slo tests/conformance`` (add ``--axion-report r.json --axion-plots figs``
for the JSON report and the three figures). Without ``--axion-slo`` every test is skipped.

The publication's method, reproduced on the configured model:
  figure 1  prompt encoding speed at two prompt sizes and batch sizes 1 to 4;
  figure 2  token generation at two generation lengths, total over the batch as users are added;
  figure 3  the speed each user sees at batch sizes 1, 2, 4 and 8, against human reading speed.

How the SLOs are adapted to the embedded model (SmolLM2-135M Q4_1) on a 2-core CI machine:
- prompt_tps=50 and per_user_tps="reading" (5 t/s) up to max_batch=4 are the publication's own
  promises, kept literally. The embedded model is ~500x smaller than Llama 3.3 70B and clears them by a
  wide margin (pp ~200-480 t/s, per-user at batch 4 ~35-55 t/s on these machines), so they hold on every
  machine we run on, including a Zen 3 without AVX-512 during a slow episode (0.7x), and they fail at
  once on a broken build. Batch 8 is measured to show where capacity ends; it is reported, not enforced.
- gen_tps=20: the publication reported the trend, not a floor; 20 t/s total keeps a 5x margin under the
  slowest batch-1 generation seen here (~100 t/s with one thread).
- ttft_ms=2000 at p90: MLPerf's llama2-70b server limit for time to first token (2 s), checked at
  batch 1 and 2 with a 256-token prompt (~0.5-1.5 s here).
- steady_within=0.25 and gen_scaling=1.15: the publication's shape promises. Measured on these
  machines, prompt speed spreads 4-20% across pp32/pp128 x batch 1-4 within a run, generation spreads
  0-17% across lengths (the high end in a slow spell), and total generation rises 1.22-1.68x from
  batch 1 to 4 (two cores leave little room to batch; Axion's 32 cores gave more). 25% and 1.15x keep
  a margin over those figures, and a miss is measured again before it fails. A build that lost its
  batching (flat curve) or a cell much slower than its neighbours fails.
- The generation test checks steadiness of generation only (steady_within={"gen_tps": 0.25}): its
  8-token prompts really do run faster as the batch fills the cores (pp8 226 t/s at batch 2 vs 303 t/s
  at batch 4 on a CI machine, 30% in all three attempts), and a prompt that small is not what the
  publication's steadiness was about; the prompt test checks that, at realistic sizes.
Sizes are smaller than the publication's so that the whole suite runs well under two minutes.
"""

import pytest

PROMPT_SIZES = (32, 128)
GENERATION_LENGTHS = (16, 64)


@pytest.mark.axion_slo(prompt_tps=50, steady_within=0.25)
def test_prompt_encoding(axion):
    """Figure 1: prompt encoding speed, steady across batch sizes and prompt sizes."""
    for n_prompt in PROMPT_SIZES:
        axion.batched(n_prompt=n_prompt, n_gen=1, batch_sizes=[1, 2, 3, 4])


@pytest.mark.axion_slo(gen_tps=20, gen_scaling=1.15, steady_within={"gen_tps": 0.25})
def test_token_generation(axion):
    """Figure 2: total generation speed at two generation lengths, as users are added."""
    for n_gen in GENERATION_LENGTHS:
        axion.batched(n_prompt=8, n_gen=n_gen, batch_sizes=[1, 2, 4])


@pytest.mark.axion_slo(per_user_tps="reading", max_batch=4)
def test_every_user_reads_comfortably(axion):
    """Figure 3: each of up to 4 concurrent users gets at least human reading speed."""
    axion.batched(n_prompt=64, n_gen=32, batch_sizes=[1, 2, 4, 8])


@pytest.mark.axion_slo(ttft_ms=2000, ttft_percentile=90)
def test_time_to_first_token(axion):
    """MLPerf's TTFT limit for an interactive service."""
    axion.batched(n_prompt=256, n_gen=4, batch_sizes=[1, 2])
