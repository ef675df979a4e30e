"""The test-facing harness: what a test measures with (``axion``), over the deployment's loaded engine."""

from __future__ import annotations

import math
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
from pytest_axion.promises.capacity import (
    DEFAULT_ATTAINMENT,
    RequestPromise,
    check_attainment,
    judge_level,
    min_requests,
    next_users,
)
from pytest_axion.promises.latency import DEFAULT_PERCENTILE as ITL_DEFAULT_PERCENTILE
from pytest_axion.promises.verdict import INCONCLUSIVE, MISSED
from pytest_axion.records import (
    MAX_SEQUENCES,
    CapacityLevel,
    CapacitySearch,
    EngineError,
    Measurement,
    NotRecorded,
    ProgressCallback,
    RequestFigures,
    bracket_of,
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


DEFAULT_CAPACITY_BUDGET_S = 60.0
DEFAULT_SEARCH_REPETITIONS = 3


class Axion:
    """What a test uses to measure: ``axion.prompt()``, ``axion.generate()``, ``axion.batched()``,
    ``axion.capacity()``.

    Every result is also recorded for the session report.
    """

    def __init__(self, loaded: LoadedModel, *, nodeid: str, repetitions: int,
                 record: Callable[[Measurement], None], progress: ProgressCallback | None = None,
                 record_pair: PairRecorder | None = None,
                 request_promises: Callable[[], list[RequestPromise]] = list,
                 record_capacity: Callable[[CapacitySearch], None] = lambda _: None,
                 fill_tokens: Callable[[], int] | None = None) -> None:
        self.loaded = loaded
        self.nodeid = nodeid
        self.repetitions = repetitions
        self.measurements: list[Measurement] = []
        self._record = record
        self._record_pair = record_pair
        self._progress = progress
        self._request_promises = request_promises
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
                 ttft_ms: float | None = None, itl_ms: float | None = None,
                 attainment: float = DEFAULT_ATTAINMENT, batch_sizes: Sequence[int] = (1, 2, 4, 8),
                 max_users: int = MAX_SEQUENCES, budget_s: float = DEFAULT_CAPACITY_BUDGET_S,
                 repetitions: int | None = None,
                 search_repetitions: int = DEFAULT_SEARCH_REPETITIONS) -> BatchedResult:
        """The most concurrent users whose requests keep every per-request promise of the test at once.

        The promises are the test's ``axion_slo(per_user_tps=..., ttft_ms=..., itl_ms=...)``; ``per_user_tps=``,
        ``ttft_ms=`` and ``itl_ms=`` set or replace one. ``batch_sizes`` are measured as ``batched()`` measures
        them (and judged by the test's promises), with more repetitions where a level needs more requests; then
        the search doubles the users while every level holds,
        and bisects until the bracket is no wider than 10% (or one user). A level holds when at least
        ``attainment`` of its requests met every promise, with 95% confidence (Wilson interval); each level
        measures at least enough requests for that (35 at 0.9), a level whose interval straddles the target is
        measured again (within the budget), and stays inconclusive if it still straddles (see
        :mod:`pytest_axion.promises.capacity`).
        Sizes beyond ``batch_sizes`` take at least ``search_repetitions`` repetitions each. The search ends on a
        promise, on ``max_users`` or llama.cpp's sequence limit, or before a level predicted to overrun
        ``budget_s`` seconds of measuring beyond ``batch_sizes``' first measurements; the summary says which.
        """
        where = f"{self.nodeid}: axion.capacity()"
        attainment = check_attainment(attainment, where)
        promises = self._capacity_promises(where, per_user_tps=per_user_tps, ttft_ms=ttft_ms, itl_ms=itl_ms)
        if budget_s <= 0 or max_users < 1:
            raise MeasurementError(f"{where}: budget_s must be positive and max_users at least 1, got "
                                   f"budget_s={budget_s!r}, max_users={max_users!r}")
        if n_gen < 2 and any(p.key != "ttft_ms" for p in promises):
            raise MeasurementError(f"{where}: per-user speed and inter-token latency come after the first token, "
                                   f"which a run of n_gen={n_gen} does not give: ask for n_gen of 2 or more")
        needed = min_requests(attainment)
        cells: dict[int, BatchedCell] = {}
        requests: dict[int, list[RequestFigures]] = {}
        seconds_per_run: dict[int, float] = {}
        levels: dict[int, CapacityLevel] = {}
        spent = 0.0
        repeatable = True   # a replay gives the same samples again: the search judges what it holds, once

        def measure(users: int, reps: int, *, record: bool) -> float:
            nonlocal repeatable
            start = time.perf_counter()
            measured = self._measure_full("batched", reps, {"n_prompt": n_prompt, "n_gen": n_gen, "batch_size": users},
                                          record=record, unrecorded_ends=True)
            if record:
                cells[users] = BatchedCell.of(users, measured.current)
            requests.setdefault(users, []).extend(measured.requests)
            repeatable = repeatable and measured.repeatable
            elapsed = time.perf_counter() - start
            seconds_per_run[users] = elapsed / (reps + 1)
            return elapsed

        def reps_for(users: int, floor: int) -> int:
            """Repetitions that bring the level to the requests it needs (a repetition serves every user once)."""
            return max(floor, math.ceil((needed - len(requests.get(users, ()))) / users))

        def judge(users: int) -> None:
            nonlocal spent
            level = judge_level(users, requests[users], promises, attainment, n_gen=n_gen)
            again = reps_for(users, math.ceil(len(requests[users]) / users))   # as many requests again
            if level.status == INCONCLUSIVE and repeatable and spent + seconds_per_run[users] * (again + 1) <= budget_s:
                spent += measure(users, again, record=False)
                level = judge_level(users, requests[users], promises, attainment, attempts=2, n_gen=n_gen)
            levels[users] = level

        for users in _distinct_sizes(batch_sizes):   # each with the requests it needs, all recorded (and replayable)
            measure(users, reps_for(users, self._reps(repetitions)), record=True)
            judge(users)
        ended, stopped = "", ""
        while (following := next_users(list(levels.values()), max_users)) is not None:
            if following in levels:   # a level measured already (a bracket that cannot narrow further)
                break
            reference = max((u for u in seconds_per_run if u <= following), default=min(seconds_per_run))
            reps = reps_for(following, search_repetitions)
            predicted = seconds_per_run[reference] * following / reference * (reps + 1)
            if spent + predicted > budget_s:
                ended, stopped = "budget", (f"the time budget: {following} users would take about {predicted:.0f} s, "
                                            f"over the {max(0.0, budget_s - spent):.0f} s left of {budget_s:.0f} s")
                break
            try:
                spent += measure(following, reps, record=True)
            except NotRecorded:
                ended, stopped = "recording", f"the replayed recording, which holds no {following}-user cell"
                break
            judge(following)
        if not ended:
            ended, stopped = _why_ended(list(levels.values()), attainment, max_users)
        self._record_capacity(CapacitySearch(
            nodeid=self.nodeid, n_prompt=n_prompt, n_gen=n_gen, service_level=", ".join(p.describe() for p in promises),
            attainment=attainment, levels=tuple(levels.values()), ended=ended, stopped=stopped))
        return BatchedResult(n_prompt=n_prompt, n_gen=n_gen, cells=cells)

    def _capacity_promises(self, where: str, **overrides: float | None) -> list[RequestPromise]:
        promises = {p.key: p for p in self._request_promises()}
        for key, limit in overrides.items():
            if limit is None:
                continue
            if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0:
                raise MeasurementError(f"{where}: {key} must be a positive number, got {limit!r}")
            percentile = promises[key].percentile if key in promises else (ITL_DEFAULT_PERCENTILE
                                                                            if key == "itl_ms" else None)
            promises[key] = RequestPromise(key, float(limit), percentile=percentile)
        if not promises:
            raise MeasurementError(f"{where} needs a per-request promise to search for: declare "
                                   "axion_slo(per_user_tps=..., ttft_ms=... or itl_ms=...) or pass per_user_tps=, "
                                   "ttft_ms= or itl_ms=")
        return [promises[key] for key in ("per_user_tps", "ttft_ms", "itl_ms") if key in promises]

    def _measure(self, kind: str, repetitions: int | None, **shape: int) -> dict[str, Measurement]:
        return self._measure_full(kind, self._reps(repetitions), shape).current

    def _measure_full(self, kind: str, repetitions: int, shape: Mapping[str, int], *, record: bool = True,
                      unrecorded_ends: bool = False) -> Measured:
        """One workload; in an A/B session on both sides (their rounds go to ``record_pair``). ``record``: its
        measurements go to the session (a capacity search's top-ups do not). ``unrecorded_ends``: a workload a
        replayed recording lacks is raised as such (a search then ends), not as the test's error."""
        with self._engine_errors(unrecorded_ends):
            measured = self.loaded.engine.measure(kind, nodeid=self.nodeid, threads=self.threads,
                                                  repetitions=repetitions, progress=self._progress, **shape)
        if record:
            if measured.rounds is not None and self._record_pair is not None:
                self._record_pair(*measured.rounds)
            self._keep(list(measured.current.values()))
        return measured

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


def _why_ended(levels: list[CapacityLevel], attainment: float, max_users: int) -> tuple[str, str]:
    """(ended, stopped) of a search that ran to its end: on a promise, inconclusive, or on the most users."""
    fewest_failing = bracket_of(levels)[1]
    level = next((lv for lv in levels if lv.users == fewest_failing), None)
    if level is not None and level.status == MISSED:
        return "promise", f"{level.users} users: {level.worst}"
    if level is not None:
        return "inconclusive", (f"{level.users} users inconclusive: {level.meeting} of {level.requests} requests "
                                f"({level.attainment:.0%}; 95% interval {level.low:.0%}-{level.high:.0%}) met every "
                                f"promise, measured {level.attempts} time(s), against {attainment:.0%}")
    if max_users < MAX_SEQUENCES:
        return "max_users", f"max_users ({max_users})"
    return "sequence limit", f"the most users llama.cpp holds in one context ({max_users})"


def _distinct_sizes(batch_sizes: Iterable[int]) -> list[int]:
    sizes = sorted(set(int(b) for b in batch_sizes))
    if not sizes or sizes[0] < 1:
        raise MeasurementError(f"batch_sizes must be positive whole numbers, got {list(batch_sizes)}")
    return sizes
