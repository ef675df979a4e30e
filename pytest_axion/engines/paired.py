"""Two engines measured in alternating rounds: the A/B session's engine.

A is the baseline (another llama-cpp-python installation, or the endpoint of the deployment in use), B the
candidate. Each round measures one repetition on each side, one right after the other, in ABBA order
(:func:`round_order`), so both sides of a pair live through the same machine state and a steady drift
cancels too. Any two engines pair: two worker processes (``--axion-ab-baseline``) or two served
endpoints (``--axion-ab-endpoint``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from pytest_axion.engines.base import Engine, Measured, no_open_loop
from pytest_axion.machine.environment import OtherCpuMeter
from pytest_axion.records import (
    Measurement,
    OpenLoopRun,
    ProgressCallback,
    Run,
    WarmUpRun,
    measurements_of,
    requests_of,
)
from pytest_axion.stats import median


def round_order(rounds: int) -> list[str]:
    """ABBA ABBA ...: each round is one repetition per side; the first side alternates."""
    return ["AB" if i % 2 == 0 else "BA" for i in range(rounds)]


def merge_runs(runs: Sequence[Run]) -> Run:
    """One run record of all rounds: every per-repetition tuple concatenated, round after round."""
    first = runs[0]
    joined = {f.name: sum((getattr(r, f.name) for r in runs), ()) for f in dataclasses.fields(first)
              if isinstance(getattr(first, f.name), tuple)}
    merged: Run = dataclasses.replace(first, **joined)  # type: ignore[arg-type]
    return merged


def round_measurements(runs: Sequence[Run], *, nodeid: str, threads: int,
                       other_cpus: float | None = None) -> dict[str, Measurement]:
    """Every metric with one sample per round: the round's own figure, or the median of its samples
    (per-step latencies; a served round's requests). What a paired comparison pairs."""
    per_run = [measurements_of(run, nodeid=nodeid, threads=threads, other_cpus=other_cpus) for run in runs]
    shared = [metric for metric in per_run[0] if all(metric in m for m in per_run)]
    return {metric: dataclasses.replace(per_run[0][metric], samples=tuple(median(m[metric].samples)
                                                                          for m in per_run))
            for metric in shared}


@dataclasses.dataclass(frozen=True)
class PairedRun:
    kind: str
    baseline_rounds: tuple[Run, ...]   # A: one repetition per round
    current_rounds: tuple[Run, ...]    # B: likewise, in the same rounds

    @property
    def baseline(self) -> Run:
        return merge_runs(self.baseline_rounds)

    @property
    def current(self) -> Run:
        return merge_runs(self.current_rounds)

    @property
    def rounds(self) -> int:
        return len(self.current_rounds)


class PairedEngine:
    """A and B measured in alternating rounds; as a plain :class:`Engine` it is B."""

    def __init__(self, start_baseline: Callable[[], Engine], start_current: Callable[[], Engine], *, rounds: int,
                 progress: ProgressCallback | None = None) -> None:
        self.rounds = rounds
        self._progress = progress
        self.baseline = start_baseline()
        try:
            self.current = start_current()
        except BaseException:
            self.baseline.close()
            raise
        self.facts = self.current.facts

    @property
    def alive(self) -> bool:
        return self.baseline.alive and self.current.alive

    @property
    def requests_apart(self) -> bool:
        return self.current.requests_apart

    @property
    def measures_contention(self) -> bool:
        """Only when both sides' CPU time is this process tree's own (see :func:`base.measure_run`)."""
        return self.baseline.measures_contention and self.current.measures_contention

    def restart(self) -> None:
        """Fresh engines for both sides.

        A process carries offsets of its own for its whole life (where its threads and buffers land,
        huge pages or not): seen here as a steady few-percent gap between two processes of the *same*
        build. Alternating rounds cannot cancel that; a regression must reproduce in new processes.
        """
        self.baseline.restart()
        self.current.restart()

    def measure_pair(self, kind: str, **shape: int) -> PairedRun:
        sides = {"A": self.baseline, "B": self.current}
        runs: dict[str, list[Run]] = {"A": [], "B": []}
        what = f"A/B {kind} " + " ".join(f"{k}={v}" for k, v in shape.items())
        for i, order in enumerate(round_order(self.rounds)):
            for side in order:
                # Each side warms up once, in its first round; after that one timed repetition a round.
                runs[side].append(sides[side].run(kind, repetitions=1, warmup=i == 0,
                                                  **shape))  # type: ignore[arg-type]  # sizes only
            if self._progress is not None:
                self._progress(what, i + 1, self.rounds)
        return PairedRun(kind, tuple(runs["A"]), tuple(runs["B"]))

    def measure(self, kind: str, *, nodeid: str, threads: int, repetitions: int, max_seconds: float | None = None,
                progress: ProgressCallback | None = None, **shape: int) -> Measured:
        """One workload on both sides in alternating rounds (``repetitions`` is the session's ``rounds``): B's
        every sample as the current figures, both sides' one sample per round paired, each with the CPU other
        processes took meanwhile."""
        meter = OtherCpuMeter().start() if self.measures_contention else None
        paired = self.measure_pair(kind, **shape)
        other = meter.stop() if meter is not None else None
        baseline_rounds, current_rounds = (round_measurements(rounds, nodeid=nodeid, threads=threads,
                                                              other_cpus=other)
                                           for rounds in (paired.baseline_rounds, paired.current_rounds))
        return Measured(measurements_of(paired.current, nodeid=nodeid, threads=threads, other_cpus=other),
                        rounds=(baseline_rounds, current_rounds),
                        requests=requests_of(paired.current))

    def run(self, kind: str, *, repetitions: int, warmup: bool = True, max_seconds: float | None = None,
            progress: ProgressCallback | None = None, **shape: int) -> Run:
        return self.current.run(kind, repetitions=repetitions, warmup=warmup, max_seconds=max_seconds,
                                progress=progress, **shape)

    def open_loop(self, arrivals: Sequence[float], *, n_prompt: int, n_gen: int, max_in_flight: int,
                  progress: ProgressCallback | None = None) -> OpenLoopRun:
        raise no_open_loop("an A/B session pairs closed-loop rounds, not open loops: measure one deployment")

    def count_tokens(self, text: str) -> int:
        return self.current.count_tokens(text)

    def describe(self) -> str:
        """B's description (a served deployment's); the A/B header names both sides."""
        return self.current.describe()

    def warm_up(self, n_prompt: int) -> WarmUpRun:
        """Both sides, A first; B's figures are returned (A's settle the same way); again after a restart."""
        self.baseline.warm_up(n_prompt)
        return self.current.warm_up(n_prompt)

    def close(self) -> None:
        self.baseline.close()
        self.current.close()
