import pytest

from pytest_axion.errors import HardwareIdError, SettingsError
from pytest_axion.settings import OPTIONS, resolve_settings


def resolve(cli=None, ini=None, physical=2, logical=4):
    return resolve_settings(cli or {}, ini or {}, physical_cores=physical, logical_cores=logical)


def test_defaults_use_physical_cores_and_five_repetitions():
    settings = resolve()
    assert not settings.enabled
    assert (settings.threads.value, settings.threads.source) == (2, "default")
    assert settings.repetitions.value == 5
    assert settings.model.value is None and settings.hardware.value is None


def test_command_line_beats_ini_and_each_value_knows_its_source():
    settings = resolve(cli={"threads": "3"}, ini={"axion_threads": "1", "axion_repetitions": "7"})
    assert (settings.threads.value, settings.threads.source) == (3, "--axion-threads")
    assert (settings.repetitions.value, settings.repetitions.source) == (7, "ini axion_repetitions")


def test_zero_threads_is_an_error_naming_the_option():
    with pytest.raises(SettingsError, match=r"--axion-threads must be at least 1, got 0"):
        resolve(cli={"threads": "0"})


def test_non_numeric_ini_value_names_the_ini_key():
    with pytest.raises(SettingsError, match=r"ini axion_repetitions must be a whole number, got 'many'"):
        resolve(ini={"axion_repetitions": "many"})


def test_more_threads_than_cpus_is_a_warning_not_an_error():
    settings = resolve(cli={"threads": "8"}, logical=2)
    assert settings.threads.value == 8
    assert any("exceeds the 2 logical CPU(s)" in w for w in settings.warnings)


def test_hardware_id_with_path_separators_is_rejected():
    with pytest.raises(HardwareIdError, match="--axion-hardware"):
        resolve(cli={"hardware": "../etc"})
    assert resolve(cli={"hardware": "gcp-c4a-standard-32"}).hardware.value == "gcp-c4a-standard-32"


def test_model_path_expands_user_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve(ini={"axion_model": "~/m.gguf"}).model.value == str(tmp_path / "m.gguf")


def test_every_ini_key_and_flag_is_unique():
    flags = [spec.flag for spec in OPTIONS]
    inis = [spec.ini for spec in OPTIONS if spec.ini]
    assert len(flags) == len(set(flags)) and len(inis) == len(set(inis))
    assert all(flag.startswith("--axion-") for flag in flags)
