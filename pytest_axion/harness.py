"""The test-facing harness: what a test measures with (``axion``), over the deployment's loaded engine."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pytest_axion.engines.base import Measured
from pytest_axion.engines.deployment import LoadedModel
from pytest_axion.errors import MeasurementError
from pytest_axion.machine.hardware import HardwareFingerprint
from pytest_axion.machine.model import ModelFingerprint
from pytest_axion.machine.sizing import prompt_fill_tokens
from pytest_axion.records import (
    MAX_SEQUENCES,
    CapacitySearch,
    EngineError,
    Measurement,
    NotRecorded,
    ProgressCallback,
    workload_of,
    workload_request,
)

__all__ = ["Axion", "BatchedCell", "BatchedResult", "LoadedModel", "remeasure"]

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

        def measure(batch_size: int, reps: int | None, *, beyond: bool = False) -> float:
            start = time.perf_counter()
            measured = self._measure("batched", reps, n_prompt=n_prompt, n_gen=n_gen, batch_size=batch_size,
                                     unrecorded_ends=beyond)
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
            try:
                measure(following, search_repetitions, beyond=True)
            except NotRecorded:
                stopped = f"the replayed recording, which holds no {following}-user cell"
                break
            spent += seconds[following]
            size = following
        else:
            stopped = "a size below the promise"
        self._record_capacity(CapacitySearch(
            nodeid=self.nodeid, n_prompt=n_prompt, n_gen=n_gen, threshold_tps=threshold, threshold_label=label,
            per_user_tps=tuple((b, per_user(b)) for b in sorted(cells)), stopped=stopped))
        return BatchedResult(n_prompt=n_prompt, n_gen=n_gen, cells=cells)

    def _measure(self, kind: str, repetitions: int | None, *, unrecorded_ends: bool = False,
                 **shape: int) -> dict[str, Measurement]:
        """One workload; in an A/B session on both sides (their rounds go to ``record_pair``). ``unrecorded_ends``:
        a workload a replayed recording lacks is raised as such (a search then ends), not as the test's error."""
        with self._engine_errors(unrecorded_ends):
            measured = self.loaded.engine.measure(kind, nodeid=self.nodeid, threads=self.threads,
                                                  repetitions=self._reps(repetitions), progress=self._progress,
                                                  **shape)
        if measured.rounds is not None and self._record_pair is not None:
            self._record_pair(*measured.rounds)
        self._keep(list(measured.current.values()))
        return measured.current

    def _reps(self, repetitions: int | None) -> int:
        return self.repetitions if repetitions is None else repetitions

    def _runs(self, repetitions: int | None) -> int:
        """Timed repetitions plus the warm-up: what a cell's time is proportional to."""
        return self._reps(repetitions) + 1

    @contextmanager
    def _engine_errors(self, unrecorded_ends: bool = False) -> Iterator[None]:
        try:
            yield
        except EngineError as err:
            if unrecorded_ends and isinstance(err, NotRecorded):
                raise
            raise MeasurementError(f"{self.nodeid}: {err}") from None

    def _keep(self, measurements: list[Measurement]) -> list[Measurement]:
        for measurement in measurements:
            self.measurements.append(measurement)
            self._record(measurement)
        return measurements


def remeasure(loaded: LoadedModel, measurements: Sequence[Measurement], *, repetitions: int,
              progress: ProgressCallback | None = None) -> list[Measured]:
    """Measure the workloads behind ``measurements`` again, fresh (warm-up included): each distinct workload once,
    however many of its metrics are asked for."""
    fresh: list[Measured] = []
    for m in {workload_of(m): m for m in measurements}.values():
        kind, shape_args = workload_request(m)
        try:
            measured = loaded.engine.measure(kind, nodeid=m.nodeid, threads=loaded.threads, repetitions=repetitions,
                                             progress=progress, **shape_args)
        except EngineError as err:
            raise MeasurementError(f"{m.nodeid}: measuring again in fresh processes: {err}") from None
        fresh.append(measured)
    return fresh


def _distinct_sizes(batch_sizes: Iterable[int]) -> list[int]:
    sizes = sorted(set(int(b) for b in batch_sizes))
    if not sizes or sizes[0] < 1:
        raise MeasurementError(f"batch_sizes must be positive whole numbers, got {list(batch_sizes)}")
    return sizes
