"""Shape promises under a slow episode that hits the first attempt only (used by benchmarks/shape_noise.py).

With AXION_BURST=1, each test starts one busy process per CPU right before the cells it wants slowed,
for long enough to cover them; the confirming attempts, after the pause, run on a quiet machine.
"""

import os
import subprocess
import sys

import pytest

BURST = os.environ.get("AXION_BURST") == "1"


@pytest.fixture
def burst():
    def start(seconds):
        for _ in range((os.cpu_count() or 1) if BURST else 0):
            subprocess.Popen([sys.executable, "-c",
                              f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"])
    return start


@pytest.mark.axion_slo(steady_within=0.25)
def test_prompt_steady(axion, burst):
    burst(1.5)  # hits batch 1 (measured first): the slowest cell
    axion.batched(n_prompt=32, n_gen=1, batch_sizes=[1, 2, 3, 4])


@pytest.mark.axion_slo(gen_scaling=1.2)
def test_generation_scales(axion, burst):
    axion.batched(n_prompt=8, n_gen=16, batch_sizes=[1, 2])
    burst(8)  # hits batch 4: the curve looks flat
    axion.batched(n_prompt=8, n_gen=16, batch_sizes=[4])
