"""The worker protocol on the real model: the engine module run by path under a Python interpreter."""

import ast
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pytest_axion.engines.paired import PairedEngine, round_measurements
from pytest_axion.engines.worker import ENGINE_SCRIPT, EngineCrash, EngineProcess, WorkerError, WorkerHang
from pytest_axion.records import BatchedRun, EngineError, PromptRun
from tests.busy import MEASURING_THREADS


@pytest.fixture(scope="module")
def worker(model_path):
    process = EngineProcess(sys.executable, model_path=str(model_path), threads=MEASURING_THREADS, label="test worker")
    yield process
    process.close()


def test_the_engine_module_needs_nothing_but_llama_cpp_and_the_standard_library():
    tree = ast.parse(ENGINE_SCRIPT.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - set(sys.stdlib_module_names) == {"llama_cpp"}


def test_worker_answers_with_run_records_and_progress(worker, model_path):
    from pytest_axion.engines.llama import LlamaEngine  # the worker's core, in this process

    in_process = LlamaEngine(str(model_path), threads=MEASURING_THREADS)
    try:
        assert worker.facts.n_vocab == in_process.facts["n_vocab"] and worker.facts.ggml_commit != "unknown"
        assert worker.count_tokens("The quick brown fox") == in_process.count_tokens("The quick brown fox")
    finally:
        in_process.close()
    seen = []
    run = worker.run("prompt", n_prompt=16, repetitions=2, progress=lambda *args: seen.append(args))
    assert isinstance(run, PromptRun) and run.n_prompt == 16 and len(run.seconds) == 2 and min(run.seconds) > 0
    assert seen == [("pp16", 1, 2), ("pp16", 2, 2)]
    batched = worker.run("batched", n_prompt=8, n_gen=3, batch_size=2, repetitions=1, warmup=False)
    assert isinstance(batched, BatchedRun) and len(batched.step_seconds[0]) == 3


def test_engine_errors_cross_the_process_boundary_as_engine_errors(worker):
    with pytest.raises(EngineError, match="exceed the model's training context"):
        worker.run("prompt", n_prompt=10**6, repetitions=1)
    with pytest.raises(WorkerError, match=r"ValueError: unknown request .dance."):
        worker.request("dance")
    assert len(worker.run("prompt", n_prompt=8, repetitions=1).seconds) == 1   # still serving


def test_raw_protocol_is_json_lines_with_a_ready_line_first(model_path):
    requests = json.dumps({"op": "generation", "n_gen": 4, "repetitions": 1}) + "\n" + '{"op": "close"}\n'
    done = subprocess.run([sys.executable, str(ENGINE_SCRIPT), "--model", str(model_path),
                           "--threads", str(MEASURING_THREADS)],
                          input=requests, capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and [next(iter(line)) for line in lines] == ["ready", "progress", "ok"]
    assert lines[0]["protocol"] == 2 and lines[1]["progress"] == ["tg4", 1, 1] and lines[2]["ok"]["n_gen"] == 4


def test_paired_engine_alternates_sides_and_keeps_one_sample_per_round(model_path):
    def worker():
        return EngineProcess(sys.executable, model_path=str(model_path), threads=MEASURING_THREADS)

    paired = PairedEngine(worker, worker, rounds=4)
    try:
        run = paired.measure_pair("batched", n_prompt=8, n_gen=2, batch_size=2)
        assert len(run.baseline.prompt_seconds) == len(run.current.prompt_seconds) == 4
        assert len(run.current.step_seconds) == 4 and paired.facts == paired.current.facts
        rounds = round_measurements(run.current_rounds, nodeid="t", threads=MEASURING_THREADS)
        # one sample per round: the round's own figure, the median of its steps' latencies
        assert all(len(m.samples) == 4 for m in rounds.values()) and set(rounds) >= {"gen_tps", "itl_ms"}
        assert rounds["gen_tps"].samples == tuple(4 / s for s in run.current.gen_seconds)
    finally:
        paired.close()


def test_missing_interpreter_is_one_line_naming_it(model_path):
    with pytest.raises(WorkerError, match=r"A/B baseline interpreter /no/such/python does not exist"):
        EngineProcess("/no/such/python", model_path=str(model_path), threads=MEASURING_THREADS, label="A/B baseline")


def test_interpreter_without_llama_cpp_python_is_named_with_the_fix(model_path, tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    bare = tmp_path / "bare" / "bin" / "python"
    with pytest.raises(WorkerError) as err:
        EngineProcess(str(bare), model_path=str(model_path), threads=MEASURING_THREADS, label="A/B baseline")
    message = str(err.value)
    assert f"A/B baseline interpreter {bare} has no llama-cpp-python" in message
    assert "-m pip install llama-cpp-python" in message and "\n" not in message


def crashing_interpreter(tmp_path, after_requests):
    """An 'interpreter' that runs the real worker but dies (SIGKILL-like exit) on request N+1."""
    script = tmp_path / "crashing-python"
    body = textwrap.dedent(f"""\
        import os, runpy, sys
        real = sys.stdin
        def counting():
            for n, line in enumerate(real):
                if n >= {after_requests}:
                    os._exit(9)
                yield line
        class Stdin:
            def __iter__(self):
                return counting()
        sys.stdin = Stdin()
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
        """)
    (tmp_path / "crash.py").write_text(body)
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'crash.py'} \"$@\"\n")
    script.chmod(0o755)
    return script


def test_a_worker_that_dies_mid_session_is_one_line_with_its_exit_code(model_path, tmp_path):
    process = EngineProcess(str(crashing_interpreter(tmp_path, 1)), model_path=str(model_path),
                            threads=MEASURING_THREADS, label="A/B baseline")
    process.run("prompt", n_prompt=8, repetitions=1)
    with pytest.raises(WorkerError, match=r"crashed with exit code 9 while measuring prompt n_prompt=8 .*crashing-py"):
        process.run("prompt", n_prompt=8, repetitions=1)
    process.close()  # closing a dead worker is quiet


def segfaulting_loader(tmp_path, only_start=None):
    """An interpreter whose llama.cpp segfaults for real (a read of address 0) while it loads the model: at
    every start, or only at start number ``only_start`` (counted in a file; a ``--probe`` of the build, as
    the session header makes, loads no model and is not counted)."""
    counter = tmp_path / "worker-starts"
    (tmp_path / "segv_load.py").write_text(textwrap.dedent(f"""\
        import ctypes, os, runpy, sys
        import llama_cpp
        starts = (int(open({str(counter)!r}).read()) if os.path.exists({str(counter)!r}) else 0)
        if "--probe" not in sys.argv:
            starts += 1
            open({str(counter)!r}, "w").write(str(starts))
        def load(*args):
            print("llama_model_loader: loaded meta data with 33 key-value pairs", file=sys.stderr, flush=True)
            ctypes.string_at(0)   # SIGSEGV inside native code
        if {only_start!r} in (None, starts):
            llama_cpp.llama_model_load_from_file = load
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
        """))
    script = tmp_path / "segv-python"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'segv_load.py'} \"$@\"\n")
    script.chmod(0o755)
    return script


def test_a_segfault_in_the_middle_of_a_measurement_is_one_line_and_the_next_worker_measures(model_path):
    process = EngineProcess(sys.executable, model_path=str(model_path), threads=MEASURING_THREADS)
    try:
        killer = threading.Timer(1.0, os.kill, (process.pid, signal.SIGSEGV))
        killer.start()
        with pytest.raises(EngineCrash) as err:
            process.run("prompt", n_prompt=256, repetitions=500)   # minutes of work: the signal lands in it
        killer.join()
        message = str(err.value)
        assert "\n" not in message and "SIGSEGV" in message and "while measuring prompt n_prompt=256" in message
        assert f"with model {model_path}" in message and "llama.cpp's last log lines: " in message
        assert not process.alive
        process.restart()
        assert len(process.run("prompt", n_prompt=8, repetitions=1).seconds) == 1
    finally:
        process.close()


def test_a_worker_that_segfaults_while_loading_names_the_signal_and_llama_cpps_last_line(model_path, tmp_path):
    with pytest.raises(EngineCrash) as err:
        EngineProcess(str(segfaulting_loader(tmp_path)), model_path=str(model_path), threads=MEASURING_THREADS)
    message = str(err.value)
    assert "crashed with SIGSEGV (a segmentation fault in native code) while loading the model" in message
    assert "llama_model_loader: loaded meta data with 33 key-value pairs" in message and "\n" not in message


def test_a_binding_that_lacks_a_call_is_one_line_naming_the_version_and_the_fix(model_path, tmp_path):
    # an interpreter whose llama-cpp-python has no llama_get_memory, as a version that renamed it would
    python = tmp_path / "python"
    python.write_text(f"""#!/bin/sh
exec {sys.executable} -c "import sys, runpy, llama_cpp; del llama_cpp.llama_get_memory, llama_cpp.llama_log_set; \\
sys.argv = sys.argv[1:]; \\
runpy.run_path(sys.argv[0], run_name='__main__')" "$@"
""")
    python.chmod(0o755)
    with pytest.raises(WorkerError) as caught:
        EngineProcess(str(python), model_path=str(model_path), threads=MEASURING_THREADS)
    message = str(caught.value)
    assert "\n" not in message and "could not load" not in message
    # named before the first call into the binding (the log callback is set up first of all)
    assert re.search(r"llama-cpp-python \S+ lacks llama_log_set, llama_get_memory: pytest-axion's engine is known "
                     r"to work with llama-cpp-python 0\.3\.35 and 0\.3\.36; install one \(pip install "
                     r"'llama-cpp-python==0\.3\.36'\)", message), message


def amx_crashing_interpreter(tmp_path):
    """An interpreter whose llama.cpp puts the weights in AMX buffers (as on an Intel CPU with AMX) and segfaults
    for real in its first decode, as llama.cpp 0c1e570's AMX kernels did on such a machine."""
    (tmp_path / "amx_crash.py").write_text(textwrap.dedent("""\
        import ctypes, runpy, sys
        import llama_cpp
        engine = runpy.run_path(sys.argv[1], run_name="axion_engine")
        engine["serve"].__globals__["_model_buffers"] = lambda log: ("AMX", "CPU_Mapped")   # run_path gave a copy
        llama_cpp.llama_decode = lambda ctx, batch: ctypes.string_at(0)   # SIGSEGV inside native code
        sys.exit(engine["serve"](sys.argv[2:]))
        """))
    script = tmp_path / "amx-python"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'amx_crash.py'} \"$@\"\n")
    script.chmod(0o755)
    return script


def test_a_crash_with_the_weights_in_amx_buffers_names_the_known_cause_and_the_rebuild(model_path, tmp_path):
    process = EngineProcess(str(amx_crashing_interpreter(tmp_path)), model_path=str(model_path), threads=1)
    assert "AMX" in process.facts.model_buffers
    with pytest.raises(EngineCrash) as err:
        process.run("prompt", n_prompt=8, repetitions=1)
    message = str(err.value)
    assert "\n" not in message and "SIGSEGV" in message and "llama.cpp issue 20824" in message
    assert ('CMAKE_ARGS="-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8" pip install --force-reinstall '
            f"--no-deps --no-cache-dir llama-cpp-python=={process.facts.llama_cpp_python_version}") in message
    process.close()


def test_a_stopped_worker_is_a_one_line_hang_within_its_deadline_and_the_next_worker_measures(model_path):
    process = EngineProcess(sys.executable, model_path=str(model_path), threads=MEASURING_THREADS, hang_floor_s=5)
    try:
        process.warm_up(16)
        # the deadline grows with the request's work at the warm-up's speed, never below the floor
        assert process.quiet_limit_s(0, 0) == 5 and process.quiet_limit_s(10**6, 0) > 100
        assert process.quiet_limit_s(0, 1000) > process.quiet_limit_s(1000, 0)
        os.kill(process.pid, signal.SIGSTOP)   # a llama.cpp that deadlocked looks the same from here
        start = time.monotonic()
        with pytest.raises(WorkerHang) as err:
            process.run("prompt", n_prompt=8, repetitions=1)
        assert time.monotonic() - start < 20
        message = str(err.value)
        assert "\n" not in message and "said nothing for 5 s while measuring prompt n_prompt=8" in message
        assert "--axion-worker-timeout" in message and not process.alive
        process.restart()
        assert process.run("prompt", n_prompt=8, repetitions=1).seconds
    finally:
        process.close()


def test_a_worker_dies_with_the_process_that_started_it(model_path, tmp_path):
    pid_file = tmp_path / "pid"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import time
        from pytest_axion.engines.worker import EngineProcess
        worker = EngineProcess({sys.executable!r}, model_path={str(model_path)!r}, threads=1)
        open({str(pid_file)!r}, "w").write(str(worker.pid))
        time.sleep(600)
        """)])
    try:
        deadline = time.monotonic() + 120
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        worker_pid = int(pid_file.read_text())
    finally:
        parent.kill()   # SIGKILL: no cleanup of its own runs
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{worker_pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return   # dead, waiting for init to reap it
        except FileNotFoundError:
            return
        time.sleep(0.1)
    os.kill(worker_pid, signal.SIGKILL)
    pytest.fail("the worker outlived the process that started it")


def test_a_worker_maps_the_model_file_unless_told_to_read_it_into_memory(worker, model_path):
    def mapped(pid):
        with open(f"/proc/{pid}/maps") as maps:
            return any(line.rstrip().endswith(str(model_path)) for line in maps)

    assert mapped(worker.pid)
    reading = EngineProcess(sys.executable, model_path=str(model_path), threads=MEASURING_THREADS, mmap=False)
    try:
        assert not mapped(reading.pid)
        run = reading.run("generation", repetitions=1, n_gen=4)
        assert len(run.seconds) == 1 and run.seconds[0] > 0
    finally:
        reading.close()
