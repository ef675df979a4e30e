"""The xdist run lock with real processes: measuring tests run alone, the others share."""

import multiprocessing
import sys
import time

import pytest

from pytest_axion.runlock import RunLock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock: Windows only excludes measuring tests")


def hold(folder, kind, seconds, events, name):
    lock = RunLock("run", folder)
    with getattr(lock, kind)():
        events.put((name, "in", time.monotonic()))
        time.sleep(seconds)
        events.put((name, "out", time.monotonic()))


def start(folder, kind, seconds, events, name):
    process = multiprocessing.get_context("fork").Process(target=hold, args=(folder, kind, seconds, events, name))
    process.start()
    return process


def collect(events, processes):
    for process in processes:
        process.join(timeout=20)
    times = {}
    while not events.empty():
        name, what, when = events.get()
        times[(name, what)] = when
    return times


def test_a_measuring_test_waits_for_running_tests_and_new_ones_wait_for_it(tmp_path):
    events = multiprocessing.get_context("fork").Queue()
    first = start(tmp_path, "sharing", 0.6, events, "unit-1")
    time.sleep(0.2)
    measuring = start(tmp_path, "measuring", 0.6, events, "measure")
    time.sleep(0.2)
    late = start(tmp_path, "sharing", 0.1, events, "unit-2")   # arrives while the measuring test queues
    times = collect(events, [first, measuring, late])
    assert times[("measure", "in")] >= times[("unit-1", "out")]
    assert times[("unit-2", "in")] >= times[("measure", "out")]   # the turnstile: no starving the measurement


def test_tests_that_do_not_measure_run_side_by_side(tmp_path):
    events = multiprocessing.get_context("fork").Queue()
    workers = [start(tmp_path, "sharing", 0.5, events, f"unit-{n}") for n in range(2)]
    times = collect(events, workers)
    assert times[("unit-1", "in")] < times[("unit-0", "out")] and times[("unit-0", "in")] < times[("unit-1", "out")]


def test_a_crashed_holder_frees_the_lock(tmp_path):
    events = multiprocessing.get_context("fork").Queue()
    holder = start(tmp_path, "measuring", 30, events, "crashes")
    time.sleep(0.3)
    holder.kill()
    holder.join()
    started = time.monotonic()
    with RunLock("run", tmp_path).measuring():
        assert time.monotonic() - started < 5
