"""What the harness needs of an engine: the interface a llama.cpp worker implements, and a served endpoint can.

Every engine measures the same three workloads (prompt, generation, batched users) and answers with the
run records of :mod:`pytest_axion.records`, or with measurements through :meth:`Engine.measure`: the
harness asks every engine that one question and never which kind of engine it has (an A/B pair answers
with both sides' rounds as well).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pytest_axion.machine.environment import OtherCpuMeter
from pytest_axion.records import (
    EngineError,
    Measurement,
    ModelFacts,
    OpenLoopRun,
    ProgressCallback,
    RequestFigures,
    Run,
    WarmUpRun,
    measurements_of,
    requests_of,
)


@dataclass(frozen=True)
class Measured:
    """One workload's measurements by metric: what the test's promises judge. In an A/B session also both
    sides with one sample per round (A, B), paired round by round; a metric one side lacks is in neither."""

    current: dict[str, Measurement]
    rounds: tuple[dict[str, Measurement], dict[str, Measurement]] | None = None
    requests: tuple[RequestFigures, ...] = ()    # every user's request of a batched workload, in order
    repeatable: bool = True    # False: measured again, the workload gives these very samples (a replay)


class Engine(Protocol):
    """A loaded model that measures workloads on request."""

    facts: ModelFacts

    @property
    def alive(self) -> bool:
        """False once the engine's process or server has died (the session then starts a fresh one)."""
        ...

    @property
    def measures_contention(self) -> bool:
        """True when the engine's CPU time is this process tree's own, so the CPU that *other* processes
        take while it measures can be told apart (not so for a server that runs elsewhere)."""
        ...

    @property
    def requests_apart(self) -> bool:
        """True when each user's request is timed on its own (a server); False when the users of a repetition
        share every step (in process), so that a repetition is one observation of them all."""
        ...

    def describe(self) -> str:
        """What is measured, in a few words, for the report header ("" for a worker process)."""
        ...

    def run(self, kind: str, *, repetitions: int, warmup: bool = True, max_seconds: float | None = None,
            progress: ProgressCallback | None = None, **shape: int) -> Run:
        """One workload: ``kind`` is prompt (n_prompt), generation (n_gen) or batched (n_prompt, n_gen,
        batch_size); ``repetitions`` timed repetitions after an untimed warm-up, fewer (at least three) where they
        would take over ``max_seconds`` (in process; a served deployment's users keep their rounds)."""
        ...

    def measure(self, kind: str, *, nodeid: str, threads: int, repetitions: int, max_seconds: float | None = None,
                progress: ProgressCallback | None = None, **shape: int) -> Measured:
        """``run`` turned into measurements for test ``nodeid`` (most engines: :func:`measure_run`)."""
        ...

    def open_loop(self, arrivals: Sequence[float], *, n_prompt: int, n_gen: int, max_in_flight: int,
                  progress: ProgressCallback | None = None) -> OpenLoopRun:
        """Requests due at ``arrivals`` whatever the answers before them (a served deployment only: the others
        raise :func:`no_open_loop`'s error)."""
        ...

    def warm_up(self, n_prompt: int) -> WarmUpRun:
        """Untimed prompts until the speed settles, before the session's first measurement."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model's tokenizer makes of ``text``."""
        ...

    def restart(self) -> None:
        """A fresh engine (new process, new load): what a confirming attempt measures with."""
        ...

    def close(self) -> None:
        ...


def measure_run(engine: Engine, kind: str, *, nodeid: str, threads: int, repetitions: int,
                max_seconds: float | None = None, progress: ProgressCallback | None = None, **shape: int) -> Measured:
    """One workload on one engine, each measurement knowing the CPUs' worth of other processes' work meanwhile."""
    # Contention is measured against this process tree; a server elsewhere (or not our child) would count as
    # "other processes", so an external endpoint reports none.
    meter = OtherCpuMeter().start() if engine.measures_contention else None
    run = engine.run(kind, repetitions=repetitions, max_seconds=max_seconds, progress=progress,
                     **shape)  # type: ignore[arg-type]  # sizes
    other = meter.stop() if meter is not None else None
    return Measured(measurements_of(run, nodeid=nodeid, threads=threads, other_cpus=other), requests=requests_of(run))


def no_open_loop(why: str) -> EngineError:
    """The error of an engine that cannot send requests at a rate: ``why`` says what it is instead."""
    return EngineError(f"an open loop (axion.rate(), axion.capacity(by=\"rate\")) sends requests at a rate to a "
                       f"served deployment (--axion-serve N or --axion-endpoint URL); {why}")
