"""Environment warnings printed before a benchmark run: machine states that quietly distort the figures.

A benchmark measures the machine as much as the code. A CPU governor other than ``performance`` lets the
clocks ramp up during the run, so early repetitions are slower than late ones; a load average above the
core count means other work competes for the cores; more threads than physical cores puts SMT siblings
on the same execution units; swap in use means model pages can be paged out mid-run. None of these is an
error, but each makes the figures lower or noisier than the machine can deliver, so they are reported
up front with the fix.

Every check takes its inputs as parameters whose defaults read the real machine, and never raises: a
missing or unreadable file, or a value that cannot be parsed, simply yields no warning. Pure apart from
those default reads; no pytest imports.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import psutil

from pytest_axion.records import busy_limit

DEFAULT_SYS_CPU_ROOT = "/sys/devices/system/cpu"
_PERFORMANCE = "performance"
# Kernel governor names: short lowercase identifiers (performance, powersave, schedutil, ondemand, ...).
_GOVERNOR_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CPU_DIR = re.compile(r"cpu[0-9]+")


def read_governors(sys_cpu_root: str | Path = DEFAULT_SYS_CPU_ROOT) -> dict[str, str]:
    """The scaling governor of each CPU (``{"cpu0": "powersave", ...}``), skipping unreadable or garbled files.

    Empty when there is no cpufreq support (common on VMs) or the root does not exist.
    """
    governors: dict[str, str] = {}
    try:
        paths = sorted(Path(sys_cpu_root).glob("cpu*/cpufreq/scaling_governor"))
    except (OSError, ValueError):
        return governors
    for path in paths:
        cpu = path.parent.parent.name
        if not _CPU_DIR.fullmatch(cpu):
            continue
        try:
            value = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if _GOVERNOR_NAME.fullmatch(value):
            governors[cpu] = value
    return governors


def governor_warning(sys_cpu_root: str | Path = DEFAULT_SYS_CPU_ROOT) -> str | None:
    """Warn when any CPU's frequency governor is not ``performance``."""
    governors = read_governors(sys_cpu_root)
    others = [g for g in governors.values() if g != _PERFORMANCE]
    if not others:
        return None
    seen = "/".join(sorted(set(others)))
    return (
        f"CPU frequency governor is {seen} on {len(others)} of {len(governors)} CPUs (not {_PERFORMANCE}): "
        "clocks ramp up during the run and the figures drift; "
        f"set it with `cpupower frequency-set -g {_PERFORMANCE}`"
    )


def _machine_load_1min() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def load_warning(load_1min: float | None = None, logical_cores: int | None = None) -> str | None:
    """Warn when the 1-minute load average is above the number of logical CPUs.

    ``None`` reads the machine (``os.getloadavg()``, ``os.cpu_count()``); unavailable values mean no warning.
    """
    load = _machine_load_1min() if load_1min is None else load_1min
    cores = os.cpu_count() if logical_cores is None else logical_cores
    if load is None or cores is None or cores <= 0:
        return None
    try:
        load = float(load)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(load) or load <= cores:
        return None
    return (
        f"load average {round(load, 2):g} is above the {cores} logical CPUs: "
        "other work is competing for the cores and the figures will be low; run on an idle machine"
    )


def threads_warning(threads: int, physical_cores: int) -> str | None:
    """Warn when llama.cpp is asked for more threads than there are physical cores."""
    if physical_cores <= 0 or threads <= physical_cores:
        return None
    return (
        f"thread count {threads} is above the {physical_cores} physical cores: "
        "SMT siblings share execution units and the extra threads slow every token down; "
        f"llama.cpp is usually fastest with one thread per physical core: --axion-threads {physical_cores}"
    )


def _machine_swap_used() -> int | None:
    try:
        return int(psutil.swap_memory().used)
    except Exception:  # psutil raises assorted errors where swap accounting is unavailable
        return None


def swap_warning(swap_used_bytes: int | None = None) -> str | None:
    """Warn when any swap is in use. ``None`` reads the machine (``psutil.swap_memory().used``)."""
    used = _machine_swap_used() if swap_used_bytes is None else swap_used_bytes
    if used is None or used <= 0:
        return None
    return (
        f"swap in use ({used / 2**20:.1f} MiB): the system is short of memory and model pages may be swapped "
        "out, so token times jump when they are read back; free memory or disable swap (`swapoff -a`)"
    )


def openmp_warning(threads: int, environ: dict[str, str] | None = None) -> str | None:
    """Warn about OpenMP settings that quietly give llama.cpp fewer or sleepier threads than asked for.

    llama.cpp's CPU backend runs each step as ``#pragma omp parallel num_threads(n)`` and takes the
    threads OpenMP grants; a thread limit or dynamic adjustment grants fewer, and a passive wait policy
    puts the threads to sleep between the many short operations of a token.
    """
    env = dict(os.environ) if environ is None else environ
    problems = []
    limit = env.get("OMP_THREAD_LIMIT", "").strip()
    if limit.isdigit() and int(limit) < threads:
        problems.append(f"OMP_THREAD_LIMIT={limit} grants fewer than the {threads} threads asked for")
    if env.get("OMP_DYNAMIC", "").strip().lower() in ("true", "1", "yes"):
        problems.append("OMP_DYNAMIC=true lets OpenMP grant fewer threads than asked for")
    if env.get("OMP_WAIT_POLICY", "").strip().lower() == "passive" or env.get("GOMP_SPINCOUNT", "").strip() == "0":
        problems.append("a passive OpenMP wait policy puts the threads to sleep between operations")
    if not problems:
        return None
    return f"{'; '.join(problems)}: llama.cpp runs slower than it can; unset them for measurements"


BUSY_SAMPLE_S = 0.25
METER_MIN_S = 0.25


def _busy_seconds() -> float:
    # Every CPU's non-idle time, steal included (a hypervisor giving the core to another guest is contention
    # too); niced work is left out, as the scheduler gives it almost nothing while llama.cpp runs.
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0) + getattr(times, "nice", 0.0)
    guest = getattr(times, "guest", 0.0)   # already counted in user
    return float(sum(times) - idle - guest - getattr(times, "guest_nice", 0.0))


def _own_seconds() -> float:
    """CPU time of this process and of every live process it started (an engine worker, say)."""
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            own = process.cpu_times()
        except psutil.Error:   # a child that ended meanwhile
            continue
        total += own.user + own.system
    return total


class OtherCpuMeter:
    """How many CPUs' worth of other processes' work ran between :meth:`start` and :meth:`stop`.

    Two reads of the kernel's CPU accounting around a workload: cheap, and direct evidence of
    contention where timing statistics can only guess. None where psutil cannot tell, or over less
    than ``METER_MIN_S``.
    """

    def __init__(self) -> None:
        self._start: tuple[float, float, float] | None = None

    def start(self) -> OtherCpuMeter:
        try:
            self._start = (_busy_seconds(), _own_seconds(), time.perf_counter())
        except Exception:  # psutil raises assorted errors where CPU accounting is unavailable
            self._start = None
        return self

    def stop(self) -> float | None:
        if self._start is None:
            return None
        busy, own, started = self._start
        try:
            elapsed = time.perf_counter() - started
            other = (_busy_seconds() - busy) - (_own_seconds() - own)
        except Exception:  # as in start()
            return None
        # The kernel counts CPU time in ticks of 10 ms: over a shorter span the figure is noise.
        return max(0.0, other) / elapsed if elapsed >= METER_MIN_S else None


def other_processes_cpus(interval_s: float = BUSY_SAMPLE_S) -> float | None:
    """CPUs' worth of time that other processes (and the hypervisor's steal) used over ``interval_s``."""
    meter = OtherCpuMeter().start()
    time.sleep(interval_s)
    return meter.stop()


def busy_warning(other_cpus: float | None, *, threads: int) -> str | None:
    """Warn when other processes keep CPUs busy that llama.cpp's threads need."""
    if other_cpus is None or other_cpus <= busy_limit(threads):
        return None
    return (f"other processes kept {other_cpus:.1f} CPU(s) busy while this run started (llama.cpp uses {threads} "
            "thread(s)): its threads wait for each other at every step, so figures are low and noisy; run where "
            "nothing else competes")


def environment_warnings(
    *,
    threads: int,
    physical_cores: int,
    logical_cores: int | None = None,
    load_1min: float | None = None,
    swap_used_bytes: int | None = None,
    sys_cpu_root: str | Path = DEFAULT_SYS_CPU_ROOT,
    other_cpus: float | None = None,
) -> list[str]:
    """All environment warnings, in order: governor, load average, threads, swap, other busy processes, OpenMP.

    ``None`` inputs are read from the machine; anything unavailable yields no warning, never an error.
    The load average is consulted only when ``other_cpus`` (measured just now, this process tree left out)
    is unknown: it lags a minute and counts a previous run or a sibling xdist worker as "other work".
    """
    checks = (
        governor_warning(sys_cpu_root),
        load_warning(load_1min, logical_cores) if other_cpus is None else None,
        threads_warning(threads, physical_cores),
        swap_warning(swap_used_bytes),
        busy_warning(other_cpus, threads=threads),
        openmp_warning(threads),
    )
    return [warning for warning in checks if warning is not None]
