"""The GGUF header, read and written byte by byte: only the standard library, no tensor data touched.

A proxy needs the header of a model it imitates (which may be all the user has: the first megabytes of
a 40 GB file) and writes a header of its own before streaming random tensor data behind it. The format
(version 3, little-endian) is gguf-py's ``GGUFWriter`` / llama.cpp's ``gguf.cpp``: magic, version,
tensor count, key count, the keys, the tensor infos, padding to ``general.alignment`` (32 by default),
then each tensor's data at an aligned offset.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT_BYTES = 32

# GGUF value type ids (gguf-py's GGUFValueType) and the struct format of the fixed-size ones.
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_FIXED = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i", FLOAT32: "<f",
          BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}
_SMALL_ARRAY_ITEMS = 4096   # a tokenizer array longer than this is skipped unless asked for


class HeaderError(Exception):
    """The bytes are not a readable GGUF header (the caller names the file and the fix)."""


@dataclass(frozen=True)
class Kv:
    """One metadata entry: key, GGUF value type, value; ``item_type`` for arrays."""

    key: str
    value_type: int
    value: Any
    item_type: int | None = None


@dataclass(frozen=True)
class SkippedArray:
    """An array the reader did not build (a tokenizer list nobody asked for): its item type and length."""

    item_type: int
    count: int


@dataclass(frozen=True)
class HeaderTensor:
    """A tensor info entry: name, dims in ggml order (ne0 first: the row length), ggml type id."""

    name: str
    dims: tuple[int, ...]
    type_id: int


@dataclass(frozen=True)
class Header:
    """What a GGUF header says: its keys in file order and its tensor infos."""

    version: int
    kvs: tuple[Kv, ...]
    tensors: tuple[HeaderTensor, ...]

    def value(self, key: str, default: Any = None) -> Any:
        for kv in self.kvs:
            if kv.key == key:
                return kv.value
        return default


def read_header(path: str | os.PathLike[str], *, tokenizer: bool = False) -> Header:
    """Parse the header of ``path``; the tokenizer's long arrays are built only with ``tokenizer=True``.

    Tensor data is never read, so a file cut short after its header is still readable. Raises
    :class:`HeaderError` when the bytes are not a GGUF v2/v3 header.
    """
    with open(path, "rb") as handle:
        size_bytes = os.fstat(handle.fileno()).st_size
        if size_bytes < 24:
            raise HeaderError(f"{size_bytes} bytes: too short for a GGUF header")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return _Parser(view, tokenizer).header()


class _Parser:
    def __init__(self, data: mmap.mmap, tokenizer: bool) -> None:
        self.data, self.tokenizer, self.offset = data, tokenizer, 0

    def _build(self, key: str, count: int) -> bool:
        return count <= _SMALL_ARRAY_ITEMS or self.tokenizer or not key.startswith("tokenizer.")

    def _take(self, n_bytes: int) -> int:
        start = self.offset
        if n_bytes < 0 or start + n_bytes > len(self.data):
            raise HeaderError(f"the header ends early (at byte {len(self.data):,}, wanted {start + n_bytes:,})")
        self.offset = start + n_bytes
        return start

    def _fixed(self, value_type: int) -> Any:
        fmt = _FIXED[value_type]
        return struct.unpack_from(fmt, self.data, self._take(struct.calcsize(fmt)))[0]

    def _string(self) -> str:
        n_bytes = self._fixed(UINT64)
        start = self._take(n_bytes)
        return bytes(self.data[start:start + n_bytes]).decode("utf-8", errors="replace")

    def _value(self, value_type: int, key: str) -> tuple[Any, int | None]:
        if value_type in _FIXED:
            return self._fixed(value_type), None
        if value_type == STRING:
            return self._string(), None
        if value_type != ARRAY:
            raise HeaderError(f"key {key!r} has unknown value type {value_type}")
        item_type, count = self._fixed(UINT32), self._fixed(UINT64)
        if count > len(self.data):
            raise HeaderError(f"key {key!r} announces {count:,} items")
        if item_type in _FIXED and self._build(key, count):
            fmt = _FIXED[item_type]
            start = self._take(count * struct.calcsize(fmt))
            return list(struct.unpack_from(f"<{count}{fmt[1]}", self.data, start)), item_type
        if item_type in _FIXED:
            self._take(count * struct.calcsize(_FIXED[item_type]))
            return SkippedArray(item_type, count), item_type
        if item_type == STRING and self._build(key, count):
            return [self._string() for _ in range(count)], item_type
        if item_type == STRING:
            for _ in range(count):
                self._take(self._fixed(UINT64))
            return SkippedArray(item_type, count), item_type
        raise HeaderError(f"key {key!r} is an array of type {item_type}, which proxies do not copy")

    def header(self) -> Header:
        if bytes(self.data[0:4]) != GGUF_MAGIC:
            raise HeaderError(f"starts with {bytes(self.data[0:8])!r}, not the GGUF magic")
        self._take(4)
        version = self._fixed(UINT32)
        if version not in (2, 3):
            raise HeaderError(f"GGUF version {version} (2 and 3 are read)")
        n_tensors, n_kv = self._fixed(UINT64), self._fixed(UINT64)
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise HeaderError(f"announces {n_tensors:,} tensors and {n_kv:,} keys: corrupt")
        kvs = []
        for _ in range(n_kv):
            key = self._string()
            value_type = self._fixed(UINT32)
            value, item_type = self._value(value_type, key)
            kvs.append(Kv(key, value_type, value, item_type))
        tensors = []
        for _ in range(n_tensors):
            name = self._string()
            n_dims = self._fixed(UINT32)
            if n_dims > 8:
                raise HeaderError(f"tensor {name!r} has {n_dims} dimensions: corrupt")
            dims = tuple(self._fixed(UINT64) for _ in range(n_dims))
            type_id = self._fixed(UINT32)
            self._fixed(UINT64)  # the data offset: a proxy lays out its own
            tensors.append(HeaderTensor(name, dims, type_id))
        return Header(version, tuple(kvs), tuple(tensors))


def pad_bytes(n_bytes: int, alignment: int = ALIGNMENT_BYTES) -> int:
    """``n_bytes`` rounded up to the alignment."""
    return -(-n_bytes // alignment) * alignment


def encode_header(kvs: Sequence[Kv], tensors: Sequence[tuple[str, tuple[int, ...], int, int]]) -> bytes:
    """The header bytes, padded to the alignment: ``tensors`` are (name, dims, ggml type id, data bytes).

    Each tensor's data starts at the previous one's end rounded up to 32 bytes, as gguf-py lays it out.
    """
    parts = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(tensors), len(kvs))]
    for kv in kvs:
        parts.append(_string(kv.key))
        parts.append(struct.pack("<I", kv.value_type))
        parts.append(_encode_value(kv))
    offset = 0
    for name, dims, type_id, n_bytes in tensors:
        parts.append(_string(name))
        parts.append(struct.pack(f"<I{len(dims)}Q", len(dims), *dims))
        parts.append(struct.pack("<IQ", type_id, offset))
        offset += pad_bytes(n_bytes)
    header = b"".join(parts)
    return header + bytes(pad_bytes(len(header)) - len(header))


def _string(text: str) -> bytes:
    encoded = text.encode("utf-8")
    return struct.pack("<Q", len(encoded)) + encoded


def _encode_value(kv: Kv) -> bytes:
    if kv.value_type in _FIXED:
        return struct.pack(_FIXED[kv.value_type], kv.value)
    if kv.value_type == STRING:
        return _string(str(kv.value))
    if kv.value_type != ARRAY or kv.item_type is None or isinstance(kv.value, SkippedArray):
        raise ValueError(f"cannot encode metadata {kv.key!r}")  # our bug: callers pass built values only
    head = struct.pack("<IQ", kv.item_type, len(kv.value))
    if kv.item_type == STRING:
        return head + b"".join(_string(item) for item in kv.value)
    fmt = _FIXED[kv.item_type]
    return head + struct.pack(f"<{len(kv.value)}{fmt[1]}", *kv.value)
