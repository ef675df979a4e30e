"""The engine in another Python: a worker process per llama-cpp-python installation, and A/B pairs of them.

:class:`EngineProcess` starts ``PYTHON pytest_axion/engine.py --model M --threads T`` (the engine
module by path, so that the other environment needs only llama-cpp-python) and speaks the JSON-lines
protocol of :func:`pytest_axion.engine.serve`. It has the in-process engine's methods and returns the
same run records, so the harness cannot tell them apart.

:class:`PairedEngine` holds two of them, A (the baseline installation) and B (the current one), and
measures each workload on both in alternating rounds (:func:`pytest_axion.ab.round_order`): one side
at a time, each side's model loaded once for the whole session.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Any

from pytest_axion import engine as engine_module
from pytest_axion.ab import round_order
from pytest_axion.engine import (
    BatchedRun,
    EngineError,
    GenerationRun,
    ModelFacts,
    ProgressCallback,
    PromptRun,
    WarmUpRun,
)
from pytest_axion.errors import AxionError

ENGINE_SCRIPT = Path(engine_module.__file__).resolve()
Run = PromptRun | GenerationRun | BatchedRun
_RUN_TYPES: dict[str, type[Any]] = {"prompt": PromptRun, "generation": GenerationRun, "batched": BatchedRun}


class WorkerError(AxionError):
    """A worker interpreter is missing, lacks llama-cpp-python, crashed, or broke the protocol."""


def _run_from_json(kind: str, data: dict[str, Any]) -> Run:
    fields = {f.name: data[f.name] for f in dataclasses.fields(_RUN_TYPES[kind])}
    for name, value in fields.items():
        if isinstance(value, list):
            fields[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    run: Run = _RUN_TYPES[kind](**fields)
    return run


class EngineProcess:
    """One worker process: a model loaded under ``python``, answering measurement requests."""

    def __init__(self, python: str, *, model_path: str, threads: int, label: str) -> None:
        self.python, self.label, self.model_path, self.threads = python, label, model_path, threads
        executable = shutil.which(python)
        if executable is None:
            raise WorkerError(f"{label} interpreter {python} does not exist or is not executable: give the path "
                              "of the python in the environment to compare with (e.g. .venv-old/bin/python)")
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._process = subprocess.Popen(
            [executable, str(ENGINE_SCRIPT), "--model", model_path, "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)
        try:
            ready = self._read("loading the model")
        except WorkerError:
            self.close()
            raise
        if "ready" not in ready:
            self.close()
            raise WorkerError(f"{label} interpreter {python} could not load {model_path}: "
                              f"{ready.get('error', {}).get('message', ready)}")
        self.facts = ModelFacts(**ready["ready"])

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        lines = [line.strip() for line in self._stderr.read().decode("utf-8", "replace").splitlines() if line.strip()]
        return lines[-1] if lines else "no output on stderr"

    def _read(self, doing: str) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait()
            tail = self._stderr_tail()
            if "No module named 'llama_cpp'" in tail:
                raise WorkerError(f"{self.label} interpreter {self.python} has no llama-cpp-python ({tail}): "
                                  f"install it there ({self.python} -m pip install llama-cpp-python)")
            raise WorkerError(f"{self.label} interpreter {self.python} stopped with exit code {code} while "
                              f"{doing}: {tail}")
        try:
            message: dict[str, Any] = json.loads(line)
        except ValueError:
            raise WorkerError(f"{self.label} interpreter {self.python} broke the worker protocol while {doing}: "
                              f"{line.strip()[:200]!r}") from None
        return message

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        assert self._process.stdin is not None
        doing = f"measuring {op} {args}" if op != "count_tokens" else "counting tokens"
        if self._process.stdin.closed:
            raise WorkerError(f"{self.label} interpreter {self.python} was closed earlier (a restart that failed); "
                              "see the error before this one")
        try:
            self._process.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self._read(doing)  # raises with the exit code and the last stderr line
        reply = self._read(doing)
        if "error" in reply:
            error = reply["error"]
            if error.get("type") == "EngineError":
                raise EngineError(error["message"])
            raise WorkerError(f"{self.label} interpreter {self.python}: {error.get('message', error)}")
        result: dict[str, Any] = reply["ok"]
        return result

    def run(self, kind: str, *, repetitions: int, warmup: bool, **shape: int) -> Run:
        return _run_from_json(kind, self.request(kind, repetitions=repetitions, warmup=warmup, **shape))

    # The in-process engine's interface (progress is per request here, not per repetition).
    def run_prompt(self, n_prompt: int, *, repetitions: int, warmup: bool = True,
                   progress: ProgressCallback | None = None) -> PromptRun:
        run = self.run("prompt", repetitions=repetitions, warmup=warmup, n_prompt=n_prompt)
        assert isinstance(run, PromptRun)
        return run

    def run_generation(self, n_gen: int, *, repetitions: int, warmup: bool = True,
                       progress: ProgressCallback | None = None) -> GenerationRun:
        run = self.run("generation", repetitions=repetitions, warmup=warmup, n_gen=n_gen)
        assert isinstance(run, GenerationRun)
        return run

    def run_batched(self, n_prompt: int, n_gen: int, batch_size: int, *, repetitions: int, warmup: bool = True,
                    progress: ProgressCallback | None = None) -> BatchedRun:
        run = self.run("batched", repetitions=repetitions, warmup=warmup, n_prompt=n_prompt, n_gen=n_gen,
                       batch_size=batch_size)
        assert isinstance(run, BatchedRun)
        return run

    def count_tokens(self, text: str) -> int:
        return int(self.request("count_tokens", text=text)["tokens"])

    def warm_up(self, n_prompt: int) -> WarmUpRun:
        reply = self.request("warm_up", n_prompt=n_prompt)
        return WarmUpRun(n_prompt=reply["n_prompt"], seconds=tuple(reply["seconds"]), settled=reply["settled"])

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.write(json.dumps({"op": "close"}) + "\n")
                self._process.stdin.close()
                self._process.wait(timeout=30)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._stderr.close()


def _merge(runs: list[Run]) -> Run:
    """One run record of all rounds: every per-repetition tuple concatenated, round after round."""
    first = runs[0]
    joined = {f.name: sum((getattr(r, f.name) for r in runs), ()) for f in dataclasses.fields(first)
              if isinstance(getattr(first, f.name), tuple)}
    merged: Run = dataclasses.replace(first, **joined)  # type: ignore[arg-type]
    return merged


@dataclasses.dataclass(frozen=True)
class PairedRun:
    kind: str
    baseline: Run   # A: one repetition per round
    current: Run    # B: likewise, in the same rounds
    rounds: int


class PairedEngine:
    """A and B workers measured in alternating rounds; on its own (re-measurements) it is B."""

    def __init__(self, baseline_python: str, current_python: str, *, model_path: str, threads: int, rounds: int,
                 progress: ProgressCallback | None = None) -> None:
        self.rounds = rounds
        self._progress = progress
        self._pythons = (baseline_python, current_python)
        self.model_path, self.threads = model_path, threads
        self._warm_up_tokens = 0
        self._start()
        self.facts = self.current.facts

    def _start(self) -> None:
        baseline_python, current_python = self._pythons
        self.baseline = EngineProcess(baseline_python, model_path=self.model_path, threads=self.threads,
                                      label="A/B baseline (--axion-ab-baseline)")
        try:
            self.current = EngineProcess(current_python, model_path=self.model_path, threads=self.threads,
                                         label="A/B current")
        except WorkerError:
            self.baseline.close()
            raise

    def restart(self) -> None:
        """Fresh worker processes for both sides.

        A process carries offsets of its own for its whole life (where its threads and buffers land,
        huge pages or not): seen here as a steady few-percent gap between two processes of the *same*
        build. Alternating rounds cannot cancel that; a regression must reproduce in new processes.
        """
        self.close()
        self._start()
        if self._warm_up_tokens:
            self.warm_up(self._warm_up_tokens)

    def measure_pair(self, kind: str, **shape: int) -> PairedRun:
        sides = {"A": self.baseline, "B": self.current}
        runs: dict[str, list[Run]] = {"A": [], "B": []}
        what = f"A/B {kind} " + " ".join(f"{k}={v}" for k, v in shape.items())
        for i, order in enumerate(round_order(self.rounds)):
            for side in order:
                # Each side warms up once, in its first round; after that one timed repetition a round.
                runs[side].append(sides[side].run(kind, repetitions=1, warmup=i == 0, **shape))
            if self._progress is not None:
                self._progress(what, i + 1, self.rounds)
        return PairedRun(kind, _merge(runs["A"]), _merge(runs["B"]), self.rounds)

    def run_prompt(self, n_prompt: int, *, repetitions: int, warmup: bool = True,
                   progress: ProgressCallback | None = None) -> PromptRun:
        return self.current.run_prompt(n_prompt, repetitions=repetitions, warmup=warmup)

    def run_generation(self, n_gen: int, *, repetitions: int, warmup: bool = True,
                       progress: ProgressCallback | None = None) -> GenerationRun:
        return self.current.run_generation(n_gen, repetitions=repetitions, warmup=warmup)

    def run_batched(self, n_prompt: int, n_gen: int, batch_size: int, *, repetitions: int, warmup: bool = True,
                    progress: ProgressCallback | None = None) -> BatchedRun:
        return self.current.run_batched(n_prompt, n_gen, batch_size, repetitions=repetitions, warmup=warmup)

    def count_tokens(self, text: str) -> int:
        return self.current.count_tokens(text)

    def warm_up(self, n_prompt: int) -> WarmUpRun:
        """Both sides, A first; B's figures are returned (A's settle the same way); again after a restart."""
        self._warm_up_tokens = n_prompt
        self.baseline.warm_up(n_prompt)
        return self.current.warm_up(n_prompt)

    def close(self) -> None:
        self.baseline.close()
        self.current.close()
