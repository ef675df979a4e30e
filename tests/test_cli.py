import io
import json
import subprocess
import sys

from pytest_axion.cli import main, show, validate
from pytest_axion.store.baselines import baseline_path, write_baseline
from tests.test_baselines import make_baseline


def run(command, root):
    out = io.StringIO()
    status = command(root=root, out=out)
    return status, out.getvalue()


def test_validate_passes_good_files_and_fails_bad_ones_by_name(tmp_path):
    write_baseline(baseline_path(tmp_path, "hw-1", "m.Q4_1"), make_baseline())
    assert run(validate, tmp_path) == (0, f"ok   {tmp_path}/hw-1/m.Q4_1.json (1 entries)\n1 valid, 0 invalid\n")
    bad = tmp_path / "hw-2" / "x.json"
    bad.parent.mkdir()
    bad.write_text("{truncated")
    status, text = run(validate, tmp_path)
    assert status == 1
    assert f"FAIL baseline file {bad} is not valid JSON" in text and "1 valid, 1 invalid" in text


def test_validate_refuses_a_file_moved_to_another_machine_folder(tmp_path):
    moved = tmp_path / "other-hw" / "m.Q4_1.json"
    moved.parent.mkdir()
    moved.write_text(json.dumps(make_baseline().to_json()))
    status, text = run(validate, tmp_path)
    assert status == 1 and "move it to hw-1/m.Q4_1.json" in text


def test_show_lists_levels_and_between_run_spread(tmp_path):
    write_baseline(baseline_path(tmp_path, "hw-1", "m.Q4_1"), make_baseline())
    status, text = run(show, tmp_path)
    assert status == 0
    assert "hw-1 / m.Q4_1: recorded 2026-11-25T03:00:00+00:00, llama-cpp-python 0.3.36" in text
    assert "100.00 tokens/s" in text and "between-run CV" in text


def test_empty_folder_is_reported_not_an_error(tmp_path):
    assert run(show, tmp_path / "none") == (0, f"no baseline files under {tmp_path / 'none'}\n")
    assert main(["validate", str(tmp_path)]) == 0


def test_console_script_is_installed_and_has_help():
    result = subprocess.run([sys.executable, "-m", "pytest_axion.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "validate" in result.stdout and "show" in result.stdout


def test_refresh_command_runs_pytest_with_the_refresh_flags(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command: calls.append(command) or 0)
    assert main(["refresh", "--runs", "4", "--", "tests/conformance", "-k", "prompt"]) == 0
    assert calls == [[sys.executable, "-m", "pytest", "--axion-slo", "--axion-refresh-baselines", "--axion-runs", "4",
                      "tests/conformance", "-k", "prompt"]]


def test_hardware_names_the_id_the_plugin_gives_this_machine_and_its_baseline_folder(capsys):
    from pytest_axion.engines.worker import probe_build
    from pytest_axion.machine.hardware import collect_hardware

    build = probe_build()
    expected = collect_hardware(system_info=build["system_info"],
                                llama_cpp_python_version=build["llama_cpp_python_version"]).hardware_id
    assert main(["hardware", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["hardware_id"] == expected == data["fingerprint"]["hardware_id"]
    assert data["fingerprint"]["llama_cpp_system_info"] and data["threads"] >= 1
    assert main(["hardware", "--threads", "64"]) == 0
    text = capsys.readouterr().out
    assert f"baseline folder  baselines/{expected}/" in text
    assert "warning: thread count 64 is above the " in text   # the warnings are read for the threads asked


def test_hardware_with_an_interpreter_that_cannot_report_is_one_line(capsys):
    for python in ("/bin/false", "/no/such/python"):
        assert main(["hardware", "--python", python]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"pytest-axion hardware: {python} could not report llama.cpp's build")
