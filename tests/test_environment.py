from pathlib import Path

import pytest

from pytest_axion.machine import environment
from pytest_axion.machine.environment import (
    environment_warnings,
    governor_warning,
    load_warning,
    read_governors,
    swap_warning,
    threads_warning,
)


def fake_cpus(root: Path, *governors: str | bytes) -> Path:
    """A fake /sys/devices/system/cpu with one cpuN/cpufreq/scaling_governor per governor."""
    for n, governor in enumerate(governors):
        path = root / f"cpu{n}" / "cpufreq" / "scaling_governor"
        path.parent.mkdir(parents=True)
        if isinstance(governor, bytes):
            path.write_bytes(governor)
        else:
            path.write_text(governor + "\n")
    return root


# --- governor ---------------------------------------------------------------------------------------------


def test_governor_powersave_on_all_cpus_warns_with_name_and_counts(tmp_path: Path) -> None:
    root = fake_cpus(tmp_path, "powersave", "powersave")
    warning = governor_warning(root)
    assert warning is not None
    assert warning.startswith("CPU frequency governor is powersave on 2 of 2 CPUs (not performance)")
    assert "cpupower frequency-set -g performance" in warning
    assert "\n" not in warning


def test_governor_mixed_counts_only_the_non_performance_cpus(tmp_path: Path) -> None:
    root = fake_cpus(tmp_path, "performance", "schedutil", "performance", "ondemand")
    warning = governor_warning(root)
    assert warning is not None
    assert "ondemand/schedutil on 2 of 4 CPUs" in warning


def test_governor_all_performance_gives_no_warning(tmp_path: Path) -> None:
    root = fake_cpus(tmp_path, "performance", "performance", "performance")
    assert read_governors(root) == {"cpu0": "performance", "cpu1": "performance", "cpu2": "performance"}
    assert governor_warning(root) is None


def test_governor_missing_root_gives_no_warning(tmp_path: Path) -> None:
    assert read_governors(tmp_path / "absent") == {}
    assert governor_warning(tmp_path / "absent") is None


def test_governor_without_cpufreq_files_gives_no_warning(tmp_path: Path) -> None:
    # A VM: the cpu directories exist but there is no cpufreq.
    (tmp_path / "cpu0").mkdir()
    (tmp_path / "cpu1").mkdir()
    assert governor_warning(tmp_path) is None


def test_governor_unreadable_or_garbage_files_give_no_warning(tmp_path: Path) -> None:
    root = fake_cpus(tmp_path, b"\xff\xfe\x00powersave", "", "power save with spaces")
    # Unreadable: a directory where the file should be.
    (root / "cpu3" / "cpufreq" / "scaling_governor").mkdir(parents=True)
    assert read_governors(root) == {}
    assert governor_warning(root) is None


def test_governor_garbage_cpus_are_skipped_and_not_counted(tmp_path: Path) -> None:
    root = fake_cpus(tmp_path, "powersave", b"\xff\xff")
    warning = governor_warning(root)
    assert warning is not None
    assert "powersave on 1 of 1 CPUs" in warning


def test_governor_ignores_non_cpu_directories(tmp_path: Path) -> None:
    # /sys/devices/system/cpu also holds cpufreq/, cpuidle/ and the like; only cpuN counts.
    path = tmp_path / "cpufreq" / "cpufreq" / "scaling_governor"
    path.parent.mkdir(parents=True)
    path.write_text("powersave\n")
    assert governor_warning(tmp_path) is None


# --- load average -----------------------------------------------------------------------------------------


def test_load_above_logical_cores_warns() -> None:
    warning = load_warning(3.2, 2)
    assert warning is not None
    assert warning.startswith("load average 3.2 is above the 2 logical CPUs")
    assert "idle machine" in warning


@pytest.mark.parametrize("load", [0.0, 1.5, 2.0, float("nan")])
def test_load_at_or_below_logical_cores_gives_no_warning(load: float) -> None:
    assert load_warning(load, 2) is None


def test_load_unavailable_from_machine_gives_no_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_loadavg() -> tuple[float, float, float]:
        raise OSError("no load average here")

    monkeypatch.setattr(environment.os, "getloadavg", no_loadavg)
    assert load_warning(None, 2) is None


def test_load_with_unknown_core_count_gives_no_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment.os, "cpu_count", lambda: None)
    assert load_warning(50.0, None) is None


# --- threads ----------------------------------------------------------------------------------------------


def test_threads_above_physical_cores_warns_with_the_fix() -> None:
    warning = threads_warning(4, 2)
    assert warning is not None
    assert warning.startswith("thread count 4 is above the 2 physical cores")
    assert "SMT siblings share execution units" in warning
    assert warning.endswith("--axion-threads 2")


@pytest.mark.parametrize(("threads", "physical"), [(2, 2), (1, 2), (8, 0)])
def test_threads_at_or_below_physical_cores_gives_no_warning(threads: int, physical: int) -> None:
    assert threads_warning(threads, physical) is None


# --- swap -------------------------------------------------------------------------------------------------


def test_swap_in_use_warns_with_mebibytes() -> None:
    warning = swap_warning(300 * 2**20)
    assert warning is not None
    assert warning.startswith("swap in use (300.0 MiB)")
    assert "free memory or disable swap" in warning


def test_swap_zero_gives_no_warning() -> None:
    assert swap_warning(0) is None


def test_swap_unavailable_from_machine_gives_no_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> object:
        raise RuntimeError("no swap accounting")

    monkeypatch.setattr(environment.psutil, "swap_memory", broken)
    assert swap_warning(None) is None


# --- composition ------------------------------------------------------------------------------------------


def test_environment_warnings_in_order_with_all_fake_inputs(tmp_path: Path) -> None:
    root = fake_cpus(tmp_path, "powersave", "powersave")
    warnings = environment_warnings(
        threads=4, physical_cores=2, logical_cores=2, load_1min=3.2, swap_used_bytes=2**20, sys_cpu_root=root
    )
    assert len(warnings) == 4
    assert warnings[0].startswith("CPU frequency governor is powersave")
    assert warnings[1].startswith("load average 3.2")
    assert warnings[2].startswith("thread count 4")
    assert warnings[3].startswith("swap in use (1.0 MiB)")


def test_environment_warnings_empty_on_a_clean_machine(tmp_path: Path) -> None:
    root = fake_cpus(tmp_path, "performance", "performance")
    warnings = environment_warnings(
        threads=2, physical_cores=2, logical_cores=2, load_1min=0.1, swap_used_bytes=0, sys_cpu_root=root
    )
    assert warnings == []


def test_a_measured_quiet_machine_outweighs_a_high_load_average(tmp_path: Path) -> None:
    """The load average lags a minute (a run that just ended, a sibling xdist worker): the direct meter decides."""
    root = fake_cpus(tmp_path, "performance", "performance")
    quiet = environment_warnings(threads=2, physical_cores=2, logical_cores=2, load_1min=2.5, swap_used_bytes=0,
                                 sys_cpu_root=root, other_cpus=0.1)
    busy = environment_warnings(threads=2, physical_cores=2, logical_cores=2, load_1min=2.5, swap_used_bytes=0,
                                sys_cpu_root=root, other_cpus=1.0)
    assert quiet == []
    assert len(busy) == 1 and busy[0].startswith("other processes kept 1.0 CPU(s) busy")


def test_environment_warnings_with_real_machine_defaults_returns_strings() -> None:
    warnings = environment_warnings(threads=1, physical_cores=1)
    assert isinstance(warnings, list)
    assert all(isinstance(w, str) and w and "\n" not in w for w in warnings)


def test_openmp_settings_that_starve_llama_cpp_are_named():
    from pytest_axion.machine.environment import openmp_warning

    assert openmp_warning(8, {}) is None
    assert openmp_warning(8, {"OMP_THREAD_LIMIT": "16", "OMP_NUM_THREADS": "2"}) is None   # num_threads(n) wins
    warning = openmp_warning(8, {"OMP_THREAD_LIMIT": "4", "OMP_DYNAMIC": "TRUE", "OMP_WAIT_POLICY": "passive"})
    assert warning == ("OMP_THREAD_LIMIT=4 grants fewer than the 8 threads asked for; OMP_DYNAMIC=true lets OpenMP "
                       "grant fewer threads than asked for; a passive OpenMP wait policy puts the threads to sleep "
                       "between operations: llama.cpp runs slower than it can; unset them for measurements")


def test_other_busy_processes_are_counted_and_named_but_our_own_children_are_not():
    import os
    import subprocess
    import sys
    import time

    import psutil

    from pytest_axion.machine.environment import busy_warning, other_processes_cpus
    from tests.busy import busy_core

    assert busy_warning(0.2, threads=2) is None and busy_warning(None, threads=2) is None
    assert "other processes kept 1.0 CPU(s) busy" in busy_warning(1.0, threads=2)
    assert busy_warning(3.0, threads=16) is None   # a quarter of 16 threads' CPUs is tolerated
    ambient = other_processes_cpus(0.5)
    with busy_core() as pid:
        busy = psutil.Process(pid)
        before, started = sum(busy.cpu_times()[:2]), time.perf_counter()
        measured = other_processes_cpus(0.5)
        busy_cpus = (sum(busy.cpu_times()[:2]) - before) / (time.perf_counter() - started)
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])   # like an engine worker
    try:
        own = other_processes_cpus(0.5)
    finally:
        child.kill()
        child.wait()
    assert ambient is not None and measured is not None and own is not None
    # The busy process is counted with the rest. On a machine already saturated it only takes a share from the
    # others (the total cannot rise above the CPU count), so the meter must include at least its share.
    assert busy_cpus > 0.2 and measured >= 0.8 * busy_cpus
    assert measured > ambient + 0.4 or ambient + 0.4 > (os.cpu_count() or 1) - 0.1
    assert own < ambient + 0.3        # our own child is not "other work"
