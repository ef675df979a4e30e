"""A recorded run replayed through the plugin: a test double of the engine, for pytester tests only.

A run's JSON report keeps every cell's samples; :class:`ReplayEngine` answers the engine's requests
with them, turned back into the seconds the real engine returns, so that a user's test file (the
reference suite, say) goes through the real settings, promises, confirmations and messages with a
16-core machine's figures, or a build doctored to misbehave. The real engine is tested on the real
model elsewhere; nothing here replaces that.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

from pytest_axion.records import BatchedRun, EngineError, ModelFacts, Run, WarmUpRun

DATA = Path(__file__).parent / "data"
MANY_CORE = DATA / "many-core" / "reference-suite-16t-report.json"
TWO_THREADS = DATA / "replay" / "reference-suite-2t.json"

Cell = tuple[int, int, int]   # (n_prompt, n_gen, batch_size)
Doctor = Callable[[Cell, dict[str, list[float]]], dict[str, list[float]]]


def recorded_cells(report: Path) -> dict[Cell, dict[str, list[float]]]:
    """Samples by cell and metric; where a cell was measured by several tests, the first is kept."""
    cells: dict[Cell, dict[str, list[float]]] = {}
    for row in json.loads(report.read_text())["results"]:
        cell = (row["n_prompt"], row["n_gen"], row["batch_size"])
        cells.setdefault(cell, {}).setdefault(row["metric"], list(row["samples"]))
    return cells


class ReplayEngine:
    """The engine's interface over recorded cells; a cell not recorded is an EngineError naming it."""

    def __init__(self, report: Path, doctor: Doctor | None = None) -> None:
        self.cells = recorded_cells(report)
        self.doctor = doctor or (lambda _cell, samples: samples)
        self.facts = ModelFacts(description="replayed", n_params=134_515_008, size_bytes=96_583_296, n_vocab=49152,
                                n_ctx_train=8192, model_buffers=("CPU_REPACK",), system_info="CPU : AVX2 = 1 |",
                                llama_cpp_python_version="replay")

    def run(self, kind: str, *, repetitions: int, warmup: bool = True, progress: object = None,
            **shape: int) -> Run:
        if kind != "batched":
            raise EngineError(f"the replayed report holds batched cells only, not {kind}")
        n_prompt, n_gen, batch_size = shape["n_prompt"], shape["n_gen"], shape["batch_size"]
        cell = (n_prompt, n_gen, batch_size)
        if cell not in self.cells:
            raise EngineError(f"no recorded cell pp{n_prompt} tg{n_gen} x{batch_size} in the replayed report")
        samples = self.doctor(cell, self.cells[cell])
        steps = [s / 1e3 for s in samples["itl_ms"]]
        reps = len(samples["prompt_tps"])
        return BatchedRun(
            n_prompt=n_prompt, n_gen=n_gen, batch_size=batch_size,
            prompt_seconds=tuple(batch_size * n_prompt / v for v in samples["prompt_tps"]),
            gen_seconds=tuple(batch_size * n_gen / v for v in samples["gen_tps"]),
            step_seconds=tuple(tuple(steps[i * n_gen:(i + 1) * n_gen]) for i in range(reps)))

    def warm_up(self, n_prompt: int) -> WarmUpRun:
        return WarmUpRun(n_prompt=n_prompt, seconds=(0.1, 0.1, 0.1), settled=True)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    @property
    def alive(self) -> bool:
        return True

    measures_contention = True

    def describe(self) -> str:
        return ""

    def restart(self) -> None:
        pass

    def close(self) -> None:
        pass


def replay(monkeypatch, report: Path, doctor: Doctor | None = None) -> None:
    """Make pytester runs in this process measure ``report`` instead of loading llama.cpp."""
    # The module as sys.modules has it now: pytester forgets what a run imported (the plugin imports the harness
    # only under --axion-slo), while the package keeps an attribute pointing at the forgotten copy.
    harness = importlib.import_module("pytest_axion.harness")
    monkeypatch.setattr(harness, "EngineProcess",
                        lambda python, model_path, threads, **_options: ReplayEngine(report, doctor))
