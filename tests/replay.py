"""Recorded runs replayed through the plugin's replay engine in pytester runs, in place of the worker.

A run's JSON report keeps every cell's samples; :class:`pytest_axion.engines.replay.ReplayEngine` answers the
harness with them, so that a user's test file (the reference suite, say) goes through the real settings,
promises, confirmations and messages with a 16-core machine's figures, or a build doctored to misbehave.
The real engine is tested on the real model elsewhere; nothing here replaces that.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

from pytest_axion.engines.replay import ReplayEngine
from pytest_axion.records import ModelFacts, Workload

DATA = Path(__file__).parent / "data"
MANY_CORE = DATA / "many-core" / "reference-suite-16t-report.json"
TWO_THREADS = DATA / "replay" / "reference-suite-2t.json"

Cell = tuple[int, int, int]   # (n_prompt, n_gen, batch_size)
Doctor = Callable[[Cell, dict[str, list[float]]], dict[str, list[float]]]   # as the tests write them


def recorded_cells(report: Path) -> dict[Cell, dict[str, list[float]]]:
    """Samples by cell and metric; where a cell was measured by several tests, the first is kept."""
    cells: dict[Cell, dict[str, list[float]]] = {}
    for row in json.loads(report.read_text())["results"]:
        cell = (row["n_prompt"], row["n_gen"], row["batch_size"])
        cells.setdefault(cell, {}).setdefault(row["metric"], list(row["samples"]))
    return cells


FACTS = ModelFacts(description="replayed", n_params=134_515_008, size_bytes=96_583_296, n_vocab=49152,
                   n_ctx_train=8192, model_buffers=("CPU_REPACK",), system_info="CPU : AVX2 = 1 |",
                   llama_cpp_python_version="replay")


def replay_engine(report: Path, doctor: Doctor | None = None) -> ReplayEngine:
    """The plugin's replay engine over a report's rows (these trimmed reports lack the model and machine that
    ``--axion-replay`` needs, so the worker is replaced instead), ``doctor`` rewriting each cell's samples."""
    def by_cell(workload: Workload, samples: dict[str, tuple[float, ...]]) -> dict[str, tuple[float, ...]]:
        _kind, batch_size, n_prompt, n_gen = workload
        lists = {metric: list(values) for metric, values in samples.items()}
        return {metric: tuple(values) for metric, values in doctor((n_prompt, n_gen, batch_size), lists).items()}

    return ReplayEngine(json.loads(report.read_text())["results"], FACTS, source=report.name,
                        doctor=by_cell if doctor else None)


def replay(monkeypatch, report: Path, doctor: Doctor | None = None) -> None:
    """Make pytester runs in this process measure ``report`` instead of loading llama.cpp."""
    # The module as sys.modules has it now: pytester forgets what a run imported (the plugin imports the harness
    # only under --axion-slo), while the package keeps an attribute pointing at the forgotten copy.
    deployment = importlib.import_module("pytest_axion.engines.deployment")
    monkeypatch.setattr(deployment, "EngineProcess",
                        lambda python, model_path, threads, **_options: replay_engine(report, doctor))


def store_baseline(report: Path, root: Path, *, scale: float = 1.0) -> Path:
    """A baseline of ``report``'s own rows (three steady runs, ``scale`` times as fast: speeds multiplied, times
    divided), filed under the report's hardware id and model as a refresh would file it: what a replay is then
    judged against."""
    import dataclasses

    from pytest_axion.engines.replay import RecordedRun
    from pytest_axion.records import Measurement
    from pytest_axion.store import refresh
    from pytest_axion.store.baselines import baseline_path, update_baseline

    recorded = RecordedRun(report)
    measurements = [Measurement.from_json(row) for row in recorded.rows]
    def faster(m: Measurement, by: float) -> Measurement:
        factor = by if m.higher_is_better else 1 / by
        return dataclasses.replace(m, samples=tuple(v * factor for v in m.samples))

    runs = [refresh.RunData(measurements=tuple(faster(m, scale * f) for m in measurements),
                            passed=frozenset(m.nodeid for m in measurements)) for f in (0.995, 1.0, 1.005)]
    entries, _ = refresh.merge_runs(runs)
    provenance = refresh.provenance(hardware=recorded.hardware, model=recorded.model.to_json(),
                                    threads=recorded.threads, repetitions=5, runs=3, spacing_s=0, git=None)
    path = baseline_path(root, recorded.hardware.hardware_id, recorded.model.label)
    update_baseline(path, lambda _old: refresh.combine(None, entries, hardware_id=recorded.hardware.hardware_id,
                                                        model_label=recorded.model.label, provenance=provenance)[0])
    return path
