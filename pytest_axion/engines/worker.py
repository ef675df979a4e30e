"""The llama.cpp engine in a process of its own: one worker per llama-cpp-python installation.

:class:`EngineProcess` starts ``PYTHON pytest_axion/engines/llama.py --model M --threads T`` (the engine
module by path, so that another environment needs only llama-cpp-python) and speaks its JSON-lines
protocol (:func:`pytest_axion.engines.llama.serve`). Every session measures this way, plain or A/B:
llama.cpp is native code, and a crash of it (SIGSEGV, SIGABRT, the OOM killer's SIGKILL) ends the
worker, not pytest. The crash becomes one line naming the model, the signal and llama.cpp's last log
lines; the next request starts a fresh worker. The timings are taken inside the worker, around
llama.cpp's own calls, so the process boundary costs the figures nothing (``benchmarks/fidelity.py``).

An A/B session pairs two of them (:mod:`pytest_axion.engines.paired`).
"""

from __future__ import annotations

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
    try:
        done = subprocess.run([python, str(ENGINE_SCRIPT), "--probe"], capture_output=True, text=True, timeout=120,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise WorkerError(f"{python} could not report llama.cpp's build ({err}): give the path of a Python "
                          "interpreter that has llama-cpp-python") from None
    if done.returncode != 0:
        tail = [line for line in done.stderr.splitlines() if line.strip()][-1:] or [f"exit code {done.returncode}"]
        raise WorkerError(f"{python} could not report llama.cpp's build: {tail[0]}: check that llama-cpp-python "
                          f"imports there ({python} -c 'import llama_cpp')")
    try:
        facts: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise WorkerError(f"{python} printed no build facts: check that llama-cpp-python imports there ({python} "
                          "-c 'import llama_cpp')") from None
    return facts


def _exit_description(code: int) -> str:
    if code < 0:
        try:
            number = signal.Signals(-code)
        except ValueError:
            return f"signal {-code}"
        note = _SIGNAL_NOTES.get(number)
        return number.name + (f" ({note})" if note else "")
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
            if ready.get("error", {}).get("type") == "Unsupported":   # the binding, not the model
                raise WorkerError(f"{self.label}: {self.python}: {ready['error']['message']}")
            raise WorkerError(f"{self.label}: {self.python} could not load {self.model_path}: "
                              f"{ready.get('error', {}).get('message', ready)}")
        self.facts = ModelFacts.from_json(ready["ready"])

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    # The worker is our child process: its CPU time is this process tree's own.
    measures_contention = True

    def describe(self) -> str:
        return ""

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
            if error.get("type") in ("EngineError", "Unsupported"):
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
