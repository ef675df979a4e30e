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
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from pytest_axion.children import die_with_parent
from pytest_axion.engines.base import Measured, measure_run, no_open_loop
from pytest_axion.errors import AxionError
from pytest_axion.records import (
    EngineError,
    ModelFacts,
    OpenLoopRun,
    ProgressCallback,
    Run,
    WarmUpRun,
    run_from_json,
)

ENGINE_SCRIPT = Path(__file__).resolve().with_name("llama.py")
LOG_LINES_QUOTED = 3
# llama.cpp's AMX kernels (Intel Sapphire Rapids and later, picked by -march=native) crash in ggml_backend_amx_mul_mat
# on some machines for every prompt of two tokens or more (seen with 0.3.36 on a KVM guest; llama.cpp issue 20824).
NO_AMX_CMAKE_ARGS = "-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8"
AMX_CRASH_ADVICE = ("the model's weights were in llama.cpp's AMX buffers, whose kernels crash on some machines "
                    "(llama.cpp issue 20824): rebuild llama-cpp-python without them, CMAKE_ARGS=\""
                    + NO_AMX_CMAKE_ARGS + "\" pip install --force-reinstall --no-deps --no-cache-dir "
                    "llama-cpp-python=={version}")
# Deadlines: a request may stay silent (no progress line) this many times what its work should take, judged from
# the warm-up's speed, and never less than the floor (--axion-worker-timeout). Loading reads the file: the floor
# plus the file's size at this slow a disk read.
QUIET_WORK_FACTOR = 20.0
DEFAULT_HANG_FLOOR_S = 60.0
LOAD_READ_BYTES_PER_S = 50e6
# A generated token costs up to this many prompt tokens (one-token steps cannot batch the weight reads).
GEN_TOKEN_COST = 30
_SIGNAL_NOTES = {signal.SIGKILL: "killed: the out-of-memory killer, if memory ran out",
                 signal.SIGSEGV: "a segmentation fault in native code", signal.SIGABRT: "aborted by native code"}


class WorkerError(AxionError):
    """A worker interpreter is missing, lacks llama-cpp-python, crashed, or broke the protocol."""


class WorkerHang(WorkerError):
    """The worker said nothing for longer than its request could take: killed, the next test gets a fresh one."""


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


WORKER_LABEL = "llama.cpp worker"   # what errors call a worker that has no side of an A/B session


class EngineProcess:
    """One worker process: a model loaded under ``python``, answering measurement requests."""

    def __init__(self, python: str, *, model_path: str, threads: int, label: str = WORKER_LABEL,
                 hang_floor_s: float = DEFAULT_HANG_FLOOR_S, mmap: bool = True) -> None:
        self.python, self.label, self.model_path, self.threads = python, label, model_path, threads
        self.mmap = mmap   # False: the model read into the worker's own memory (benchmarks/proxy_fidelity.py)
        self.hang_floor_s = hang_floor_s
        self._warm_up_tokens = 0
        self._seconds_per_token: float | None = None   # a prompt token's time, from the warm-up
        self._start()

    def _start(self) -> None:
        executable = shutil.which(self.python)
        if executable is None:
            raise WorkerError(f"{self.label} interpreter {self.python} does not exist or is not executable: give the "
                              "path of the python in the environment to compare with (e.g. .venv-old/bin/python)")
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._process = subprocess.Popen(
            [executable, str(ENGINE_SCRIPT), "--model", self.model_path, "--threads", str(self.threads),
             *([] if self.mmap else ["--no-mmap"])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0,
            preexec_fn=die_with_parent)
        self._pending = b""
        try:
            size = os.path.getsize(self.model_path)
        except OSError:
            size = 0
        try:
            ready = self._read("loading the model", quiet_limit_s=self.hang_floor_s + size / LOAD_READ_BYTES_PER_S)
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
    requests_apart = False   # llama.cpp decodes every user of a repetition in the same steps

    def describe(self) -> str:
        return ""

    def _stderr_lines(self) -> list[str]:
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        return [line.strip() for line in text.splitlines() if line.strip()]

    def quiet_limit_s(self, n_prompt_tokens: int = 0, n_gen_tokens: int = 0) -> float:
        """How long a request may go without a line from the worker: many times what one repetition of its work
        should take at the warm-up's speed, never less than the floor."""
        if self._seconds_per_token is None:
            return self.hang_floor_s
        work = (n_prompt_tokens + GEN_TOKEN_COST * n_gen_tokens) * self._seconds_per_token
        return max(self.hang_floor_s, QUIET_WORK_FACTOR * work)

    def _next_line(self, doing: str, quiet_limit_s: float) -> bytes:
        """The worker's next line, or :class:`WorkerHang` once it has been silent for ``quiet_limit_s``."""
        assert self._process.stdout is not None
        fd = self._process.stdout.fileno()
        deadline = time.monotonic() + quiet_limit_s
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, remaining))
            if not ready:
                self._process.kill()
                self._process.wait()
                raise WorkerHang(f"{self.label} {self.python} said nothing for {quiet_limit_s:.0f} s while {doing} "
                                 f"with model {self.model_path}: llama.cpp hung or the worker was stopped, so it was "
                                 "killed; the next test gets a fresh worker (a machine this slow needs a longer "
                                 "--axion-worker-timeout)")
            chunk = os.read(fd, 65536)
            if not chunk:
                line, self._pending = self._pending, b""
                return line
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line + b"\n"

    def _read(self, doing: str, progress: ProgressCallback | None = None, *,
              quiet_limit_s: float | None = None) -> dict[str, Any]:
        limit = self.hang_floor_s if quiet_limit_s is None else quiet_limit_s
        while True:
            raw = self._next_line(doing, limit)
            if not raw.endswith(b"\n"):
                raise self._ended(doing)
            line = raw.decode("utf-8", "replace")
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
        facts: ModelFacts | None = getattr(self, "facts", None)
        if facts is not None and "AMX" in facts.model_buffers:
            advice = AMX_CRASH_ADVICE.format(version=facts.llama_cpp_python_version)
        else:
            advice = ("the next test gets a fresh worker (if it crashes again, try fewer threads or another "
                      "llama-cpp-python build)")
        return EngineCrash(f"llama.cpp crashed with {_exit_description(code)} while {doing} with model "
                           f"{self.model_path} ({self.label}, {self.python}); llama.cpp's last log lines: {quoted}; "
                           f"{advice}")

    def request(self, op: str, progress: ProgressCallback | None = None, **args: Any) -> dict[str, Any]:
        assert self._process.stdin is not None
        batch = int(args.get("batch_size", 1))
        prompt_tokens = int(args.get("n_prompt", 0)) * batch + len(str(args.get("text", "")))
        quiet_limit = self.quiet_limit_s(prompt_tokens, int(args.get("n_gen", 0)) * batch)
        shape = " ".join(f"{k}={v}" for k, v in args.items()
                         if k not in ("repetitions", "warmup", "text", "max_seconds"))
        doing = {"count_tokens": "counting tokens", "warm_up": f"warming up ({shape})"}.get(
            op, f"measuring {op} {shape}".rstrip())
        if self._process.stdin.closed:
            raise WorkerError(f"{self.label} {self.python} was closed earlier (a restart that failed); "
                              "see the error before this one")
        try:
            self._process.stdin.write((json.dumps({"op": op, **args}) + "\n").encode("utf-8"))
            self._process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise self._ended(doing) from None
        reply = self._read(doing, progress, quiet_limit_s=quiet_limit)
        if "error" in reply:
            error = reply["error"]
            if error.get("type") in ("EngineError", "Unsupported"):
                raise EngineError(error["message"])
            raise WorkerError(f"{self.label} {self.python}: {error.get('message', error)}")
        result: dict[str, Any] = reply["ok"]
        return result

    def measure(self, kind: str, *, nodeid: str, threads: int, repetitions: int, max_seconds: float | None = None,
                progress: ProgressCallback | None = None, **shape: int) -> Measured:
        return measure_run(self, kind, nodeid=nodeid, threads=threads, repetitions=repetitions,
                           max_seconds=max_seconds, progress=progress, **shape)

    def run(self, kind: str, *, repetitions: int, warmup: bool = True, max_seconds: float | None = None,
            progress: ProgressCallback | None = None, **shape: int) -> Run:
        limit = {} if max_seconds is None else {"max_seconds": max_seconds}
        return run_from_json(kind, self.request(kind, progress, repetitions=repetitions, warmup=warmup, **limit,
                                                **shape))

    def open_loop(self, arrivals: Sequence[float], *, n_prompt: int, n_gen: int, max_in_flight: int,
                  progress: ProgressCallback | None = None) -> OpenLoopRun:
        raise no_open_loop("in process, search for the most users with axion.capacity() instead")

    def count_tokens(self, text: str) -> int:
        return int(self.request("count_tokens", text=text)["tokens"])

    def warm_up(self, n_prompt: int) -> WarmUpRun:
        self._warm_up_tokens = n_prompt
        reply = self.request("warm_up", n_prompt=n_prompt)
        if reply["seconds"]:
            self._seconds_per_token = min(reply["seconds"]) / max(1, reply["n_prompt"])
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
                self._process.stdin.write((json.dumps({"op": "close"}) + "\n").encode("utf-8"))
                self._process.stdin.close()
                self._process.wait(timeout=30)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._stderr.close()
