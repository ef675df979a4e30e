"""What the harness needs of an engine: the interface a llama.cpp worker implements, and a served endpoint can.

Every engine measures the same three workloads (prompt, generation, batched users) and answers with the
run records of :mod:`pytest_axion.records`; the harness turns them into measurements and never
asks which kind of engine it has.
"""

from __future__ import annotations

from typing import Protocol

from pytest_axion.records import ModelFacts, ProgressCallback, Run, WarmUpRun


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

    def describe(self) -> str:
        """What is measured, in a few words, for the report header ("" for a worker process)."""
        ...

    def run(self, kind: str, *, repetitions: int, warmup: bool = True, progress: ProgressCallback | None = None,
            **shape: int) -> Run:
        """One workload: ``kind`` is prompt (n_prompt), generation (n_gen) or batched (n_prompt, n_gen,
        batch_size); ``repetitions`` timed repetitions after an untimed warm-up."""
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
