"""The efficiency promise as a release gate on a machine with no baseline (benchmarks/efficiency.py runs it).

The fractions sit between what the normal build and a build without its SIMD kernels reach on the
2-vCPU AMD EPYC VM of BENCHMARKS.md ("Efficiency"); on another machine, read that section and set your own.
"""

import pytest


@pytest.mark.axion_slo(efficiency={"gen_bandwidth": 0.30})
def test_generation_uses_the_memory_bandwidth(axion):
    axion.generate(128)


@pytest.mark.axion_slo(efficiency={"prompt_compute": 0.42})
def test_prompt_encoding_uses_the_cores(axion):
    axion.prompt(512)
