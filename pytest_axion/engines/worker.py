"""The llama.cpp engine in a process of its own: one worker per llama-cpp-python installation, and A/B pairs.

:class:`EngineProcess` starts ``PYTHON pytest_axion/engines/llama.py --model M --threads T`` (the engine
module by path, so that another environment needs only llama-cpp-python) and speaks its JSON-lines
protocol (:func:`pytest_axion.engines.llama.serve`). Every session measures this way, plain or A/B:
llama.cpp is native code, and a crash of it (SIGSEGV, SIGABRT, the OOM killer's SIGKILL) ends the
worker, not pytest. The crash becomes one line naming the model, the signal and llama.cpp's last log
lines; the next request starts a fresh worker. The timings are taken inside the worker, around
llama.cpp's own calls, so the process boundary costs the figures nothing (``benchmarks/fidelity.py``).

:class:`PairedEngine` holds two of them, A (the baseline installation) and B (the current one), and
measures each workload on both in alternating rounds (:func:`round_order`, ABBA).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from pytest_axion.engines.records import (
    EngineError,
    ModelFacts,
    ProgressCallback,
    Run,
    WarmUpRun,
    run_from_json,
)
from pytest_axion.errors import AxionError

ENGINE_SCRIPT = Path(__file__).resolve().with_name("llama.py")
LOG_LINES_QUOTED = 3
_SIGNAL_NOTES = {signal.SIGKILL: "killed: the out-of-memory killer, if memory ran out",
                 signal.SIGSEGV: "a segmentation fault in native code", signal.SIGABRT: "aborted by native code"}


class WorkerError(AxionError):
    """A worker interpreter is missing, lacks llama-cpp-python, crashed, or broke the protocol."""


class EngineCrash(WorkerError):
    """The worker died (a signal or an exit) while loading or measuring: llama.cpp crashed."""


def probe_build(python: str = sys.executable) -> dict[str, str]:
    """llama.cpp's build facts (system info, version) from a short-lived worker that loads no model."""
    done = subprocess.run([python, str(ENGINE_SCRIPT), "--probe"], capture_output=True, text=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        tail = [line for line in done.stderr.splitlines() if line.strip()][-1:] or [f"exit code {done.returncode}"]
        raise WorkerError(f"{python} could not report llama.cpp's build: {tail[0]}: check that llama-cpp-python "
                          f"imports there ({python} -c 'import llama_cpp')")
    facts: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return facts


def _exit_description(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        note = _SIGNAL_NOTES.get(-code)
        return f"{name}" + (f" ({note})" if note else "")
    return f"exit code {code}"


class EngineProcess:
    """One worker process: a model loaded under ``python``, answering measurement requests."""

    def __init__(self, python: str, *, model_path: str, threads: int, label: str = "llama.cpp worker") -> None:
        self.python, self.label, self.model_path, self.threads = python, label, model_path, threads
        self._warm_up_tokens = 0
        self._start()

    def _start(self) -> None:
        executable = shutil.which(self.python)
        if executable is None:
            raise WorkerError(f"{self.label} interpreter {self.python} does not exist or is not executable: give the "
                              "path of the python in the environment to compare with (e.g. .venv-old/bin/python)")
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._process = subprocess.Popen(
            [executable, str(ENGINE_SCRIPT), "--model", self.model_path, "--threads", str(self.threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)
        try:
            ready = self._read("loading the model")
        except WorkerError:
            self.close()
            raise
        if "ready" not in ready:
            self.close()
            raise WorkerError(f"{self.label}: {self.python} could not load {self.model_path}: "
                              f"{ready.get('error', {}).get('message', ready)}")
        self.facts = ModelFacts.from_json(ready["ready"])

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def _stderr_lines(self) -> list[str]:
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        return [line.strip() for line in text.splitlines() if line.strip()]

    def _read(self, doing: str, progress: ProgressCallback | None = None) -> dict[str, Any]:
        assert self._process.stdout is not None
        while True:
            line = self._process.stdout.readline()
            if not line:
                raise self._ended(doing)
            try:
                message: dict[str, Any] = json.loads(line)
            except ValueError:
                raise WorkerError(f"{self.label}: {self.python} broke the worker protocol while {doing}: "
                                  f"{line.strip()[:200]!r}") from None
            if "progress" not in message:
                return message
            if progress is not None:
                what, done, total = message["progress"]
                progress(str(what), int(done), int(total))

    def _ended(self, doing: str) -> WorkerError:
        """The error for a worker that stopped answering: a crash names the signal and llama.cpp's last words."""
        code = self._process.wait()
        lines = self._stderr_lines()
        tail = lines[-1] if lines else "no output on stderr"
        if "No module named 'llama_cpp'" in tail:
            return WorkerError(f"{self.label} interpreter {self.python} has no llama-cpp-python ({tail}): "
                               f"install it there ({self.python} -m pip install llama-cpp-python)")
        quoted = " | ".join(lines[-LOG_LINES_QUOTED:]) if lines else "no log output"
        return EngineCrash(f"llama.cpp crashed with {_exit_description(code)} while {doing} with model "
                           f"{self.model_path} ({self.label}, {self.python}); llama.cpp's last log lines: {quoted}; "
                           "the next test gets a fresh worker (if it crashes again, try fewer threads or another "
                           "llama-cpp-python build)")

    def request(self, op: str, progress: ProgressCallback | None = None, **args: Any) -> dict[str, Any]:
        assert self._process.stdin is not None
        shape = " ".join(f"{k}={v}" for k, v in args.items() if k not in ("repetitions", "warmup", "text"))
        doing = "counting tokens" if op == "count_tokens" else f"measuring {op} {shape}".rstrip()
        if self._process.stdin.closed:
            raise WorkerError(f"{self.label} {self.python} was closed earlier (a restart that failed); "
                              "see the error before this one")
        try:
            self._process.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise self._ended(doing) from None
        reply = self._read(doing, progress)
        if "error" in reply:
            error = reply["error"]
            if error.get("type") == "EngineError":
                raise EngineError(error["message"])
            raise WorkerError(f"{self.label} {self.python}: {error.get('message', error)}")
        result: dict[str, Any] = reply["ok"]
        return result

    def run(self, kind: str, *, repetitions: int, warmup: bool = True, progress: ProgressCallback | None = None,
            **shape: int) -> Run:
        return run_from_json(kind, self.request(kind, progress, repetitions=repetitions, warmup=warmup, **shape))

    def count_tokens(self, text: str) -> int:
        return int(self.request("count_tokens", text=text)["tokens"])

    def warm_up(self, n_prompt: int) -> WarmUpRun:
        self._warm_up_tokens = n_prompt
        reply = self.request("warm_up", n_prompt=n_prompt)
        return WarmUpRun(n_prompt=reply["n_prompt"], seconds=tuple(reply["seconds"]), settled=reply["settled"])

    def restart(self) -> None:
        """A fresh worker (after a crash, or for a confirming attempt), warmed up as the first one was."""
        self.close()
        self._start()
        if self._warm_up_tokens:
            self.warm_up(self._warm_up_tokens)

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
    """A and B workers measured in alternating rounds; as a plain :class:`Engine` it is B."""

    def __init__(self, baseline_python: str, current_python: str, *, model_path: str, threads: int, rounds: int,
                 progress: ProgressCallback | None = None) -> None:
        self.rounds = rounds
        self._progress = progress
        self._pythons = (baseline_python, current_python)
        self.model_path, self.threads = model_path, threads
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

    @property
    def alive(self) -> bool:
        return self.baseline.alive and self.current.alive

    def restart(self) -> None:
        """Fresh worker processes for both sides.

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
                runs[side].append(sides[side].run(kind, repetitions=1, warmup=i == 0, **shape))
            if self._progress is not None:
                self._progress(what, i + 1, self.rounds)
        return PairedRun(kind, _merge(runs["A"]), _merge(runs["B"]), self.rounds)

    def run(self, kind: str, *, repetitions: int, warmup: bool = True, progress: ProgressCallback | None = None,
            **shape: int) -> Run:
        return self.current.run(kind, repetitions=repetitions, warmup=warmup, progress=progress, **shape)

    def count_tokens(self, text: str) -> int:
        return self.current.count_tokens(text)

    def warm_up(self, n_prompt: int) -> WarmUpRun:
        """Both sides, A first; B's figures are returned (A's settle the same way); again after a restart."""
        self.baseline.warm_up(n_prompt)
        return self.current.warm_up(n_prompt)

    def close(self) -> None:
        self.baseline.close()
        self.current.close()


def round_order(rounds: int) -> list[str]:
    """ABBA ABBA ...: each round is one repetition per side; the first side alternates."""
    return ["AB" if i % 2 == 0 else "BA" for i in range(rounds)]

