"""The reference conformance suite: Arm's "Llama 3.3 70B on Google Axion" benchmark, as tests.

Run it with ``pytest --axion-slo tests/conformance`` (add ``--axion-report r.json --axion-plots figs``
for the JSON report and the three figures). Without ``--axion-slo`` every test is skipped.

The publication's method, reproduced on the configured model:
  figure 1  prompt encoding speed at two prompt sizes and batch sizes 1 to 4;
  figure 2  token generation at two generation lengths, total over the batch as users are added;
  figure 3  the speed each user sees as users are added, against human reading speed.

The promises are the publication's, kept literally where it gave figures:
- prompt_tps=50 and per_user_tps="reading" (5 t/s) up to max_batch=4. The embedded model
  (SmolLM2-135M Q4_1) is ~500x smaller than Llama 3.3 70B and clears them by a wide margin on every
  machine seen (prompt 170-6800 t/s, per-user at batch 4 ~35-225 t/s from 1 to 16 threads), so they
  fail at once on a broken build, not on a slow machine.
- gen_tps=20: the publication reported the trend, not a floor; 20 t/s total keeps a 5x margin under the
  slowest batch-1 generation seen (~100 t/s with one thread).
- ttft_ms=2000 at p90: MLPerf's llama2-70b server limit for time to first token.
- steady_within=0.25 and gen_scaling=1.15: the publication's shape promises. Generation spreads 0-17%
  across lengths on 2-vCPU VMs (the high end in a slow spell) and 5-11% on 16 cores; total generation
  rises 1.22-1.68x from batch 1 to 4 on 2 vCPUs and 2.2x on 16 cores. A miss is measured again before
  it fails. The generation test holds only generation steady: its 8-token prompts really do run faster
  as the batch fills the cores, which is not what the publication's steadiness was about.

The workloads follow the machine (``axion.fill_tokens``, see ``pytest_axion.machine.sizing``), because what
fills 2 cores leaves 16 idle. Prompt speed depends on the tokens of one call (prompt x users) and
levels off, at 90% of its fastest, after about 16 tokens with 1 thread, 64 with 2 (llama-bench on a
2-vCPU EPYC) and 512 with 16 (a 16-core Xeon, where 32-token prompts ran at 1778 t/s and 512-token
calls at 6257). The sizing rule: 32 tokens per thread, at most one 512-token micro-batch:
- prompt encoding: prompts of fill and 2 x fill tokens (64 and 128 on 2 threads, 512 and 1024 on 16+),
  so that every cell, batch 1 included, fills the cores and steadiness means what the publication meant;
- time to first token: prompts of 2 x fill tokens for 1 and 2 users, a fixed share of the 2 s limit on
  any machine (0.7-0.8 s at 1-2 threads here, ~0.3 s on 16 cores);
- readers: the most users whose requests keep reading speed and MLPerf's 2 s TTFT together, 90% of them
  (``axion.capacity``): batch sizes 1, 2, 4, 8, then doubling while every level holds and bisecting to
  within 10%, 256 users or 120 s of measuring, with short exchanges (16-token prompts, 16 tokens out) so
  that the end is reached in time; the summary reports the bracket and the promise that ended it;
- generation: batch sizes 1, 2 and 4, the publication's range for its scaling claim, at 16 and 64 tokens.
A model too slow for these within a test's budget (``--axion-budget``, 120 s) measures shorter ones: fill is
shortened where a call of it would take over 1/120 of the budget at the model's prompt speed, and the generation
lengths (``axion.gen_tokens``) by the same rule; a proxy of Llama 3.3 70B on 2 cores measures prompts of 32 and
64 tokens and generations of 8 and 32.
The suite takes about 2 minutes on 2 cores, bounded on many by the capacity budget.
"""

import pytest


@pytest.mark.axion_slo(prompt_tps=50, steady_within=0.25)
def test_prompt_encoding(axion):
    """Figure 1: prompt encoding speed, steady across batch sizes and prompt sizes."""
    for n_prompt in (axion.fill_tokens, 2 * axion.fill_tokens):
        axion.batched(n_prompt=n_prompt, n_gen=1, batch_sizes=[1, 2, 3, 4])


@pytest.mark.axion_slo(gen_tps=20, gen_scaling=1.15, steady_within={"gen_tps": 0.25})
def test_token_generation(axion):
    """Figure 2: total generation speed at two generation lengths, as users are added."""
    longest = axion.gen_tokens(64)
    for n_gen in (longest // 4, longest):
        axion.batched(n_prompt=8, n_gen=n_gen, batch_sizes=[1, 2, 4])


@pytest.mark.axion_slo(per_user_tps="reading", max_batch=4)
def test_every_user_reads_comfortably(axion):
    """Figure 3: each of up to 4 concurrent users gets at least human reading speed; where that ends, with
    each user's first token within MLPerf's 2 s as well."""
    axion.capacity(n_prompt=16, n_gen=16, ttft_ms=2000)


@pytest.mark.axion_slo(ttft_ms=2000, ttft_percentile=90)
def test_time_to_first_token(axion):
    """MLPerf's TTFT limit for an interactive service."""
    axion.batched(n_prompt=2 * axion.fill_tokens, n_gen=4, batch_sizes=[1, 2])
