"""The machine's own limits, with the threads in use: memory bandwidth and a compute reference.

Token generation on a CPU reads every weight once per step, so its ceiling is memory bandwidth;
prompt encoding is arithmetic. These are the roofs the efficiency figures are read against.

- **Bandwidth**, STREAM-style: ``copy`` (a = b), ``add`` (a = b + c) and ``read`` (a dot product of an
  array with itself: no writes, the pattern of generation's weight reads), float32, each touching the
  whole working set once per repetition and counted as STREAM counts (bytes read plus bytes written,
  no write-allocate traffic). Two working sets: the size
  of the model's weights (a model that fits in cache is compared with cache bandwidth) and one well
  beyond the last-level cache (at least 8x it, at least 512 MiB).
- **Compute**: the FLOP/s of a float32 matrix multiply through the BLAS numpy brings. llama.cpp's
  quantized kernels use integer dot products (int8 on AVX-512 VNNI, i8mm on Arm), which can exceed
  this float32 reference; the figure is a yardstick for comparing builds and machines, not a peak.

Each of ``threads`` Python threads runs the kernel on its own slice at once (numpy releases the GIL;
BLAS is held to one thread per Python thread), so the figures use the cores llama.cpp uses. Every
kernel repeats for a short budget; the best repetition is kept, as STREAM does, and the median beside
it shows how steady the machine was. It runs in a subprocess (``python -m pytest_axion.machine.limits``)
so that the BLAS thread count is set before numpy loads and numpy stays out of the pytest process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_axion.errors import AxionError
from pytest_axion.machine.environment import OtherCpuMeter
from pytest_axion.records import busy_limit, threads_text

MIB = 1 << 20
BEYOND_CACHE_FACTOR = 8
BEYOND_CACHE_MIN_BYTES = 512 * MIB
KERNEL_BUDGET_S = 0.25       # per kernel and working set; the whole measurement stays within a few seconds
MIN_REPETITIONS = 5
MATMUL_SIZE = 512
_BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


class LimitsError(AxionError):
    """The machine's limits could not be measured."""


@dataclass(frozen=True)
class Bandwidth:
    """One working set's bandwidth per kernel, GB/s (10^9 bytes/s): best repetition and median."""

    working_set_bytes: int
    best_gbs: Mapping[str, float]
    median_gbs: Mapping[str, float]


@dataclass(frozen=True)
class MachineLimits:
    """Measured roofs: ``model`` is the working set of the model's size, ``beyond_cache`` the large one."""

    threads: int
    model: Bandwidth
    beyond_cache: Bandwidth
    compute_gflops: float            # float32 matmul, best repetition, all threads
    compute_median_gflops: float
    blas: str = ""
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    other_cpus: float | None = None  # other processes' CPUs' worth meanwhile (None: unknown)

    @property
    def contended(self) -> bool:
        return self.other_cpus is not None and self.other_cpus > busy_limit(self.threads)

    @property
    def read_gbs(self) -> float:
        """The roof generation is read against: read bandwidth over a working set of the model's size."""
        return self.model.best_gbs["read"]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MachineLimits:
        def bandwidth(part: Mapping[str, Any]) -> Bandwidth:
            return Bandwidth(int(part["working_set_bytes"]), dict(part["best_gbs"]), dict(part["median_gbs"]))

        return cls(threads=int(data["threads"]), model=bandwidth(data["model"]),
                   beyond_cache=bandwidth(data["beyond_cache"]), compute_gflops=float(data["compute_gflops"]),
                   compute_median_gflops=float(data["compute_median_gflops"]), blas=str(data.get("blas", "")),
                   seconds=float(data.get("seconds", 0.0)), notes=tuple(data.get("notes", ())),
                   other_cpus=None if data.get("other_cpus") is None else float(data["other_cpus"]))

    def summary(self) -> str:
        return (f"machine limits ({threads_text(self.threads)}): read {self.read_gbs:.1f} GB/s over "
                f"{self.model.working_set_bytes / MIB:.0f} MiB (the model's size), "
                f"{self.beyond_cache.best_gbs['read']:.1f} GB/s over "
                f"{self.beyond_cache.working_set_bytes / MIB:.0f} MiB; float32 matmul {self.compute_gflops:.0f} "
                f"GFLOP/s ({self.seconds:.1f} s to measure)")


def beyond_cache_bytes(last_level_cache_bytes: int) -> int:
    return max(BEYOND_CACHE_FACTOR * last_level_cache_bytes, BEYOND_CACHE_MIN_BYTES)


def last_level_cache_bytes(sys_root: str = "/sys") -> int:
    """The largest cache CPU 0 lists in sysfs (0 when sysfs says nothing)."""
    folder = os.path.join(sys_root, "devices", "system", "cpu", "cpu0", "cache")
    largest = 0
    try:
        entries = os.listdir(folder)
    except OSError:
        return 0
    for entry in entries:
        try:
            with open(os.path.join(folder, entry, "size")) as handle:
                text = handle.read().strip()
        except OSError:
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "")
        if number.isdigit():
            largest = max(largest, int(number) * units.get(unit, 1))
    return largest


# -- measuring (runs in the subprocess; numpy is imported there only) ---------------------------------


def _in_parallel(threads: int, work: Callable[[int], None], budget_s: float) -> list[float]:
    """Seconds per repetition of ``work(thread_index)`` run by all threads at once, for about ``budget_s``."""
    barrier = threading.Barrier(threads + 1)
    stop = threading.Event()

    def loop(index: int) -> None:
        while True:
            barrier.wait()
            if stop.is_set():
                return
            work(index)
            barrier.wait()

    workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    seconds: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(seconds) < MIN_REPETITIONS or time.perf_counter() < deadline:
        start = time.perf_counter()
        barrier.wait()   # go
        barrier.wait()   # all done
        seconds.append(time.perf_counter() - start)
    stop.set()
    barrier.wait()
    for worker in workers:
        worker.join()
    return seconds


def _bandwidth(np: Any, threads: int, working_set_bytes: int, budget_s: float) -> Bandwidth:
    # One buffer per thread, the threads' buffers together the working set; every kernel touches all of it
    # (read: the whole buffer; copy: one half into the other; add: two thirds into the third).
    per_thread = max(-(-working_set_bytes // (4 * threads)), 3 * 1024)
    per_thread += -per_thread % 6
    buffers = [np.ones(per_thread, dtype=np.float32) for _ in range(threads)]
    half, third = per_thread // 2, per_thread // 3
    kernels: dict[str, Callable[[int], None]] = {
        "copy": lambda i: np.copyto(buffers[i][:half], buffers[i][half:]),
        "add": lambda i: np.add(buffers[i][third:2 * third], buffers[i][2 * third:], out=buffers[i][:third]),
        "read": lambda i: np.dot(buffers[i], buffers[i]),
    }
    best, median = {}, {}
    for name, kernel in kernels.items():
        kernel(0)  # touch the pages once, outside the timing
        seconds = _in_parallel(threads, kernel, budget_s)
        moved = 4 * per_thread * threads   # every kernel moves the whole working set once, as STREAM counts
        best[name] = round(moved / min(seconds) / 1e9, 2)
        median[name] = round(moved / statistics.median(seconds) / 1e9, 2)
    return Bandwidth(4 * per_thread * threads, best, median)


def _compute(np: Any, threads: int, budget_s: float) -> tuple[float, float]:
    n = MATMUL_SIZE
    rng = np.random.default_rng(0)
    operands = [(rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32),
                 np.empty((n, n), dtype=np.float32)) for _ in range(threads)]

    def kernel(i: int) -> None:
        a, b, out = operands[i]
        np.matmul(a, b, out=out)

    kernel(0)
    seconds = _in_parallel(threads, kernel, budget_s)
    flops = 2 * n ** 3 * threads
    return round(flops / min(seconds) / 1e9, 1), round(flops / statistics.median(seconds) / 1e9, 1)


def measure(threads: int, model_bytes: int, *, budget_s: float = KERNEL_BUDGET_S) -> MachineLimits:
    """Measure in this process (the subprocess entry point; numpy must not have started BLAS threads yet)."""
    import numpy as np  # only here: the plugin itself never imports numpy

    start = time.perf_counter()
    meter = OtherCpuMeter().start()   # in here, where this process is the whole tree being measured
    llc = last_level_cache_bytes()
    model = _bandwidth(np, threads, model_bytes, budget_s)
    beyond = _bandwidth(np, threads, beyond_cache_bytes(llc), budget_s)
    compute, compute_median = _compute(np, threads, budget_s)
    other = meter.stop()
    notes = []
    if llc and model_bytes <= llc:
        notes.append(f"the model ({model_bytes / MIB:.0f} MiB) fits in the last-level cache ({llc / MIB:.0f} MiB): "
                     "its roof is cache bandwidth")
    blas = ""
    try:
        config = np.show_config(mode="dicts")
        blas = f"{config['Build Dependencies']['blas']['name']} {config['Build Dependencies']['blas']['version']}"
    except (TypeError, KeyError):
        pass
    return MachineLimits(threads=threads, model=model, beyond_cache=beyond, compute_gflops=compute,
                         compute_median_gflops=compute_median, blas=blas,
                         seconds=round(time.perf_counter() - start, 2), notes=tuple(notes),
                         other_cpus=None if other is None else round(other, 2))


def measure_in_subprocess(threads: int, model_bytes: int, *, python: str = sys.executable,
                          timeout_s: float = 120.0, budget_s: float = KERNEL_BUDGET_S) -> MachineLimits:
    """Measure in a fresh ``python -m pytest_axion.machine.limits`` with one BLAS thread per Python thread."""
    env = {**os.environ, **{name: "1" for name in _BLAS_THREAD_VARIABLES}}
    command = [python, "-m", "pytest_axion.machine.limits", "--threads", str(threads), "--model-bytes",
               str(model_bytes), "--budget", str(budget_s)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise LimitsError(f"measuring the machine's bandwidth and compute took over {timeout_s:.0f} s: the machine "
                          "is overloaded; run with --axion-efficiency off to skip it") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit code {done.returncode}"]
        raise LimitsError(f"measuring the machine's bandwidth and compute failed: {lines[-1].strip()}: check that "
                          f"numpy imports in {python}, or run with --axion-efficiency off to skip it")
    return MachineLimits.from_json(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_axion.machine.limits",
                                     description="Measure memory bandwidth and float32 compute with N threads.")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--model-bytes", type=int, required=True, help="the working set of the model's size")
    parser.add_argument("--budget", type=float, default=KERNEL_BUDGET_S, help="seconds per kernel and working set")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.threads, args.model_bytes, budget_s=args.budget).to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
