"""The test-facing harness: load the model once, run workloads, turn raw timings into measurements."""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

from pytest_axion.engines.base import Engine
from pytest_axion.engines.paired import PairedEngine, measure_paired
from pytest_axion.engines.worker import EngineProcess, WorkerError
from pytest_axion.errors import MeasurementError, ModelFileError
from pytest_axion.machine.environment import OtherCpuMeter
from pytest_axion.machine.gguf import read_gguf_info
from pytest_axion.machine.hardware import HardwareFingerprint, collect_hardware
from pytest_axion.machine.model import ModelFingerprint, embedded_model_path, fingerprint_model
from pytest_axion.machine.sizing import prompt_fill_tokens
from pytest_axion.records import (
    MAX_SEQUENCES,
    CapacitySearch,
    EngineError,
    Measurement,
    ProgressCallback,
    Run,
    WarmUpRun,
    measurements_of,
    workload_of,
    workload_request,
)
from pytest_axion.settings import Settings


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded into llama.cpp, with the fingerprints of the model and the machine."""

    engine: Engine   # a worker process or an endpoint; a PairedEngine of two in an A/B session
    model: ModelFingerprint
    hardware: HardwareFingerprint
    threads: int
    load_seconds: float
    warm_up: WarmUpRun | None = None

    def close(self) -> None:
        self.engine.close()


def load_model(settings: Settings, *, say: Callable[[str], None] | None = None) -> LoadedModel:
    """Check the model file, load it once, and fingerprint model and machine."""
    if settings.served:
        return _load_served(settings, say)
    path = settings.model.value or str(embedded_model_path())
    info = read_gguf_info(path)  # refuse bad files before llama.cpp can crash on them
    start = time.perf_counter()
    engine: Engine
    python = settings.python.value or sys.executable
    try:
        if settings.ab_baseline.value is not None:
            def worker(interpreter: str, label: str) -> Callable[[], Engine]:
                return lambda: EngineProcess(interpreter, model_path=path, threads=settings.threads.value,
                                             label=label, hang_floor_s=settings.worker_timeout_s.value)

            engine = PairedEngine(worker(settings.ab_baseline.value, "A/B baseline (--axion-ab-baseline)"),
                                  worker(python, "A/B current"), rounds=settings.ab_rounds.value)
        else:
            engine = EngineProcess(python, model_path=path, threads=settings.threads.value,
                                   hang_floor_s=settings.worker_timeout_s.value)
    except (EngineError, WorkerError) as err:
        if type(err) is WorkerError and "could not load" in str(err):
            raise ModelFileError(f"{err}: check that {path} is a model this llama.cpp build supports") from None
        raise
    load_seconds = time.perf_counter() - start
    try:
        # Until the speed settles, so that the session's first cell is not measured cold.
        warm_up = engine.warm_up(prompt_fill_tokens(settings.threads.value))
        hardware = collect_hardware(
            system_info=engine.facts.system_info,
            llama_cpp_python_version=engine.facts.llama_cpp_python_version,
            hardware_id_override=settings.hardware.value,
            override_source=settings.hardware.source,
        )
    except BaseException:
        engine.close()   # a worker that hung or crashed in its warm-up must not outlive the session
        raise
    return LoadedModel(engine=engine, model=fingerprint_model(path, info=info), hardware=hardware,
                       threads=settings.threads.value, load_seconds=load_seconds, warm_up=warm_up)


def _load_served(settings: Settings, say: Callable[[str], None] | None) -> LoadedModel:
    """A served deployment as the engine: llama-server started here (``--axion-serve N``), or an endpoint."""
    from pytest_axion.engines.endpoint import EndpointEngine, served_model_name  # only for served sessions (httpx)

    start = time.perf_counter()
    if settings.serve_slots.value is not None:
        from pytest_axion.serve.build import SERVER, build_programs
        from pytest_axion.serve.llama_server import LlamaServer

        path = settings.model.value or str(embedded_model_path())
        info = read_gguf_info(path)
        binary = build_programs((SERVER,), say=say)[SERVER]
        server = LlamaServer(binary, path, threads=settings.threads.value, slots=settings.serve_slots.value).start()
        try:
            engine = EndpointEngine(server.url, label="llama-server", restart_server=server.restart, server=server,
                                    api_key=server.api_key)
        except BaseException:
            server.stop()
            raise
        served: Engine = engine
        model = fingerprint_model(path, info=info)
        model = replace(model, file_name=f"{model.label}@llama-server-np{settings.serve_slots.value}.gguf")
        hardware_override, override_source = settings.hardware.value, settings.hardware.source
    else:
        url = str(settings.endpoint.value)
        engine = served = EndpointEngine(url, model=settings.endpoint_model.value, api_key=settings.endpoint_key)
        model_name = served_model_name(engine.server.model)
        digest = hashlib.sha256(f"{url} {model_name} {engine.server.build}".encode()).hexdigest()
        model = ModelFingerprint(file_name=f"{model_name}@endpoint", path=url, sha256=digest,
                                 architecture="served", quantization="unknown", n_params=0, size_bytes=0)
        # The deployment, not this client machine, is the hardware: name it, or it is named after the endpoint.
        hardware_override = settings.hardware.value or endpoint_hardware_id(url)
        override_source = settings.hardware.source if settings.hardware.value else "--axion-endpoint"
    if settings.ab_endpoint.value is not None:
        # B is the deployment named above; A the one it is judged against, measured in alternating rounds
        ab_url = settings.ab_endpoint.value
        try:
            served = PairedEngine(lambda: EndpointEngine(ab_url, label="A/B baseline endpoint",
                                                         option="--axion-ab-endpoint",
                                                         api_key=settings.ab_endpoint_key), lambda: engine,
                                  rounds=settings.ab_rounds.value)
        except BaseException:
            engine.close()
            raise
    load_seconds = time.perf_counter() - start
    try:
        warm_up = served.warm_up(prompt_fill_tokens(settings.threads.value))
        hardware = collect_hardware(system_info=engine.facts.system_info, llama_cpp_python_version="served",
                                    hardware_id_override=hardware_override, override_source=override_source)
    except BaseException:
        served.close()   # the server started here must not outlive a session that could not begin
        raise
    return LoadedModel(engine=served, model=model, hardware=hardware, threads=settings.threads.value,
                       load_seconds=load_seconds, warm_up=warm_up)


def endpoint_hardware_id(url: str) -> str:
    """An external endpoint's hardware id, unless --axion-hardware names it: ``endpoint-<host>-<port>``."""
    host = url.split("://", 1)[1].split("/", 1)[0]
    return "endpoint-" + "".join(c if c.isalnum() or c in "._-" else "-" for c in host)


def engine_run(engine: Engine, kind: str, *, repetitions: int,
               progress: ProgressCallback | None, **shape: int) -> tuple[Run, float | None]:
    """One workload on one engine (``kind`` is prompt, generation or batched), and the CPUs' worth of
    other processes' work that ran meanwhile."""
    # Contention is measured against this process tree; a server elsewhere (or not our child) would count as
    # "other processes", so an external endpoint reports none.
    meter = OtherCpuMeter().start() if engine.measures_contention else None
    run = engine.run(kind, repetitions=repetitions, progress=progress, **shape)  # type: ignore[arg-type]  # sizes
    return run, meter.stop() if meter is not None else None


# (A's measurements, B's measurements) of one workload, by metric
PairRecorder = Callable[[dict[str, Measurement], dict[str, Measurement]], None]


@dataclass(frozen=True)
class BatchedCell:
    """One batch size of a batched run: every figure llama-batched-bench prints, with samples.

    A figure is None where the measured system cannot give it: a served run of one output token has no
    generation after its first token (no generation speed, per-user speed or inter-token latency). In
    process every figure is there.
    """

    batch_size: int
    prompt_tps: Measurement | None = None
    gen_tps: Measurement | None = None
    per_user_tps: Measurement | None = None
    ttft_ms: Measurement | None = None
    itl_ms: Measurement | None = None

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


class Axion:
    """What a test uses to measure: ``axion.prompt()``, ``axion.generate()``, ``axion.batched()``,
    ``axion.capacity()``.

    Every result is also recorded for the session report.
    """

    def __init__(self, loaded: LoadedModel, *, nodeid: str, repetitions: int,
                 record: Callable[[Measurement], None], progress: ProgressCallback | None = None,
                 record_pair: PairRecorder | None = None,
                 promised_per_user: Callable[[], tuple[float, str] | None] = lambda: None,
                 record_capacity: Callable[[CapacitySearch], None] = lambda _: None,
                 fill_tokens: Callable[[], int] | None = None) -> None:
        self.loaded = loaded
        self.nodeid = nodeid
        self.repetitions = repetitions
        self.measurements: list[Measurement] = []
        self._record = record
        self._record_pair = record_pair
        self._progress = progress
        self._promised_per_user = promised_per_user
        self._record_capacity = record_capacity
        self._fill_tokens = fill_tokens

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
        """Tokens per call (prompt x users) that keep this run's threads busy: by default 32 per thread, at most
        512; with ``--axion-prompt-sizing sweep`` where this machine's prompt speed levels off for this model.

        Prompt speed is only steady above this (see :mod:`pytest_axion.machine.sizing`); size prompt workloads with it.
        """
        return self._fill_tokens() if self._fill_tokens is not None else prompt_fill_tokens(self.threads)

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
            return per_user(batch_size)

        def per_user(batch_size: int) -> float:
            speed = cells[batch_size].per_user_tps
            if speed is None:
                raise MeasurementError(f"{self.nodeid}: capacity needs each user's speed after the first token, "
                                       f"which a run of n_gen={n_gen} does not give here: ask for n_gen of 2 or more")
            return speed.median

        for batch_size in _distinct_sizes(batch_sizes):
            measure(batch_size, repetitions)
        spent, size = 0.0, max(cells)
        stopped = (f"max_users ({max_users})" if max_users < MAX_SEQUENCES
                   else f"the most users llama.cpp holds in one context ({max_users})")
        while all(per_user(b) >= threshold for b in cells):
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
            per_user_tps=tuple((b, per_user(b)) for b in sorted(cells)), stopped=stopped))
        return BatchedResult(n_prompt=n_prompt, n_gen=n_gen, cells=cells)

    def _measure(self, kind: str, repetitions: int | None, **shape: int) -> dict[str, Measurement]:
        """One workload: measured here, or on both sides of an A/B session (then one sample per round)."""
        engine = self.loaded.engine
        with self._engine_errors():
            if isinstance(engine, PairedEngine):
                paired = measure_paired(engine, kind, nodeid=self.nodeid, threads=self.threads, **shape)
                measured = paired.current
                if self._record_pair is not None:
                    self._record_pair(paired.baseline_rounds, paired.current_rounds)
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


def _distinct_sizes(batch_sizes: Iterable[int]) -> list[int]:
    sizes = sorted(set(int(b) for b in batch_sizes))
    if not sizes or sizes[0] < 1:
        raise MeasurementError(f"batch_sizes must be positive whole numbers, got {list(batch_sizes)}")
    return sizes
