"""A recorded run as the engine (``--axion-replay REPORT.json``): its samples judged again, nothing measured.

A ``--axion-report`` file keeps every workload's samples. Replayed, each workload a test asks for is
answered with the samples recorded for it (that test's own where it measured the workload, else the
first test's that did), so the promises, the baselines and every report judge them as if they were
measured now: "would this run pass with these promises, or against this baseline?". A confirming
attempt gets the same samples again: what was recorded is all there is.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_axion.engines.base import Measured, no_open_loop
from pytest_axion.errors import AxionError
from pytest_axion.machine.hardware import HardwareFingerprint
from pytest_axion.machine.model import ModelFingerprint
from pytest_axion.records import (
    EngineError,
    Measurement,
    ModelFacts,
    NotRecorded,
    OpenLoopRun,
    ProgressCallback,
    Run,
    WarmUpRun,
    Workload,
    requests_from_measurements,
    served_apart,
    workload_of,
)

# (workload, samples by metric) -> samples by metric: what a test makes of a recording (a build that got slower)
Doctor = Callable[[Workload, dict[str, tuple[float, ...]]], dict[str, tuple[float, ...]]]


def requested_workload(kind: str, shape: Mapping[str, int]) -> Workload:
    """The workload a harness call asks for, as :func:`records.workload_of` names a measurement's."""
    if kind == "prompt":
        return ("prompt", 1, shape["n_prompt"], 0)
    if kind == "generation":
        return ("generation", 1, 0, shape["n_gen"])
    return ("batched", shape["batch_size"], shape["n_prompt"], shape["n_gen"])


def _shape(workload: Workload) -> str:
    kind, batch_size, n_prompt, n_gen = workload
    return {"prompt": f"pp{n_prompt}", "generation": f"tg{n_gen}"}.get(kind, f"pp{n_prompt}+tg{n_gen} x{batch_size}")


class ReplayEngine:
    """The engine's interface over a report's rows; a workload the report lacks is an EngineError naming it."""

    measures_contention = False   # the recorded rows carry the contention measured when they were recorded

    def __init__(self, rows: Sequence[Mapping[str, Any]], facts: ModelFacts, *, source: str,
                 doctor: Doctor | None = None, warm_up: WarmUpRun | None = None) -> None:
        self.facts = facts
        self.source = source
        self._warm_up = warm_up
        # workload -> nodeid -> metric -> the row, first recording kept
        self._rows: dict[Workload, dict[str, dict[str, Measurement]]] = {}
        for row in rows:
            m = Measurement.from_json(row)
            self._rows.setdefault(workload_of(m), {}).setdefault(m.nodeid, {}).setdefault(m.metric, m)
        self._doctor = doctor
        self._nodeids = {nodeid for tests in self._rows.values() for nodeid in tests}
        # recorded from a server when a batched cell of several users has a TTFT per request, not per repetition
        self.requests_apart = any(served_apart(cell) for tests in self._rows.values() for cell in tests.values())

    @property
    def alive(self) -> bool:
        return True

    def describe(self) -> str:
        return f"replay of {self.source}"

    def measure(self, kind: str, *, nodeid: str, threads: int, repetitions: int, max_seconds: float | None = None,
                progress: ProgressCallback | None = None, **shape: int) -> Measured:
        workload = requested_workload(kind, shape)
        by_test = self._rows.get(workload)
        if not by_test:
            raise NotRecorded(f"{self.source} holds no {_shape(workload)} workload: replay a report of the tests "
                              "being run, with the same workload sizes (and --axion-prompt-sizing as it was recorded)")
        recorded = by_test.get(nodeid)
        if recorded is None and nodeid in self._nodeids:
            # a test replays its own recording: a capacity search ends where it ended, not in another test's cells
            raise NotRecorded(f"{nodeid} recorded no {_shape(workload)} workload in {self.source}")
        recorded = recorded or next(iter(by_test.values()))   # a test the report does not name: the first
        samples = {metric: m.samples for metric, m in recorded.items()}
        if self._doctor is not None:
            samples = self._doctor(workload, samples)
        current = {metric: Measurement(nodeid=nodeid, metric=metric, batch_size=m.batch_size, n_prompt=m.n_prompt,
                                       n_gen=m.n_gen, threads=threads, samples=tuple(samples[metric]),
                                       other_cpus=m.other_cpus)
                   for metric, m in recorded.items() if metric in samples}
        return Measured(current, requests=requests_from_measurements(current), repeatable=False)

    def run(self, kind: str, *, repetitions: int, warmup: bool = True, max_seconds: float | None = None,
            progress: ProgressCallback | None = None, **shape: int) -> Run:
        raise EngineError(f"{self.source} holds measurements, not timings: a replayed run is judged, not swept "
                          "or paired")

    def warm_up(self, n_prompt: int) -> WarmUpRun:
        return self._warm_up or WarmUpRun(n_prompt=n_prompt, seconds=(), settled=True)

    def open_loop(self, arrivals: Sequence[float], *, n_prompt: int, n_gen: int, max_in_flight: int,
                  progress: ProgressCallback | None = None) -> OpenLoopRun:
        raise no_open_loop(f"a replay of {self.source} holds no open-loop runs")

    def count_tokens(self, text: str) -> int:
        raise EngineError(f"a replay of {self.source} has no tokenizer: give the reading speed in tokens/s "
                          "(--axion-reading-speed 5)")

    def restart(self) -> None:
        pass

    def close(self) -> None:
        pass


class RecordedRun:
    """A report read for replay: the engine over its rows, and the model, machine and threads it names."""

    def __init__(self, path: Path) -> None:
        import jsonschema  # only for a replay

        from pytest_axion.schemas import validate_report

        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AxionError(f"--axion-replay: {path} does not exist: pass a --axion-report file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise AxionError(f"--axion-replay: {path} is not readable JSON ({err}): pass a --axion-report "
                             "file") from None
        if not isinstance(data, dict) or "results" not in data:
            raise AxionError(f"--axion-replay: {path} is not a pytest-axion report: pass a --axion-report file")
        try:
            validate_report(data)
            self.model = ModelFingerprint.from_json(data["model"])
            self.hardware = HardwareFingerprint.from_json(data["hardware"], source=f"{path} hardware")
            self.threads = int(data["settings"]["threads"])
            self.repetitions = int(data["settings"]["repetitions"])
        except jsonschema.ValidationError as err:
            raise AxionError(f"--axion-replay: {path} violates the report schema: {err.message[:160]}") from None
        except (KeyError, TypeError, ValueError) as err:
            raise AxionError(f"--axion-replay: {path} lacks what a replay needs ({err}): pass a report written "
                             "by --axion-report") from None
        self.path = path
        self.rows: list[Mapping[str, Any]] = list(data["results"])
        sizing = data["settings"].get("prompt_sizing")   # schema 7 on: axion.fill_tokens as the run used it
        self.fill_tokens: int | None = int(sizing["fill_tokens"]) if sizing else None
        speed = sizing.get("tokens_per_s") if sizing else None   # schema 11 on: the speed the workloads followed
        self.prompt_tps: float | None = float(speed) if speed is not None else None
        warm = data.get("warm_up")
        self.warm_up = (WarmUpRun(n_prompt=int(warm["n_prompt"]), seconds=tuple(warm["seconds"]),
                                  settled=bool(warm["settled"])) if warm else None)
        software = data.get("software") or {}
        system_info = " | ".join(f"{k} = {v}" for k, v in (software.get("llama_cpp_system_info") or {}).items())
        self.facts = ModelFacts(description=f"{self.model.label} (replayed)", n_params=self.model.n_params,
                                size_bytes=self.model.size_bytes, n_vocab=0, n_ctx_train=0, model_buffers=(),
                                system_info=system_info,
                                llama_cpp_python_version=str(software.get("llama_cpp_python", "unknown")))

    def engine(self) -> ReplayEngine:
        return ReplayEngine(self.rows, self.facts, source=str(self.path), warm_up=self.warm_up)


def read_recorded_run(path: str) -> RecordedRun:
    """The report at ``path``, read once per version of the file (the settings check it, the header names it, the
    session replays it)."""
    try:
        stat = os.stat(path)
    except OSError:
        return RecordedRun(Path(path))   # says what is wrong with it
    return _read_recorded(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_recorded(path: str, _mtime_ns: int, _size: int) -> RecordedRun:
    return RecordedRun(Path(path))
