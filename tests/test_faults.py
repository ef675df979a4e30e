"""Faults of shared CI hosts, driven as a user meets them: a worker that hangs, a refresh interrupted."""

import os
import signal
import subprocess
import sys
import time

import psutil

from tests.busy import MEASURING_THREADS

HANGING = """
import os, signal
import psutil

def _worker():
    # the newest: other sessions of the same process (pytester runs in process) may keep workers of their own
    workers = [p for p in psutil.Process().children() if "llama.py" in " ".join(p.cmdline())]
    return max(workers, key=lambda p: p.create_time())

def test_hangs(axion):
    axion.prompt(16)
    os.kill(_worker().pid, signal.SIGSTOP)   # as a llama.cpp that deadlocked
    axion.prompt(32)

def test_next(axion):
    axion.prompt(16)
"""


def test_a_hung_worker_fails_its_test_in_one_line_and_the_next_test_gets_a_fresh_one(pytester):
    pytester.makepyfile(HANGING)
    start = time.monotonic()
    result = pytester.runpytest("--axion-slo", "--axion-repetitions=2", "--axion-worker-timeout=6",
                                "--axion-efficiency=off", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*llama.cpp worker * said nothing for * s while measuring prompt n_prompt=32 with "
                                 "model *: llama.cpp hung or the worker was stopped, so it was killed; the next test "
                                 "gets a fresh worker*"])
    assert time.monotonic() - start < 300


REFRESHED = """
from pathlib import Path

def test_prompt(axion):
    # run 1 is short, so that the refresh soon starts run 2, which measures until it is interrupted
    run_1_done = Path("run-1-measured")
    repetitions = 200 if run_1_done.exists() else 3
    run_1_done.touch()
    axion.prompt(16, repetitions=repetitions)
"""


def _group_alive(pgid):
    """The live (not zombie) processes of a process group."""
    return [p for p in psutil.process_iter(["pid", "status"])
            if p.info["status"] != psutil.STATUS_ZOMBIE and _pgid(p.pid) == pgid]


def _pgid(pid):
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def test_ctrl_c_during_a_refresh_leaves_no_child_run_or_worker_behind(pytester):
    pytester.makepyfile(REFRESHED)
    parent = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--axion-slo",
                               "--axion-refresh-baselines", "--axion-runs=3", "--axion-run-spacing=0", "--axion-force",
                               f"--axion-threads={MEASURING_THREADS}", "--axion-efficiency=off", str(pytester.path)],
                              cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    me = psutil.Process(parent.pid)
    child = None
    deadline = time.monotonic() + 300
    def runs_pytest(process):
        try:
            return process.cmdline()[1:3] == ["-m", "pytest"]
        except psutil.Error:   # run 1's worker just ended, not yet reaped: a zombie has no command line
            return False

    while time.monotonic() < deadline and child is None:   # wait for refresh run 2: a pytest of its own
        child = next((p for p in me.children() if runs_pytest(p)), None)
        time.sleep(0.2)
    assert child is not None, "refresh run 2 never started"
    group = child.pid   # it runs in a session (and process group) of its own
    while time.monotonic() < deadline and len(_group_alive(group)) < 2:   # the child run and its llama.cpp worker
        time.sleep(0.2)
    assert len(_group_alive(group)) >= 2, "refresh run 2 never started its worker"
    time.sleep(1)   # into its measuring
    parent.send_signal(signal.SIGINT)
    output, _ = parent.communicate(timeout=120)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _group_alive(group):
        time.sleep(0.2)
    assert not _group_alive(group), output[-2000:]
