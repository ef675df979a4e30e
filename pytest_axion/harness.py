"""The test-facing harness: what a test measures with (``axion``), over the deployment's loaded engine."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pytest_axion.budget import MeasuringClock, cell_seconds
from pytest_axion.engines.arrivals import arrival_times
from pytest_axion.engines.base import Measured
from pytest_axion.engines.deployment import LoadedModel
from pytest_axion.errors import MeasurementError
from pytest_axion.figures import figure
from pytest_axion.machine.hardware import HardwareFingerprint
from pytest_axion.machine.model import ModelFingerprint
from pytest_axion.machine.sizing import prompt_fill_tokens
from pytest_axion.promises.capacity import (
    DEFAULT_ATTAINMENT,
    DEFAULT_CAPACITY_BUDGET_S,
    DEFAULT_MAX_IN_FLIGHT,
    RATE_HALVINGS,
    RequestPromise,
    check_attainment,
    check_open_loop,
    judge_level,
    judge_open_loop,
    min_requests,
    next_rate,
    next_users,
    rate_duration,
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
    OpenLoopRun,
    ProgressCallback,
    RateLevel,
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


DEFAULT_SEARCH_REPETITIONS = 3


class Axion:
    """What a test uses to measure: ``axion.prompt()``, ``axion.generate()``, ``axion.batched()``,
    ``axion.capacity()``, and against a served deployment ``axion.rate()``.

    Every result is also recorded for the session report.
    """

    def __init__(self, loaded: LoadedModel, *, nodeid: str, repetitions: int,
                 record: Callable[[Measurement], None], progress: ProgressCallback | None = None,
                 record_pair: PairRecorder | None = None,
                 request_promises: Callable[[], list[RequestPromise]] = list,
                 record_capacity: Callable[[CapacitySearch], None] = lambda _: None,
                 record_rate: Callable[[RateLevel], None] = lambda _: None,
                 fill_tokens: Callable[[], int] | None = None, gen_tokens: Callable[[int], int] | None = None,
                 capacity_budget_s: float = DEFAULT_CAPACITY_BUDGET_S, clock: MeasuringClock | None = None) -> None:
        self.loaded = loaded
        self.nodeid = nodeid
        self.repetitions = repetitions
        self.measurements: list[Measurement] = []
        self._record = record
        self._record_pair = record_pair
        self._progress = progress
        self._request_promises = request_promises
        self._record_capacity = record_capacity
        self._record_rate = record_rate
        self._fill_tokens = fill_tokens
        self._gen_tokens = gen_tokens
        self._capacity_budget_s = capacity_budget_s
        self._clock = clock if clock is not None else MeasuringClock(budget_s=0.0)   # no budget unless given

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

    def gen_tokens(self, longest: int = 64) -> int:
        """A generation length for this model: ``longest``, or fewer (a power of two, at least 8) where the model is
        too slow for it, by the rule and the prompt speed that shorten ``fill_tokens`` (see
        :func:`pytest_axion.machine.sizing.gen_within_budget`); size generation workloads with it."""
        if longest < 1:
            raise MeasurementError(f"{self.nodeid}: axion.gen_tokens({longest}): the longest generation is at least "
                                   "1 token")
        return self._gen_tokens(longest) if self._gen_tokens is not None else longest

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
                 max_users: int = MAX_SEQUENCES, budget_s: float | None = None,
                 repetitions: int | None = None,
                 search_repetitions: int = DEFAULT_SEARCH_REPETITIONS, by: str = "users",
                 duration_s: float = 0.0, burstiness: float = 1.0, start_rate: float | None = None,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> BatchedResult | CapacitySearch:
        """The most concurrent users whose requests keep every per-request promise of the test at once.

        The promises are the test's ``axion_slo(per_user_tps=..., ttft_ms=..., itl_ms=...)``; ``per_user_tps=``,
        ``ttft_ms=`` and ``itl_ms=`` set or replace one. A level (a number of users) holds when at least
        ``attainment`` of its requests met every promise, judged on a 95% Wilson interval over its observations
        (a request served apart; in process a repetition of all its users, who share every step). Each level is
        measured first with the test's repetitions (``batch_sizes``, every one of them before any is topped up) or
        ``search_repetitions`` (beyond them), then, unless missed already, up to the observations it needs (35 at
        0.9), then once more as much if it straddles the target; it stays inconclusive if it still does (see
        :mod:`pytest_axion.promises.capacity`).
        All of a level is recorded as one cell. After ``batch_sizes`` the search doubles the users while every
        level holds and bisects until the bracket is no wider than 10% (or one user). It ends on a promise, on
        ``max_users`` or llama.cpp's sequence limit, or on ``budget_s`` seconds of measuring after the first
        measurement of each of ``batch_sizes`` (``--axion-capacity-budget`` where not given; 120 by default); the
        summary says which.

        ``by="rate"`` (a served deployment only) searches the highest request rate instead, as MLPerf's server
        scenario: each level an open loop (:meth:`rate`) of at least ``duration_s`` seconds and of about 1.5 times
        the requests its verdict needs, starting at ``start_rate`` (by default one lone request's rate, 1 / its
        latency), doubling while met, bisecting to within 10%; it returns the search.
        """
        budget_s = self._capacity_budget_s if budget_s is None else budget_s
        where = f"{self.nodeid}: axion.capacity()"
        attainment = check_attainment(attainment, where)
        promises = self._capacity_promises(where, per_user_tps=per_user_tps, ttft_ms=ttft_ms, itl_ms=itl_ms)
        if by not in ("users", "rate"):
            raise MeasurementError(f"{where}: by is \"users\" (concurrent users, closed loop) or \"rate\" (requests/s, "
                                   f"open loop), got {by!r}")
        if by == "rate":
            return self._rate_search(promises, attainment, budget_s=budget_s, n_prompt=n_prompt, n_gen=n_gen,
                                     duration_s=duration_s, burstiness=burstiness, start_rate=start_rate,
                                     max_in_flight=max_in_flight)
        if budget_s <= 0 or not 1 <= max_users <= MAX_SEQUENCES:
            raise MeasurementError(f"{where}: budget_s must be positive and max_users within 1-{MAX_SEQUENCES} (the "
                                   f"sequences llama.cpp holds), got budget_s={budget_s!r}, max_users={max_users!r}")
        initial = _distinct_sizes(batch_sizes)
        if initial[-1] > max_users:
            raise MeasurementError(f"{where}: batch_sizes go up to {initial[-1]}, beyond max_users={max_users}: "
                                   "raise max_users or leave the larger sizes out")
        _check_generation(promises, n_gen, where)
        search = _UsersSearch(self, promises, attainment, n_prompt=n_prompt, n_gen=n_gen, budget_s=budget_s,
                              test_left_s=lambda: self._clock.left_s(self.nodeid))
        # The first measurement of each size is the test's own (a cell like any other, outside the search's
        # budget): all of them first, so that the search tops levels up with what the test's budget has left.
        firsts = {}
        for users in initial:
            try:
                firsts[users] = search.take(users, self._reps(repetitions), counted=False)
            except NotRecorded as err:   # a test's own workload the replayed report lacks: its error
                raise MeasurementError(f"{self.nodeid}: {err}") from None
        for users, first in firsts.items():
            search.settle_after(users, first)
        ended, stopped = search.run(max_users=max_users, search_repetitions=search_repetitions)
        self._record_capacity(CapacitySearch(
            nodeid=self.nodeid, n_prompt=n_prompt, n_gen=n_gen, service_level=", ".join(p.describe() for p in promises),
            attainment=attainment, levels=tuple(search.levels.values()), ended=ended, stopped=stopped,
            limits=tuple((p.key, p.limit) for p in promises), itl_percentile=_itl_percentile(promises)))
        return BatchedResult(n_prompt=n_prompt, n_gen=n_gen, cells=search.cells)

    def rate(self, requests_per_s: float, *, duration_s: float = 60.0, n_prompt: int = 16, n_gen: int = 16,
             burstiness: float = 1.0, per_user_tps: float | None = None, ttft_ms: float | None = None,
             itl_ms: float | None = None, attainment: float = DEFAULT_ATTAINMENT,
             max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, seed: int = 0) -> RateLevel:
        """Requests sent to a served deployment at ``requests_per_s`` for ``duration_s`` seconds whatever the
        answers before them (an open loop, as MLPerf's server scenario and vLLM's ``bench serve``): arrivals with
        gamma-distributed gaps (Poisson at ``burstiness`` 1), each request timed from when it was due, so a wait
        for a slot counts; at most ``max_in_flight`` outstanding, a request due beyond them waiting its turn (and
        timed). Judged as a capacity level by the test's per-request promises (``per_user_tps=``, ``ttft_ms=``,
        ``itl_ms=`` set or replace one): met when the 95% Wilson interval of the share of requests that met every
        promise lies at or above ``attainment``. The duration must hold the requests that decides (35 at 0.9),
        so a short lucky run cannot pass. ``seed`` fixes the schedule. The level is in the report; assert on it
        (``assert axion.rate(2.0).met``)."""
        where = f"{self.nodeid}: axion.rate()"
        attainment = check_attainment(attainment, where)
        check_open_loop(requests_per_s, duration_s, burstiness, max_in_flight, attainment, where)
        promises = self._capacity_promises(where, per_user_tps=per_user_tps, ttft_ms=ttft_ms, itl_ms=itl_ms)
        _check_generation(promises, n_gen, where)
        arrivals = arrival_times(requests_per_s, duration_s, burstiness, seed=seed)
        if not arrivals:
            raise MeasurementError(f"{where}: the schedule of seed {seed} holds no request within {duration_s} s: "
                                   "give a longer duration_s")
        with self._engine_errors():
            run = self.loaded.engine.open_loop(arrivals, n_prompt=n_prompt, n_gen=n_gen, max_in_flight=max_in_flight,
                                               progress=self._progress)
        level = judge_open_loop([run], promises, attainment, nodeid=self.nodeid, requests_per_s=requests_per_s,
                                burstiness=burstiness, duration_s=duration_s, max_in_flight=max_in_flight)
        self._record_rate(level)
        return level

    def _rate_search(self, promises: list[RequestPromise], attainment: float, *, budget_s: float, n_prompt: int,
                     n_gen: int, duration_s: float, burstiness: float, start_rate: float | None,
                     max_in_flight: int) -> CapacitySearch:
        """``axion.capacity(by="rate")``: the highest open-loop rate whose requests keep every promise."""
        where = f"{self.nodeid}: axion.capacity(by=\"rate\")"
        if budget_s <= 0 or duration_s < 0:
            raise MeasurementError(f"{where}: budget_s must be positive and duration_s 0 or more, got "
                                   f"budget_s={budget_s!r}, duration_s={duration_s!r}")
        _check_generation(promises, n_gen, where)

        def send(arrivals: Sequence[float]) -> OpenLoopRun:
            with self._engine_errors():
                return self.loaded.engine.open_loop(arrivals, n_prompt=n_prompt, n_gen=n_gen,
                                                    max_in_flight=max_in_flight, progress=self._progress)

        # every level's schedule is long enough to decide (rate_duration): only the rate and its shape to check
        check_open_loop(1.0 if start_rate is None else start_rate, math.inf, burstiness, max_in_flight, attainment,
                        where)
        lone = send((0.0,))   # one request alone: the rate of one lone user (and in process, the error at once)
        latency_s = max(r.end - r.due for r in lone.requests)
        start = start_rate if start_rate is not None else 1 / latency_s
        levels: list[CapacityLevel] = []
        spent, ended, stopped = 0.0, "", ""
        while (rate := next_rate(levels, start)) is not None:
            duration = rate_duration(rate, duration_s, attainment)
            if spent + duration + latency_s > budget_s:
                ended, stopped = "budget", (f"the time budget: {figure(rate)} requests/s would take about "
                                            f"{duration + latency_s:.0f} s, over the "
                                            f"{max(0.0, budget_s - spent):.0f} s left of {budget_s:.0f} s")
                break
            began = time.perf_counter()
            runs = []
            for attempt in range(2):   # a level whose interval straddles the target is measured again, pooled
                arrivals = arrival_times(rate, duration, burstiness, seed=len(levels) * 2 + attempt)
                runs.append(send(arrivals))
                level = judge_open_loop(runs, promises, attainment, nodeid=self.nodeid, requests_per_s=rate,
                                        burstiness=burstiness, duration_s=duration, max_in_flight=max_in_flight)
                if level.status != INCONCLUSIVE:
                    break
            levels.append(level.level)
            spent += time.perf_counter() - began
        if not ended:
            ended, stopped = _why_rate_ended(levels, start)
        search = CapacitySearch(
            nodeid=self.nodeid, n_prompt=n_prompt, n_gen=n_gen, service_level=", ".join(p.describe() for p in promises),
            attainment=attainment, levels=tuple(levels), ended=ended, stopped=stopped,
            limits=tuple((p.key, p.limit) for p in promises), by="rate", itl_percentile=_itl_percentile(promises))
        self._record_capacity(search)
        return search

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
            raise MeasurementError(f"{where} needs a per-request promise to judge by: declare "
                                   "axion_slo(per_user_tps=..., ttft_ms=... or itl_ms=...) or pass per_user_tps=, "
                                   "ttft_ms= or itl_ms=")
        return [promises[key] for key in ("per_user_tps", "ttft_ms", "itl_ms") if key in promises]

    def _measure(self, kind: str, repetitions: int | None, **shape: int) -> dict[str, Measurement]:
        return self._measure_full(kind, self._reps(repetitions), shape).current

    def _measure_full(self, kind: str, repetitions: int, shape: Mapping[str, int], *, record: bool = True,
                      unrecorded_ends: bool = False, budgeted: bool = True) -> Measured:
        """One workload; in an A/B session on both sides (their rounds go to ``record_pair``). ``record``: its
        measurements go to the session (a capacity search's top-ups do not). ``unrecorded_ends``: a workload a
        replayed recording lacks is raised as such (a search then ends), not as the test's error. ``budgeted``:
        its repetitions stop at the cell's share of the test's time budget (a capacity search has its own)."""
        with self._engine_errors(unrecorded_ends):
            measured = measure_timed(self.loaded, kind, shape, nodeid=self.nodeid, repetitions=repetitions,
                                     clock=self._clock, budgeted=budgeted, progress=self._progress)
        if record:
            if measured.rounds is not None and self._record_pair is not None:
                self._record_pair(*measured.rounds)
            self._keep(list(measured.current.values()))
        return measured

    def _record_all(self, chunks: Sequence[Measured]) -> dict[str, Measurement]:
        """Several measurements of one workload recorded as one: every sample, in order (a level of a capacity
        search measured until decided is one cell, so a replay of the report sees all of it)."""
        merged = {}
        for metric, first in chunks[0].current.items():
            parts = [chunk.current[metric] for chunk in chunks if metric in chunk.current]
            known = [part.other_cpus for part in parts if part.other_cpus is not None]
            merged[metric] = dataclasses.replace(first, samples=tuple(s for part in parts for s in part.samples),
                                                 other_cpus=max(known) if known else None)
        for chunk in chunks:
            if chunk.rounds is not None and self._record_pair is not None:
                self._record_pair(*chunk.rounds)
        self._keep(list(merged.values()))
        return merged

    def _reps(self, repetitions: int | None) -> int:
        return self.repetitions if repetitions is None else repetitions

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


class _UsersSearch:
    """One ``axion.capacity()`` search by users, closed loop: each level measured until it is decided, within a
    budget of measuring time, and recorded as one cell."""

    def __init__(self, axion: Axion, promises: Sequence[RequestPromise], attainment: float, *, n_prompt: int,
                 n_gen: int, budget_s: float, test_left_s: Callable[[], float | None] = lambda: None) -> None:
        self.axion, self.promises, self.attainment = axion, promises, attainment
        self.n_gen, self.budget_s = n_gen, budget_s
        self.test_left_s = test_left_s   # what the test's own measuring budget has left now (None: no budget)
        self.shape = {"n_prompt": n_prompt, "n_gen": n_gen, "batch_size": 0}
        self.needed = min_requests(attainment)
        self.cells: dict[int, BatchedCell] = {}
        self.levels: dict[int, CapacityLevel] = {}
        self.requests: dict[int, list[RequestFigures]] = {}
        self.seconds_per_run: dict[int, float] = {}
        self.spent = 0.0
        self.budget_name = "the time budget"
        self.repeatable = True   # a replay gives the same samples again: the search judges what it holds, once

    def take(self, users: int, reps: int, *, counted: bool = True) -> Measured:
        """One measurement of a level, its time counted against the search's budget unless it is the test's own
        (which, like any of the test's cells, stops at the cell's share of the test's budget)."""
        start = time.perf_counter()
        measured = self.axion._measure_full("batched", reps, {**self.shape, "batch_size": users}, record=False,
                                            unrecorded_ends=True, budgeted=not counted)
        self.requests.setdefault(users, []).extend(measured.requests)
        self.repeatable = self.repeatable and measured.repeatable
        elapsed = time.perf_counter() - start
        self.seconds_per_run[users] = elapsed / (reps + 1)
        self.spent += elapsed if counted else 0.0
        return measured

    def per_repetition(self, users: int) -> int:
        """Observations a repetition gives: it serves every user once, which is one observation in process (the
        users share every step) and one per user where they are served apart."""
        return users if self.axion.loaded.engine.requests_apart else 1

    def affordable(self, users: int, reps: int) -> bool:
        self.end_with_the_test()
        return self.spent + self.seconds_per_run[users] * (reps + 1) <= self.budget_s

    def end_with_the_test(self) -> None:
        """Search no longer than the test's own measuring budget has left (``--axion-budget``), asked each time the
        search decides what it can afford: the test's own first measurement of a level, which the search does not
        count, spends the test's budget too."""
        left = self.test_left_s()
        if left is not None and self.spent + left < self.budget_s:
            self.budget_s, self.budget_name = self.spent + left, "the test's measuring budget (--axion-budget)"

    def judge(self, users: int, attempts: int = 1) -> CapacityLevel:
        return judge_level(users, self.requests[users], self.promises, self.attainment, attempts=attempts,
                           n_gen=self.n_gen)

    def settle(self, users: int, floor: int) -> None:
        """Measure a level until it is decided, and record all of it as one cell: ``floor`` repetitions first (a
        level that every observation misses is decided there), then up to the observations it needs, then, if it
        straddles the target, as many again; more than the first within the budget only."""
        self.settle_after(users, self.take(users, floor))

    def settle_after(self, users: int, first: Measured) -> None:
        """Settle a level whose first measurement is ``first`` (see :meth:`settle`)."""
        chunks = [first]
        level = self.judge(users)
        top_up = math.ceil((self.needed - len(self.requests[users])) / self.per_repetition(users))
        if level.status != MISSED and self.repeatable and top_up > 0 and self.affordable(users, top_up):
            chunks.append(self.take(users, top_up))
            level = self.judge(users)
        again = math.ceil(len(self.requests[users]) / self.per_repetition(users))   # as many observations again
        if level.status == INCONCLUSIVE and self.repeatable and self.affordable(users, again):
            chunks.append(self.take(users, again))
            level = self.judge(users, attempts=2)
        self.levels[users] = level
        self.cells[users] = BatchedCell.of(users, self.axion._record_all(chunks))

    def run(self, *, max_users: int, search_repetitions: int) -> tuple[str, str]:
        """Double, then bisect, from the levels settled so far; (ended, stopped) of the search."""
        while (following := next_users(list(self.levels.values()), max_users)) is not None:
            reference = max((u for u in self.seconds_per_run if u <= following), default=min(self.seconds_per_run))
            reps = max(search_repetitions, math.ceil(self.needed / self.per_repetition(following)))
            predicted = self.seconds_per_run[reference] * following / reference * (reps + 1)
            self.end_with_the_test()
            if self.spent + predicted > self.budget_s:
                return "budget", (f"{self.budget_name}: {following} users would take about {predicted:.0f} s, over "
                                  f"the {max(0.0, self.budget_s - self.spent):.0f} s left of {self.budget_s:.0f} s")
            try:
                self.settle(following, search_repetitions)
            except NotRecorded:
                return "recording", f"the replayed recording, which holds no {following}-user cell"
        short = (("budget", f"{self.budget_name} ({self.budget_s:.0f} s)") if self.repeatable
                 else ("recording", "the replayed recording"))
        return _why_ended(list(self.levels.values()), self.attainment, max_users, self.needed, short)

def measure_timed(loaded: LoadedModel, kind: str, shape: Mapping[str, int], *, nodeid: str, repetitions: int,
                  clock: MeasuringClock, budgeted: bool = True, progress: ProgressCallback | None = None) -> Measured:
    """One workload for test ``nodeid``, its measuring time kept on ``clock`` (by test, and by workload: what a
    confirming attempt would take); ``budgeted``: its repetitions stop at the cell's share of the budget."""
    start = time.perf_counter()
    measured = loaded.engine.measure(kind, nodeid=nodeid, threads=loaded.threads, repetitions=repetitions,
                                     max_seconds=cell_seconds(clock.budget_s) if budgeted else None,
                                     progress=progress, **shape)
    some = next(iter(measured.current.values()), None)
    if some is not None:
        clock.add(nodeid, (nodeid, workload_of(some)), time.perf_counter() - start)
    return measured


def remeasure(loaded: LoadedModel, measurements: Sequence[Measurement], *, repetitions: int, clock: MeasuringClock,
              progress: ProgressCallback | None = None) -> list[Measured]:
    """Measure the workloads behind ``measurements`` again, fresh (warm-up included): each distinct workload once,
    however many of its metrics are asked for."""
    fresh: list[Measured] = []
    for m in {workload_of(m): m for m in measurements}.values():
        kind, shape_args = workload_request(m)
        try:
            measured = measure_timed(loaded, kind, shape_args, nodeid=m.nodeid, repetitions=repetitions, clock=clock,
                                     progress=progress)
        except EngineError as err:
            raise MeasurementError(f"{m.nodeid}: measuring again in fresh processes: {err}") from None
        fresh.append(measured)
    return fresh


def _why_ended(levels: list[CapacityLevel], attainment: float, max_users: int, needed: int,
               short: tuple[str, str]) -> tuple[str, str]:
    """(ended, stopped) of a search that ran to its end: on a promise, inconclusive (or left short of the
    observations it needs: ``short`` says by what, as (ended, text)), or on the most users."""
    fewest_failing = bracket_of(levels)[1]
    level = next((lv for lv in levels if lv.users == fewest_failing), None)
    if level is not None and level.status == MISSED:
        return "promise", f"{level.users} users: {level.worst}"
    if level is not None and level.observations < needed:
        short_ended, short_by = short
        return (short_ended, f"{short_by}: {level.users} users got {level.observations} of the {needed} observations "
                             f"a level needs to be met at {attainment:.0%}")
    if level is not None:
        return "inconclusive", f"{level.inconclusive_text()}, against {attainment:.0%}"
    if max_users < MAX_SEQUENCES:
        return "max_users", f"max_users ({max_users})"
    return "sequence limit", f"the most users llama.cpp holds in one context ({max_users})"


def _why_rate_ended(levels: list[CapacityLevel], start: float) -> tuple[str, str]:
    """(ended, stopped) of a rate search that ran to its end: on a promise, inconclusive, or at its lowest rate."""
    low, high = bracket_of(levels)
    level = next((lv for lv in levels if lv.load == high), None)
    if low == 0 and level is not None:
        return "lowest rate", (f"its lowest rate: {level.load_text} (the first, {figure(start)}, halved "
                               f"{RATE_HALVINGS} times) did not hold: {level.worst or level.status}")
    if level is not None and level.status == MISSED:
        return "promise", f"{level.load_text}: {level.worst}"
    assert level is not None
    return "inconclusive", level.inconclusive_text()


def _itl_percentile(promises: Sequence[RequestPromise]) -> int | None:
    return next((p.percentile for p in promises if p.key == "itl_ms"), None)


def _check_generation(promises: Sequence[RequestPromise], n_gen: int, where: str) -> None:
    if n_gen < 2 and any(p.key != "ttft_ms" for p in promises):
        raise MeasurementError(f"{where}: per-user speed and inter-token latency come after the first token, "
                               f"which a run of n_gen={n_gen} does not give: ask for n_gen of 2 or more")


def _distinct_sizes(batch_sizes: Iterable[int]) -> list[int]:
    sizes = sorted(set(int(b) for b in batch_sizes))
    if not sizes or sizes[0] < 1:
        raise MeasurementError(f"batch_sizes must be positive whole numbers, got {list(batch_sizes)}")
    return sizes
