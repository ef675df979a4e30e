"""Measure llama.cpp prompt processing and generation speed through llama-cpp-python's low-level API.

This module imports only ``llama_cpp`` and the standard library, so it can also run as a worker under
another Python that has nothing but llama-cpp-python installed (``PYTHON path/to/engine.py --model M
--threads T``, see :func:`serve`): the A/B upgrade gate measures two installations with the same code.
It returns raw timings as plain dicts (the fields of :mod:`pytest_axion.records`' run records,
which the worker client builds); turning them into tokens/s and verdicts happens elsewhere. The plugin
runs it only as a worker process (:mod:`pytest_axion.engines.worker`), so that a crash of llama.cpp
cannot take pytest down with it.

The workloads mirror llama.cpp's own tools, so that the figures can be compared with them:
- ``run_prompt(n)`` is llama-bench's ``pp n``: one prompt of n random tokens (BOS first), decoded in
  chunks of ``n_batch``, logits for the last token only, context of exactly n tokens;
- ``run_generation(n)`` is llama-bench's ``tg n``: n single-token decodes from an empty cache;
- ``run_batched(pp, tg, b)`` is ``llama-batched-bench -npp pp -ntg tg -npl b -c b*(pp+tg)``: b
  sequences, each with its own random prompt, decoded together, then tg steps of one token per
  sequence.
Every repetition starts from a cleared KV cache; each run starts with an untimed warm-up.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import llama_cpp

DEFAULT_N_BATCH = 2048  # llama-bench's -b default
MAX_SEQUENCES = 256     # llama.cpp's LLAMA_MAX_SEQ: the most sequences (users) one context can hold
DEFAULT_N_UBATCH = 512  # llama-bench's -ub default
_MAX_CACHED_CONTEXTS = 4
# An unknown binding may lack the types: then binding_problem() names it before anything is measured.
_TOKEN_SIZE_BYTES = ctypes.sizeof(getattr(llama_cpp, "llama_token", ctypes.c_int32))
_POS_SIZE_BYTES = ctypes.sizeof(getattr(llama_cpp, "llama_pos", ctypes.c_int32))

# Measured with this engine (BENCHMARKS.md); others from 0.3.16 on are expected to work while they keep these calls.
KNOWN_GOOD_VERSIONS = ("0.3.35", "0.3.36")
# The low-level calls the engine makes: llama-cpp-python renames and drops them when llama.cpp does.
REQUIRED_CALLS = (
    "llama_backend_init", "llama_log_set", "llama_log_callback", "llama_print_system_info",
    "llama_model_default_params", "llama_model_load_from_file", "llama_model_free", "llama_model_get_vocab",
    "llama_model_desc", "llama_model_n_ctx_train", "llama_model_n_params", "llama_model_size",
    "llama_vocab_n_tokens", "llama_vocab_get_add_bos", "llama_vocab_bos", "llama_tokenize",
    "llama_context_default_params", "llama_init_from_model", "llama_free", "llama_get_memory",
    "llama_memory_clear", "llama_batch_init", "llama_batch", "llama_batch_free", "llama_decode",
    "llama_synchronize", "llama_token", "llama_pos",
)

ProgressCallback = Callable[[str, int, int], None]  # (workload, repetitions done, total)


class EngineError(Exception):
    """llama.cpp refused a model, a context or a batch; the message is one line."""


class _LlamaLog:
    """Captures llama.cpp's log lines instead of letting them flood the terminal.

    llama.cpp has a single, process-wide log callback, so this object is a process-wide singleton.
    """

    def __init__(self) -> None:
        self.echo = False   # a worker also writes each line to stderr at once: the client's view after a crash
        self._lines: collections.deque[str] = collections.deque(maxlen=2000)
        self._lock = threading.Lock()
        self._callback = llama_cpp.llama_log_callback(self._on_log)
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def _on_log(self, level: int, text: bytes, user_data: Any) -> None:
        if self.echo:
            os.write(2, text)
        with self._lock:
            self._lines.append(text.decode("utf-8", errors="replace"))

    def take(self) -> str:
        with self._lock:
            text = "".join(self._lines)
            self._lines.clear()
        return text


_log: _LlamaLog | None = None
_init_lock = threading.Lock()


def _ensure_backend() -> _LlamaLog:
    global _log
    with _init_lock:
        if _log is None:
            _log = _LlamaLog()
            llama_cpp.llama_backend_init()
        return _log


def _unsupported(what: str) -> str:
    version = getattr(llama_cpp, "__version__", "unknown")
    return (f"llama-cpp-python {version} {what}: pytest-axion's engine is known to work with llama-cpp-python "
            f"{' and '.join(KNOWN_GOOD_VERSIONS)}; install one (pip install "
            f"'llama-cpp-python=={KNOWN_GOOD_VERSIONS[-1]}') or report the version")


def _binding_changed(err: Exception) -> bool:
    """A call into the binding that no longer fits it (renamed, new arguments); not a bug of this engine's."""
    return isinstance(err, ctypes.ArgumentError) or getattr(err, "obj", None) is llama_cpp


def binding_problem() -> str | None:
    """One line when the installed binding lacks a call the engine makes; None when it has them all."""
    missing = [name for name in REQUIRED_CALLS if not hasattr(llama_cpp, name)]
    if not missing:
        return None
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    return _unsupported(f"lacks {', '.join(missing[:3])}{more}")


def system_info() -> str:
    """llama.cpp's build flags as ``llama_print_system_info()`` prints them."""
    _ensure_backend()
    return bytes(llama_cpp.llama_print_system_info()).decode("utf-8", errors="replace").strip()


def build_facts() -> dict[str, str]:
    """The build's flags and version, known without loading a model (what ``--probe`` prints)."""
    return {"system_info": system_info(),
            "llama_cpp_python_version": str(getattr(llama_cpp, "__version__", "unknown"))}


def ggml_build() -> tuple[str, str]:
    """(commit, version) that libggml-base reports, e.g. ("0c1e570", "0.25.3"); "unknown" when it cannot."""
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    try:
        lib = ctypes.CDLL(os.path.join(lib_dir, "libggml-base.so"))
        values = []
        for name in ("ggml_commit", "ggml_version"):
            function = getattr(lib, name)
            function.restype = ctypes.c_char_p
            values.append((function() or b"unknown").decode("utf-8", errors="replace"))
        return values[0], values[1]
    except (OSError, AttributeError):  # another platform's library name, or an older build without them
        return "unknown", "unknown"


def _model_buffers(load_log: str) -> tuple[str, ...]:
    # llama.cpp logs "CPU_REPACK model buffer size = ..." for each weight buffer type it used;
    # CPU_KLEIDIAI there is the proof that Arm's KleidiAI kernels are in use.
    names = []
    for line in load_log.splitlines():
        marker = " model buffer size"
        if marker in line:
            head = line.split(marker, 1)[0].split(":")[-1].strip()
            if head and head not in names:
                names.append(head)
    return tuple(names)


class _Context:
    """One llama_context and its reusable batch, sized for one workload shape."""

    def __init__(self, model: Any, *, n_ctx: int, n_seq: int, threads: int, n_batch: int,
                 n_ubatch: int) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_ubatch
        params.n_seq_max = n_seq
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        if not self.ctx:
            raise EngineError(
                f"llama.cpp could not create a context of {n_ctx} tokens for {n_seq} sequence(s): "
                "reduce the prompt/generation sizes or the batch size"
            )
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_batch = n_batch

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.memory, False)

    def decode(self, batch: Any) -> None:
        status = llama_cpp.llama_decode(self.ctx, batch)
        if status != 0:
            raise EngineError(f"llama_decode failed with status {status} (1 = no KV slot: the context is too small)")

    def free(self) -> None:
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None


class _Batch:
    """A llama_batch filled once, before timing; decoded in views of at most n_batch tokens."""

    def __init__(self, tokens: list[int], positions: list[int], seq_ids: list[int], logits: list[bool]) -> None:
        n = len(tokens)
        self.n_tokens = n
        self.batch = llama_cpp.llama_batch_init(n, 0, 1)
        b = self.batch
        for i in range(n):
            b.token[i] = tokens[i]
            b.pos[i] = positions[i]
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq_ids[i]
            b.logits[i] = logits[i]
        b.n_tokens = n

    def views(self, n_batch: int) -> list[Any]:
        """Sub-batches of at most n_batch tokens, pointing into this batch's arrays (no copies)."""
        if self.n_tokens <= n_batch:
            return [self.batch]
        out = []
        b = self.batch
        for start in range(0, self.n_tokens, n_batch):
            view = llama_cpp.llama_batch()
            view.n_tokens = min(n_batch, self.n_tokens - start)
            view.token = _offset(b.token, start)
            view.pos = _offset(b.pos, start)
            view.n_seq_id = _offset(b.n_seq_id, start)
            view.seq_id = _offset(b.seq_id, start)
            view.logits = _offset(b.logits, start)
            out.append(view)
        return out

    def free(self) -> None:
        llama_cpp.llama_batch_free(self.batch)


def _read_into_memory(params: Any) -> None:
    """Load the model into memory of its own instead of mapping the file (llama.cpp's tools map it by default):
    where the file's pages sit in the page cache then no longer matters, and a fresh copy of a file generated up
    to 10% faster than the same bytes installed long before. Recent llama.cpp names the switch ``load_mode``,
    older ``use_mmap``; a ctypes structure takes an unknown name silently, so the field is looked up."""
    fields = {name for name, *_ in type(params)._fields_}
    if "load_mode" in fields:
        params.load_mode = getattr(llama_cpp, "LLAMA_LOAD_MODE_NONE", 0)
    elif "use_mmap" in fields:
        params.use_mmap = False
    else:
        raise EngineError(_unsupported("has no way to load a model without mapping its file"))


def _offset(pointer: Any, items: int) -> Any:
    address = ctypes.cast(pointer, ctypes.c_void_p).value or 0
    return ctypes.cast(address + items * ctypes.sizeof(pointer._type_), type(pointer))


class LlamaEngine:
    """A loaded model that answers pp / tg / batched measurement requests."""

    def __init__(self, model_path: str, *, threads: int, n_batch: int = DEFAULT_N_BATCH,
                 n_ubatch: int = DEFAULT_N_UBATCH, seed: int = 1234, use_mmap: bool = True) -> None:
        log = _ensure_backend()
        log.take()
        params = llama_cpp.llama_model_default_params()
        if not use_mmap:
            _read_into_memory(params)
        self.model = llama_cpp.llama_model_load_from_file(model_path.encode(), params)
        load_log = log.take()
        if not self.model:
            last = [line.strip() for line in load_log.splitlines() if line.strip()][-1:] or ["no detail"]
            raise EngineError(f"llama.cpp could not load {model_path}: {last[0]}")
        self.model_path = model_path
        self.threads = threads
        self.n_batch = n_batch
        self.n_ubatch = n_ubatch
        self._rng = random.Random(seed)
        self._vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._contexts: dict[tuple[int, int], _Context] = {}
        commit, version = ggml_build()
        desc = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self.model, desc, len(desc))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self.model))
        self.facts: dict[str, Any] = {
            "description": desc.value.decode("utf-8", errors="replace"),
            "n_params": int(llama_cpp.llama_model_n_params(self.model)),
            "size_bytes": int(llama_cpp.llama_model_size(self.model)),
            "n_vocab": self.n_vocab,
            "n_ctx_train": self.n_ctx_train,
            "model_buffers": list(_model_buffers(load_log)),
            **build_facts(),
            "ggml_commit": commit,
            "ggml_version": version,
        }

    # -- workloads -------------------------------------------------------------------------------

    def warm_up(self, n_prompt: int, *, settle: float = 0.05, min_runs: int = 3, max_runs: int = 30,
                max_seconds: float = 10.0, progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Decode an n_prompt-token prompt until the speed stops rising: at least ``min_runs`` runs, the last two
        no faster than the fastest before them by more than ``settle``.

        A fresh process measures cold at first (page faults on the mapped weights, caches, clocks): a
        16-core run's first cell climbed from 1083 to 1896 t/s over its repetitions. One warm-up per
        workload, as llama-bench does, is not enough for the session's first measurement. What ends the
        warm-up is the climb ending, not the runs agreeing: on a noisy or busy machine runs that agree within
        5% may never come (3 of 7 series with a core busy had none in 12 runs), and waiting for them ran on to
        ``max_runs`` or ``max_seconds`` at every session's start while teaching the measurements nothing.
        """
        _check_positive(n_prompt=n_prompt)
        self._check_fits(n_prompt)
        ctx = self._context(n_ctx=n_prompt, n_seq=1)
        batch = self._prompt_batch(n_prompt, seq_id=0)
        views = batch.views(ctx.n_batch)
        seconds: list[float] = []
        deadline = time.perf_counter() + max_seconds
        try:
            while len(seconds) < max_runs:
                ctx.clear()
                seconds.append(self._timed_prompt(ctx, views))
                _report(progress, f"warm-up pp{n_prompt}", len(seconds), max_runs)   # a sign of life per run
                if _stopped_rising(seconds, min_runs, settle) or time.perf_counter() > deadline:
                    break
        finally:
            batch.free()
            ctx.clear()
        return {"n_prompt": n_prompt, "seconds": seconds, "settled": _stopped_rising(seconds, min_runs, settle)}

    def run_prompt(self, n_prompt: int, *, repetitions: int, warmup: bool = True, max_seconds: float | None = None,
                   progress: ProgressCallback | None = None) -> dict[str, Any]:
        """llama-bench ``pp n_prompt``: seconds to decode an n_prompt-token prompt, per repetition (fewer, but at
        least :data:`MIN_REPETITIONS`, where ``repetitions`` would take over ``max_seconds``)."""
        _check_positive(n_prompt=n_prompt, repetitions=repetitions)
        self._check_fits(n_prompt)
        ctx = self._context(n_ctx=n_prompt, n_seq=1)
        batch = self._prompt_batch(n_prompt, seq_id=0)
        views = batch.views(ctx.n_batch)
        try:
            if warmup:  # llama-bench warms up with one full prompt
                ctx.clear()
                self._timed_prompt(ctx, views)
            seconds: list[float] = []
            while not enough_repetitions(seconds, repetitions, max_seconds):
                ctx.clear()
                seconds.append(self._timed_prompt(ctx, views))
                _report(progress, f"pp{n_prompt}", len(seconds), repetitions)
        finally:
            batch.free()
            ctx.clear()
        return {"n_prompt": n_prompt, "seconds": seconds}

    def run_generation(self, n_gen: int, *, repetitions: int, warmup: bool = True, max_seconds: float | None = None,
                       progress: ProgressCallback | None = None) -> dict[str, Any]:
        """llama-bench ``tg n_gen``: seconds for n_gen single-token decodes, per repetition (``max_seconds`` as in
        :meth:`run_prompt`)."""
        _check_positive(n_gen=n_gen, repetitions=repetitions)
        self._check_fits(n_gen)
        ctx = self._context(n_ctx=n_gen, n_seq=1)
        steps = [_Batch([tok], [pos], [0], [True]) for pos, tok in enumerate(self._first_and_random(n_gen))]
        try:
            if warmup:  # llama-bench warms generation up with a single token
                ctx.clear()
                ctx.decode(steps[0].batch)
                llama_cpp.llama_synchronize(ctx.ctx)
            seconds: list[float] = []
            while not enough_repetitions(seconds, repetitions, max_seconds):
                ctx.clear()
                seconds.append(self._timed_steps(ctx, steps, step_seconds=None))
                _report(progress, f"tg{n_gen}", len(seconds), repetitions)
        finally:
            for step in steps:
                step.free()
            ctx.clear()
        return {"n_gen": n_gen, "seconds": seconds}

    def run_batched(self, n_prompt: int, n_gen: int, batch_size: int, *, repetitions: int,
                    warmup: bool = True, max_seconds: float | None = None,
                    progress: ProgressCallback | None = None) -> dict[str, Any]:
        """llama-batched-bench cell (pp, tg, b): prompt phase, then tg steps of b tokens each (``max_seconds`` as
        in :meth:`run_prompt`)."""
        _check_positive(n_prompt=n_prompt, n_gen=n_gen, batch_size=batch_size, repetitions=repetitions)
        if batch_size > MAX_SEQUENCES:
            raise EngineError(f"batch size {batch_size} exceeds the {MAX_SEQUENCES} sequences llama.cpp holds in one "
                              f"context: measure at most {MAX_SEQUENCES} concurrent users")
        self._check_fits(n_prompt + n_gen)
        ctx = self._context(n_ctx=batch_size * (n_prompt + n_gen), n_seq=batch_size)
        prompt = self._batched_prompt(n_prompt, batch_size)
        steps = [
            _Batch([self._random_token() for _ in range(batch_size)], [n_prompt + i] * batch_size,
                   list(range(batch_size)), [True] * batch_size)
            for i in range(n_gen)
        ]
        prompt_views = prompt.views(ctx.n_batch)
        try:
            if warmup:
                ctx.clear()
                for view in prompt_views:
                    ctx.decode(view)
                ctx.decode(steps[0].batch)
                llama_cpp.llama_synchronize(ctx.ctx)
            prompt_seconds: list[float] = []
            gen_seconds: list[float] = []
            all_steps: list[list[float]] = []
            while not enough_repetitions([p + g for p, g in zip(prompt_seconds, gen_seconds, strict=True)],
                                         repetitions, max_seconds):
                ctx.clear()
                prompt_seconds.append(self._timed_prompt(ctx, prompt_views))
                step_seconds: list[float] = []
                gen_seconds.append(self._timed_steps(ctx, steps, step_seconds=step_seconds))
                all_steps.append(step_seconds)
                _report(progress, f"batched pp{n_prompt} tg{n_gen} B={batch_size}", len(gen_seconds), repetitions)
        finally:
            prompt.free()
            for step in steps:
                step.free()
            ctx.clear()
        return {"n_prompt": n_prompt, "n_gen": n_gen, "batch_size": batch_size, "prompt_seconds": prompt_seconds,
                "gen_seconds": gen_seconds, "step_seconds": all_steps}

    def count_tokens(self, text: str) -> int:
        """Number of tokens the model's own tokenizer makes of ``text`` (no BOS)."""
        raw = text.encode("utf-8")
        capacity = len(raw) + 16
        buffer = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self._vocab, raw, len(raw), buffer, capacity, False, False)
        if n < 0:
            raise EngineError(f"tokenizer needs {-n} tokens, more than the buffer of {capacity}")
        return int(n)

    def close(self) -> None:
        """Free every context and the model; the engine cannot be used afterwards."""
        for ctx in self._contexts.values():
            ctx.free()
        self._contexts.clear()
        if self.model:
            llama_cpp.llama_model_free(self.model)
            self.model = None

    # -- internals -------------------------------------------------------------------------------

    @staticmethod
    def _timed_prompt(ctx: _Context, views: list[Any]) -> float:
        start_ns = time.perf_counter_ns()
        for view in views:
            ctx.decode(view)
        llama_cpp.llama_synchronize(ctx.ctx)
        return (time.perf_counter_ns() - start_ns) / 1e9

    @staticmethod
    def _timed_steps(ctx: _Context, steps: list[_Batch], *, step_seconds: list[float] | None) -> float:
        # The hot loop: one decode and one synchronize per step, batches filled beforehand.
        decode, sync, handle, clock = llama_cpp.llama_decode, llama_cpp.llama_synchronize, ctx.ctx, time.perf_counter_ns
        start_ns = previous_ns = clock()
        for step in steps:
            status = decode(handle, step.batch)
            if status != 0:
                raise EngineError(f"llama_decode failed with status {status} during generation")
            sync(handle)
            if step_seconds is not None:
                now_ns = clock()
                step_seconds.append((now_ns - previous_ns) / 1e9)
                previous_ns = now_ns
        return (clock() - start_ns) / 1e9

    def _context(self, *, n_ctx: int, n_seq: int) -> _Context:
        key = (n_ctx, n_seq)
        ctx = self._contexts.get(key)
        if ctx is None:
            if len(self._contexts) >= _MAX_CACHED_CONTEXTS:
                oldest = next(iter(self._contexts))
                self._contexts.pop(oldest).free()
            ctx = _Context(self.model, n_ctx=n_ctx, n_seq=n_seq, threads=self.threads,
                           n_batch=self.n_batch, n_ubatch=self.n_ubatch)
            self._contexts[key] = ctx
        return ctx

    def _check_fits(self, tokens_per_sequence: int) -> None:
        if tokens_per_sequence > self.n_ctx_train:
            raise EngineError(
                f"{tokens_per_sequence} tokens per sequence exceed the model's training context of "
                f"{self.n_ctx_train}: use smaller prompt/generation sizes"
            )

    def _random_token(self) -> int:
        return self._rng.randrange(self.n_vocab)

    def _first_and_random(self, n_tokens: int) -> Iterator[int]:
        # llama-bench starts with BOS when the model adds one, then random tokens.
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        yield int(llama_cpp.llama_vocab_bos(self._vocab)) if add_bos else self._random_token()
        for _ in range(n_tokens - 1):
            yield self._random_token()

    def _prompt_batch(self, n_prompt: int, *, seq_id: int) -> _Batch:
        tokens = list(self._first_and_random(n_prompt))
        return _Batch(tokens, list(range(n_prompt)), [seq_id] * n_prompt,
                      [i == n_prompt - 1 for i in range(n_prompt)])

    def _batched_prompt(self, n_prompt: int, batch_size: int) -> _Batch:
        tokens: list[int] = []
        positions: list[int] = []
        seq_ids: list[int] = []
        logits: list[bool] = []
        for seq in range(batch_size):
            tokens.extend(self._random_token() for _ in range(n_prompt))
            positions.extend(range(n_prompt))
            seq_ids.extend([seq] * n_prompt)
            logits.extend(i == n_prompt - 1 for i in range(n_prompt))
        return _Batch(tokens, positions, seq_ids, logits)


def _stopped_rising(seconds: list[float], runs: int, tolerance: float) -> bool:
    """The speed stopped rising: at least ``runs`` runs (and three: two last ones and one before them), the last
    two no faster (shorter) than the fastest before them by more than ``tolerance``."""
    return len(seconds) >= max(runs, 3) and min(seconds[-2:]) >= (1 - tolerance) * min(seconds[:-2])


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise EngineError(f"{name} must be at least 1, got {value}")


MIN_REPETITIONS = 3   # as pytest_axion.budget's: a median and its spread need three


def enough_repetitions(timed_s: list[float], repetitions: int, max_seconds: float | None) -> bool:
    """Stop timing a cell: after ``repetitions``, or once at least :data:`MIN_REPETITIONS` are timed and one more
    (as long as their mean) would take the cell beyond ``max_seconds`` (a slow model's share of a time budget)."""
    done = len(timed_s)
    if done >= repetitions:
        return True
    if max_seconds is None or done < MIN_REPETITIONS:
        return False
    return sum(timed_s) * (done + 1) / done > max_seconds


def _report(progress: ProgressCallback | None, what: str, done: int, total: int) -> None:
    if progress is not None:
        progress(what, done, total)


# -- worker: this engine in another process, over JSON lines ------------------------------------------
#
# The worker answers one request per line on stdin with one line on stdout:
#   {"op": "prompt", "n_prompt": 512, "repetitions": 5, "warmup": true, "max_seconds": 15.0 (or null)}
#   {"op": "generation", "n_gen": 128, ...}   {"op": "batched", "n_prompt": .., "n_gen": .., "batch_size": ..}
#   {"op": "count_tokens", "text": ".."}      {"op": "warm_up", "n_prompt": 64}      {"op": "close"}
# -> {"ok": {...the run's fields...}} or {"error": {"type": "EngineError", "message": "..."}}, after any
# number of {"progress": [workload, done, total]} lines (one per repetition).
# Its first line says it is ready: {"ready": {...model facts...}, "protocol": 2} (or an error line).
# llama.cpp's log goes to stderr as it is written, so that the client can quote it after a crash.
# ``--probe`` prints the build's facts as one JSON line and exits, without loading a model.

PROTOCOL_VERSION = 2


def _handle(engine: LlamaEngine, request: dict[str, Any], progress: ProgressCallback) -> dict[str, Any]:
    op = request.get("op")
    repetitions, warmup = int(request.get("repetitions", 1)), bool(request.get("warmup", True))
    limit = request.get("max_seconds")
    max_seconds = None if limit is None else float(limit)
    if op == "prompt":
        return engine.run_prompt(int(request["n_prompt"]), repetitions=repetitions, warmup=warmup,
                                 max_seconds=max_seconds, progress=progress)
    if op == "generation":
        return engine.run_generation(int(request["n_gen"]), repetitions=repetitions, warmup=warmup,
                                     max_seconds=max_seconds, progress=progress)
    if op == "batched":
        return engine.run_batched(int(request["n_prompt"]), int(request["n_gen"]), int(request["batch_size"]),
                                  repetitions=repetitions, warmup=warmup, max_seconds=max_seconds, progress=progress)
    if op == "warm_up":
        return engine.warm_up(int(request["n_prompt"]), progress=progress)
    if op == "count_tokens":
        return {"tokens": engine.count_tokens(str(request["text"]))}
    raise ValueError(f"unknown request {op!r}")


def serve(argv: list[str] | None = None) -> int:
    """Load a model once and answer measurement requests on stdin/stdout until "close" or end of input."""
    parser = argparse.ArgumentParser(description="pytest-axion measurement worker (JSON lines on stdin/stdout)")
    parser.add_argument("--model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-batch", type=int, default=DEFAULT_N_BATCH)
    parser.add_argument("--n-ubatch", type=int, default=DEFAULT_N_UBATCH)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--no-mmap", action="store_true", help="read the model into memory instead of mapping it")
    parser.add_argument("--probe", action="store_true", help="print the build's facts as JSON and exit")
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(build_facts()))
        return 0
    if not args.model:
        parser.error("--model is required")
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)

    def send(message: dict[str, Any]) -> None:
        protocol.write(json.dumps(message) + "\n")

    def progress(what: str, done: int, total: int) -> None:
        send({"progress": [what, done, total]})

    problem = binding_problem()   # before the first call into the binding
    if problem is not None:
        send({"error": {"type": "Unsupported", "message": problem}})
        return 1
    _ensure_backend().echo = True
    try:
        engine = LlamaEngine(args.model, threads=args.threads, n_batch=args.n_batch, n_ubatch=args.n_ubatch,
                             seed=args.seed, use_mmap=not args.no_mmap)
    except EngineError as err:
        send({"error": {"type": "EngineError", "message": str(err)}})
        return 1
    except (AttributeError, ctypes.ArgumentError) as err:
        if not _binding_changed(err):
            raise
        send({"error": {"type": "Unsupported", "message": _unsupported(f"broke a call ({err})")}})
        return 1
    send({"ready": engine.facts, "protocol": PROTOCOL_VERSION})
    for line in sys.stdin:
        try:
            request = json.loads(line)
            if request.get("op") == "close":
                break
            send({"ok": _handle(engine, request, progress)})
        except EngineError as err:
            send({"error": {"type": "EngineError", "message": str(err)}})
        except (AttributeError, ctypes.ArgumentError) as err:
            if not _binding_changed(err):
                raise
            send({"error": {"type": "Unsupported", "message": _unsupported(f"broke a call ({err})")}})
        except (ValueError, KeyError, TypeError) as err:
            send({"error": {"type": "BadRequest", "message": f"{type(err).__name__}: {err}"}})
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
