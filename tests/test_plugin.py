"""The plugin as a user drives it from the command line (pytester), on the real embedded model."""

import json

import pytest

from .test_worker import segfaulting_loader

MEASURING_TEST = """
def test_prompt(axion):
    m = axion.prompt(64)
    assert m.metric == "prompt_tps" and len(m.samples) == {reps}
    assert m.median > 0

def test_batched(axion):
    result = axion.batched(n_prompt=32, n_gen=8, batch_sizes=[1, 2])
    assert result.batch_sizes == [1, 2]
    assert result[2].per_user_tps.median < result[2].gen_tps.median
"""


def test_plugin_registers_through_its_entry_point(pytester):
    config = pytester.parseconfig()
    assert config.pluginmanager.hasplugin("axion")


def test_help_lists_every_option_and_ini_key(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines([
        "*pytest-axion*",
        "*--axion-slo*",
        "*--axion-model=PATH*",
        "*--axion-threads=N*",
        "*--axion-repetitions=R*",
        "*--axion-hardware=ID*",
        "*axion_model (string)*",
        "*axion_threads (string)*",
    ])
    result.stdout.fnmatch_lines(["*--axion-require-features=LIST*", "*--axion-ab-baseline=PYTHON*"])


def test_measuring_tests_are_skipped_without_the_flag(pytester):
    pytester.makepyfile(MEASURING_TEST.format(reps=2))
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*run pytest with --axion-slo to measure*"])


def test_measuring_tests_run_and_are_summarised_with_the_flag(pytester):
    pytester.makepyfile(MEASURING_TEST.format(reps=2))
    result = pytester.runpytest("--axion-slo", "--axion-repetitions=2", "--axion-threads=1")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*axion performance*",
        "model: SmolLM2-135M-Instruct.Q4_1.gguf (llama, Q4_1*",
        "hardware: *",
        "llama-cpp-python *, threads 1, llama.cpp: *",
        "*test*metric*batch*median*",
        "*test_prompt*prompt_tps*1*64*0*tokens/s*",
        "*test_batched*per_user_tps*2*32*8*tokens/s*",
        "*test_batched*ttft_ms*2*32*8* ms*",
    ])


def test_model_is_loaded_once_per_session(pytester):
    pytester.makepyfile("""
        seen = []

        def test_one(axion_model):
            seen.append(axion_model)

        def test_two(axion, axion_model):
            assert seen == [axion_model] and axion.loaded is axion_model
    """)
    pytester.runpytest("--axion-slo").assert_outcomes(passed=2)


def test_ini_values_are_used(pytester):
    pytester.makeini("[pytest]\naxion_threads = 1\naxion_repetitions = 1\n")
    pytester.makepyfile(MEASURING_TEST.format(reps=1))
    result = pytester.runpytest("--axion-slo")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*threads 1,*"])


@pytest.mark.parametrize("args, expected", [
    (["--axion-threads=0"], "ERROR: --axion-threads must be at least 1, got 0*"),
    (["--axion-repetitions=lots"], "ERROR: --axion-repetitions must be a whole number, got 'lots'"),
    (["--axion-hardware=../x"], "ERROR: invalid hardware id '../x' (from --axion-hardware)*"),
])
def test_bad_options_are_one_line_usage_errors(pytester, args, expected):
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


@pytest.mark.parametrize("content, expected", [
    (b"", "*zero bytes*"),
    (b"<html><body>404</body></html>" * 10, "*not a GGUF*"),
    (None, "*truncated*"),
])
def test_bad_model_files_are_one_line_usage_errors_naming_the_file(pytester, model_path, content, expected):
    bad = pytester.path / "bad.gguf"
    if content is None:
        bad.write_bytes(model_path.read_bytes()[: 50_000_000])
    else:
        bad.write_bytes(content)
    pytester.makepyfile("def test_x(axion):\n    pass\n")
    result = pytester.runpytest("--axion-slo", f"--axion-model={bad}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    error_lines = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(error_lines) == 1 and str(bad) in error_lines[0]
    result.stderr.fnmatch_lines([expected])


def test_missing_model_names_the_option_to_fix(pytester):
    result = pytester.runpytest("--axion-slo", "--axion-model=/nonexistent/m.gguf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *not found*/nonexistent/m.gguf*--axion-model*"])


def test_a_workload_that_cannot_fit_fails_that_test_in_one_line(pytester):
    pytester.makepyfile("""
        def test_too_long(axion):
            axion.prompt(10**6)

        def test_fine(axion):
            axion.generate(4)
    """)
    result = pytester.runpytest("--axion-slo", "--axion-repetitions=1")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*test_too_long*exceed the model's training context*"])
    assert "Traceback" not in result.stdout.str()


CRASHING_SESSION = """
import os, signal, threading

def test_before(axion):
    axion.prompt(16)

def test_segfault_mid_measurement(axion):
    threading.Timer(1.0, os.kill, (axion.loaded.engine.pid, signal.SIGSEGV)).start()
    axion.prompt(256, repetitions=500)   # minutes of work: the signal lands in it

def test_worker_dies_while_loading(axion):
    axion.prompt(16)

def test_after(axion):
    axion.prompt(16)
"""


def test_a_crash_of_llama_cpp_fails_that_test_in_one_line_and_the_session_and_report_go_on(pytester, tmp_path):
    pytester.makepyfile(CRASHING_SESSION)
    python = segfaulting_loader(tmp_path, only_start=2)   # the worker started after the first crash
    result = pytester.runpytest("--axion-slo", "--axion-repetitions=2", "--axion-no-baselines",
                                f"--axion-python={python}", "--axion-report=r.json")
    result.assert_outcomes(passed=2, failed=1, errors=1)   # a worker that cannot load fails the test's setup
    result.stdout.fnmatch_lines([
        "llama.cpp crashed with SIGSEGV (a segmentation fault in native code) while loading the model with model "
        "*SmolLM2*.gguf (llama.cpp worker, *segv-python); llama.cpp's last log lines: llama_model_loader: loaded "
        "meta data with 33 key-value pairs; the next test gets a fresh worker*",
        "llama.cpp crashed with SIGSEGV (a segmentation fault in native code) while measuring prompt n_prompt=256 "
        "with model *SmolLM2*.gguf (llama.cpp worker, *segv-python); llama.cpp's last log lines: *; the next test "
        "gets a fresh worker*",
    ], consecutive=False)
    assert "Traceback" not in result.stdout.str() and "Fatal Python error" not in result.stdout.str()
    report = json.loads((pytester.path / "r.json").read_text())
    assert [r["nodeid"].split("::")[1] for r in report["results"]] == ["test_before", "test_after"]
    assert report["tests"][0]["outcome"] == "passed"


def test_importing_the_plugin_loads_neither_llama_cpp_nor_the_measuring_side():
    import subprocess
    import sys

    code = ("import sys, pytest_axion.plugin; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'llama_cpp' or m in "
            "('pytest_axion.session', 'pytest_axion.harness', 'pytest_axion.engines.worker', 'jsonschema', 'numpy')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_run_without_the_plugins_options_knows_the_marker_under_strict_markers(pytester):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.axion_slo(prompt_tps=50)
        def test_marked():
            pass
    """)
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)
    pytester.runpytest("--markers").stdout.fnmatch_lines(["@pytest.mark.axion_slo(prompt_tps=50.0, *"])
