"""The test-facing harness: load the model once, run workloads, turn raw timings into measurements."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pytest_axion.engine import (
    MAX_SEQUENCES,
    BatchedRun,
    EngineError,
    GenerationRun,
    LlamaEngine,
    ProgressCallback,
    PromptRun,
    WarmUpRun,
)
from pytest_axion.environment import OtherCpuMeter
from pytest_axion.errors import MeasurementError, ModelFileError
from pytest_axion.gguf import read_gguf_info
from pytest_axion.hardware import HardwareFingerprint, collect_hardware
from pytest_axion.model import ModelFingerprint, embedded_model_path, fingerprint_model
from pytest_axion.records import Measurement
from pytest_axion.settings import Settings
from pytest_axion.sizing import prompt_fill_tokens
from pytest_axion.worker import PairedEngine, Run


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded into llama.cpp, with the fingerprints of the model and the machine."""

    engine: LlamaEngine | PairedEngine   # PairedEngine: an A/B session (--axion-ab-baseline)
    model: ModelFingerprint
    hardware: HardwareFingerprint
    threads: int
    load_seconds: float
    warm_up: WarmUpRun | None = None

    def close(self) -> None:
        self.engine.close()


def load_model(settings: Settings) -> LoadedModel:
    """Check the model file, load it once, and fingerprint model and machine."""
    path = settings.model.value or str(embedded_model_path())
    info = read_gguf_info(path)  # refuse bad files before llama.cpp can crash on them
    start = time.perf_counter()
    engine: LlamaEngine | PairedEngine
    try:
        if settings.ab_baseline.value is not None:
            # Both sides in worker processes, so that neither has the pytest process as an advantage.
            engine = PairedEngine(settings.ab_baseline.value, sys.executable, model_path=path,
                                  threads=settings.threads.value, rounds=settings.ab_rounds.value)
        else:
            engine = LlamaEngine(path, threads=settings.threads.value)
    except EngineError as err:
        raise ModelFileError(f"{err}: check that {path} is a model this llama.cpp build supports") from None
    load_seconds = time.perf_counter() - start
    # Until the speed settles, so that the session's first cell is not measured cold.
    warm_up = engine.warm_up(prompt_fill_tokens(settings.threads.value))
    hardware = collect_hardware(
        system_info=engine.facts.system_info,
        llama_cpp_python_version=engine.facts.llama_cpp_python_version,
        hardware_id_override=settings.hardware.value,
        override_source=settings.hardware.source,
    )
    return LoadedModel(engine=engine, model=fingerprint_model(path, info=info), hardware=hardware,
                       threads=settings.threads.value, load_seconds=load_seconds, warm_up=warm_up)


# -- raw timings -> measurements ----------------------------------------------------------------

def prompt_measurement(run: PromptRun, *, nodeid: str, threads: int) -> Measurement:
    return Measurement(nodeid=nodeid, metric="prompt_tps", batch_size=1, n_prompt=run.n_prompt, n_gen=0,
                       threads=threads, samples=tuple(run.n_prompt / s for s in run.seconds))


def generation_measurement(run: GenerationRun, *, nodeid: str, threads: int) -> Measurement:
    return Measurement(nodeid=nodeid, metric="gen_tps", batch_size=1, n_prompt=0, n_gen=run.n_gen,
                       threads=threads, samples=tuple(run.n_gen / s for s in run.seconds))


def batched_measurements(run: BatchedRun, *, nodeid: str, threads: int) -> dict[str, Measurement]:
    """llama-batched-bench's figures: S_PP, S_TG, S_TG / B, T_PP as TTFT, and per-step latency."""
    b, pp, tg = run.batch_size, run.n_prompt, run.n_gen
    samples = {
        "prompt_tps": [b * pp / s for s in run.prompt_seconds],
        "gen_tps": [b * tg / s for s in run.gen_seconds],
        "per_user_tps": [tg / s for s in run.gen_seconds],
        "ttft_ms": [s * 1e3 for s in run.prompt_seconds],
        "itl_ms": [s * 1e3 for steps in run.step_seconds for s in steps],
    }
    return {
        metric: Measurement(nodeid=nodeid, metric=metric, batch_size=b, n_prompt=pp, n_gen=tg,
                            threads=threads, samples=tuple(values))
        for metric, values in samples.items()
    }


def measurements_of(run: Run, *, nodeid: str, threads: int, other_cpus: float | None = None) -> dict[str, Measurement]:
    """Every metric of a run record, by metric name, each knowing how much other work ran meanwhile."""
    if isinstance(run, PromptRun):
        measured = {"prompt_tps": prompt_measurement(run, nodeid=nodeid, threads=threads)}
    elif isinstance(run, GenerationRun):
        measured = {"gen_tps": generation_measurement(run, nodeid=nodeid, threads=threads)}
    else:
        measured = batched_measurements(run, nodeid=nodeid, threads=threads)
    return {metric: dataclasses.replace(m, other_cpus=other_cpus) for metric, m in measured.items()}


def engine_run(engine: LlamaEngine | PairedEngine, kind: str, *, repetitions: int,
               progress: ProgressCallback | None, **shape: int) -> tuple[Run, float | None]:
    """One workload on one engine (``kind`` is prompt, generation or batched), and the CPUs' worth of
    other processes' work that ran meanwhile."""
    run: Run
    meter = OtherCpuMeter().start()
    if kind == "prompt":
        run = engine.run_prompt(shape["n_prompt"], repetitions=repetitions, progress=progress)
    elif kind == "generation":
        run = engine.run_generation(shape["n_gen"], repetitions=repetitions, progress=progress)
    else:
        run = engine.run_batched(shape["n_prompt"], shape["n_gen"], shape["batch_size"], repetitions=repetitions,
                                 progress=progress)
    return run, meter.stop()


# (A's measurements, B's measurements) of one workload, by metric
PairRecorder = Callable[[dict[str, Measurement], dict[str, Measurement]], None]


@dataclass(frozen=True)
class BatchedCell:
    """One batch size of a batched run: every figure llama-batched-bench prints, with samples."""

    batch_size: int
    prompt_tps: Measurement
    gen_tps: Measurement
    per_user_tps: Measurement
    ttft_ms: Measurement
    itl_ms: Measurement

    @classmethod
    def of(cls, batch_size: int, measurements: Mapping[str, Measurement]) -> BatchedCell:
        return cls(batch_size=batch_size, **measurements)


@dataclass(frozen=True)
class BatchedResult:
    n_prompt: int
    n_gen: int
    cells: dict[int, BatchedCell]

    @property
    def batch_sizes(self) -> list[int]:
        return sorted(self.cells)

    def __getitem__(self, batch_size: int) -> BatchedCell:
        return self.cells[batch_size]


DEFAULT_CAPACITY_BUDGET_S = 45.0
DEFAULT_SEARCH_REPETITIONS = 3


@dataclass(frozen=True)
class CapacitySearch:
    """Where per-user speed falls below a promise as users are added: the bracket, and why the search ended."""

    nodeid: str
    n_prompt: int
    n_gen: int
    threshold_tps: float
    threshold_label: str
    per_user_tps: tuple[tuple[int, float], ...]   # (batch size, median per-user tokens/s), as measured
    stopped: str                                   # why no larger batch was measured

    @property
    def most_passing(self) -> int:
        """The most users that all got the promised speed, at every measured size up to it (0: none)."""
        most = 0
        for batch_size, speed in self.per_user_tps:
            if speed < self.threshold_tps:
                break
            most = batch_size
        return most

    @property
    def fewest_failing(self) -> int | None:
        return next((b for b, speed in self.per_user_tps if speed < self.threshold_tps), None)

    def to_json(self) -> dict[str, object]:
        return {"n_prompt": self.n_prompt, "n_gen": self.n_gen, "threshold_tps": self.threshold_tps,
                "threshold_label": self.threshold_label, "most_passing": self.most_passing,
                "fewest_failing": self.fewest_failing, "stopped": self.stopped,
                "per_user_tps": [{"batch_size": b, "median": v} for b, v in self.per_user_tps]}


class Axion:
    """What a test uses to measure: ``axion.prompt()``, ``axion.generate()``, ``axion.batched()``,
    ``axion.capacity()``.

    Every result is also recorded for the session report.
    """

    def __init__(self, loaded: LoadedModel, *, nodeid: str, repetitions: int,
                 record: Callable[[Measurement], None], progress: ProgressCallback | None = None,
                 record_pair: PairRecorder | None = None,
                 promised_per_user: Callable[[], tuple[float, str] | None] = lambda: None,
                 record_capacity: Callable[[CapacitySearch], None] = lambda _: None) -> None:
        self.loaded = loaded
        self.nodeid = nodeid
        self.repetitions = repetitions
        self.measurements: list[Measurement] = []
        self._record = record
        self._record_pair = record_pair
        self._progress = progress
        self._promised_per_user = promised_per_user
        self._record_capacity = record_capacity

    @property
    def model(self) -> ModelFingerprint:
        return self.loaded.model

    @property
    def hardware(self) -> HardwareFingerprint:
        return self.loaded.hardware

    @property
    def threads(self) -> int:
        return self.loaded.threads

    @property
    def fill_tokens(self) -> int:
        """Tokens per call (prompt x users) that keep this run's threads busy: 32 per thread, at most 512.

        Prompt speed is only steady above this (see :mod:`pytest_axion.sizing`); size prompt workloads with it.
        """
        return prompt_fill_tokens(self.threads)

    def prompt(self, n_tokens: int = 512, *, repetitions: int | None = None) -> Measurement:
        """Prompt processing speed of an n_tokens prompt (llama-bench ``pp``), tokens/s."""
        return self._measure("prompt", repetitions, n_prompt=n_tokens)["prompt_tps"]

    def generate(self, n_tokens: int = 128, *, repetitions: int | None = None) -> Measurement:
        """Generation speed of n_tokens single-token decodes (llama-bench ``tg``), tokens/s."""
        return self._measure("generation", repetitions, n_gen=n_tokens)["gen_tps"]

    def batched(self, n_prompt: int = 128, n_gen: int = 64, batch_sizes: Sequence[int] = (1, 2, 4), *,
                repetitions: int | None = None) -> BatchedResult:
        """B parallel users, each with its own prompt (``llama-batched-bench -npp -ntg -npl``)."""
        cells: dict[int, BatchedCell] = {}
        for batch_size in _distinct_sizes(batch_sizes):
            measurements = self._measure("batched", repetitions, n_prompt=n_prompt, n_gen=n_gen,
                                         batch_size=batch_size)
            cells[batch_size] = BatchedCell.of(batch_size, measurements)
        return BatchedResult(n_prompt=n_prompt, n_gen=n_gen, cells=cells)

    def capacity(self, n_prompt: int = 16, n_gen: int = 16, *, per_user_tps: float | None = None,
                 batch_sizes: Sequence[int] = (1, 2, 4, 8), max_users: int = MAX_SEQUENCES,
                 budget_s: float = DEFAULT_CAPACITY_BUDGET_S, repetitions: int | None = None,
                 search_repetitions: int = DEFAULT_SEARCH_REPETITIONS) -> BatchedResult:
        """``batched()`` at ``batch_sizes``, then doubling the users until each no longer gets ``per_user_tps``.

        The promise defaults to the test's ``axion_slo(per_user_tps=...)`` (``"reading"`` included). The
        doubling stops at the first size that misses it (the capacity then lies in between), at
        ``max_users``, or before a size predicted (from the last one, linearly) to overrun ``budget_s``
        seconds of measuring beyond ``batch_sizes``; the summary says which. Sizes beyond
        ``batch_sizes`` take ``search_repetitions`` each: they show where capacity ends, which a
        promise with ``max_batch`` does not enforce. The per-user speed depends on the users far more
        than on short prompt and output lengths (2 threads: 26.6 t/s each at 8 users with 16+16 tokens,
        29.5 with 64+32; 4.4 and 4.1 at 64 users), so short ones let the search reach the end in time.
        """
        promise = (float(per_user_tps), f"{per_user_tps:g} t/s") if per_user_tps else self._promised_per_user()
        if promise is None:
            raise MeasurementError(f"{self.nodeid}: axion.capacity() needs a per-user speed to search for: declare "
                                   "axion_slo(per_user_tps=...) or pass per_user_tps=")
        threshold, label = promise
        cells: dict[int, BatchedCell] = {}
        seconds: dict[int, float] = {}

        def measure(batch_size: int, reps: int | None) -> float:
            start = time.perf_counter()
            measured = self._measure("batched", reps, n_prompt=n_prompt, n_gen=n_gen, batch_size=batch_size)
            cells[batch_size] = BatchedCell.of(batch_size, measured)
            seconds[batch_size] = time.perf_counter() - start
            return cells[batch_size].per_user_tps.median

        for batch_size in _distinct_sizes(batch_sizes):
            measure(batch_size, repetitions)
        spent, size = 0.0, max(cells)
        stopped = (f"max_users ({max_users})" if max_users < MAX_SEQUENCES
                   else f"the most users llama.cpp holds in one context ({max_users})")
        while all(cell.per_user_tps.median >= threshold for cell in cells.values()):
            following = size * 2
            if following > max_users:
                break
            predicted = seconds[size] * following / size * self._runs(search_repetitions) / self._runs(
                repetitions if size in batch_sizes else search_repetitions)
            if spent + predicted > budget_s:
                stopped = (f"the time budget: {following} users would take about {predicted:.0f} s, over the "
                           f"{max(0.0, budget_s - spent):.0f} s left of {budget_s:.0f} s")
                break
            measure(following, search_repetitions)
            spent += seconds[following]
            size = following
        else:
            stopped = "a size below the promise"
        self._record_capacity(CapacitySearch(
            nodeid=self.nodeid, n_prompt=n_prompt, n_gen=n_gen, threshold_tps=threshold, threshold_label=label,
            per_user_tps=tuple((b, cells[b].per_user_tps.median) for b in sorted(cells)), stopped=stopped))
        return BatchedResult(n_prompt=n_prompt, n_gen=n_gen, cells=cells)

    def _measure(self, kind: str, repetitions: int | None, **shape: int) -> dict[str, Measurement]:
        """One workload: measured here, or on both sides of an A/B session (then one sample per round)."""
        engine = self.loaded.engine
        with self._engine_errors():
            if isinstance(engine, PairedEngine):
                meter = OtherCpuMeter().start()
                paired = engine.measure_pair(kind, **shape)
                other = meter.stop()
                measured = measurements_of(paired.current, nodeid=self.nodeid, threads=self.threads,
                                           other_cpus=other)
                if self._record_pair is not None:
                    self._record_pair(measurements_of(paired.baseline, nodeid=self.nodeid, threads=self.threads,
                                                      other_cpus=other), measured)
            else:
                run, other = engine_run(engine, kind, repetitions=self._reps(repetitions), progress=self._progress,
                                        **shape)
                measured = measurements_of(run, nodeid=self.nodeid, threads=self.threads, other_cpus=other)
        self._keep(list(measured.values()))
        return measured

    def _reps(self, repetitions: int | None) -> int:
        return self.repetitions if repetitions is None else repetitions

    def _runs(self, repetitions: int | None) -> int:
        """Timed repetitions plus the warm-up: what a cell's time is proportional to."""
        return self._reps(repetitions) + 1

    @contextmanager
    def _engine_errors(self) -> Iterator[None]:
        try:
            yield
        except EngineError as err:
            raise MeasurementError(f"{self.nodeid}: {err}") from None

    def _keep(self, measurements: list[Measurement]) -> list[Measurement]:
        for measurement in measurements:
            self.measurements.append(measurement)
            self._record(measurement)
        return measurements


def remeasure(loaded: LoadedModel, measurements: Sequence[Measurement], *, repetitions: int,
              progress: ProgressCallback | None = None) -> dict[str, Measurement]:
    """Measure the workloads behind ``measurements`` again, fresh (warm-up included), keyed like them.

    Each distinct workload runs once, however many of its metrics are asked for.
    """
    engine, threads = loaded.engine, loaded.threads
    fresh: dict[str, Measurement] = {}
    done: set[tuple[str, int, int, int]] = set()
    for m in measurements:
        workload = workload_of(m)
        if workload in done:
            continue
        done.add(workload)
        kind, shape_args = workload_request(m)
        try:
            run, other = engine_run(engine, kind, repetitions=repetitions, progress=progress, **shape_args)
        except EngineError as err:
            raise MeasurementError(f"{m.nodeid}: measuring again: {err}") from None
        results = list(measurements_of(run, nodeid=m.nodeid, threads=threads, other_cpus=other).values())
        fresh.update((r.key, r) for r in results)
    return fresh


def workload_of(m: Measurement) -> tuple[str, int, int, int]:
    """The workload a measurement came from: its several metrics share one."""
    return (_workload_kind(m), m.batch_size, m.n_prompt, m.n_gen)


def workload_request(m: Measurement) -> tuple[str, dict[str, int]]:
    """(kind, shape arguments) to measure the workload behind ``m`` again."""
    kind = _workload_kind(m)
    shape = {"prompt": {"n_prompt": m.n_prompt}, "generation": {"n_gen": m.n_gen},
             "batched": {"n_prompt": m.n_prompt, "n_gen": m.n_gen, "batch_size": m.batch_size}}[kind]
    return kind, shape


def _workload_kind(m: Measurement) -> str:
    """Which harness call produced a measurement, read from its shape."""
    if m.n_gen == 0 and m.batch_size == 1 and m.metric == "prompt_tps":
        return "prompt"
    if m.n_prompt == 0 and m.batch_size == 1:
        return "generation"
    return "batched"


def _distinct_sizes(batch_sizes: Iterable[int]) -> list[int]:
    sizes = sorted(set(int(b) for b in batch_sizes))
    if not sizes or sizes[0] < 1:
        raise MeasurementError(f"batch_sizes must be positive whole numbers, got {list(batch_sizes)}")
    return sizes
