"""Write a proxy GGUF: a model's exact tensor shapes and types, N of its layers, random weights.

The file is planned in full first (every tensor's type and size, the header's bytes), so its exact size is
known and every mistake is reported before anything is written. It is then streamed in 32 MiB chunks into a
temp file in the target folder, fsynced and renamed over the target: a reader sees a complete proxy or none.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pytest_axion.files import default_cache_dir, written_atomically
from pytest_axion.machine.gguf import PROXY_KEY_PREFIX
from pytest_axion.proxy import blocks, ggufio
from pytest_axion.proxy.quant import SUPPORTED_QUANTIZATIONS, file_type_id, tensor_types
from pytest_axion.proxy.spec import ProxyError, ProxySpec, TensorShape, check_layers, hyperparameter_kvs, tensor_table
from pytest_axion.proxy.tokenizer import donor_tokenizer, fit_tokenizer, tokenizer_kvs

PROXY_FORMAT_VERSION = 2      # bump when the writer's output changes: cached proxies are named by it
MIN_DEFAULT_LAYERS = 2        # llama.cpp skips the last layer's FFN for tokens without logits: 1 layer measures little
MEMORY_REGIME_FACTOR = 4      # weights beyond 4x the last-level cache stream from DRAM on every generated token
UNKNOWN_CACHE_BYTES = 256 << 20   # a last-level cache sysfs does not show: assume a large one (more layers, not fewer)
LOCK_TIMEOUT_S = 1800.0       # a 70B proxy of many layers takes minutes to write on a slow disk
_CHUNK_BYTES = 32 << 20
_KEY = PROXY_KEY_PREFIX
_GIB = 1 << 30


@dataclass(frozen=True)
class ProxyInfo:
    """What a proxy file says it is: the model it stands for, its layers, quantization and seed."""

    path: str
    of: str                          # the table's name or the --like file's name
    n_layers: int
    full_layers: int
    quantization: str
    seed: int
    source_layers: tuple[int, ...]   # the full model's layer each proxy layer takes its tensor types from
    size_bytes: int

    @property
    def label(self) -> str:
        return f"proxy of {self.of} ({self.n_layers} of {self.full_layers} layers, {self.quantization})"


@dataclass(frozen=True)
class _Tensor:
    name: str
    dims: tuple[int, ...]
    type_name: str
    n_bytes: int
    fill: str          # "random", "ones", "zeros" or "rope"

    @property
    def n_elements(self) -> int:
        return math.prod(self.dims)


@dataclass(frozen=True)
class ProxyPlan:
    """Everything about a proxy file but its random bytes: tensors, types, header, exact size."""

    spec: ProxySpec
    n_layers: int
    quantization: str
    seed: int
    source_layers: tuple[int, ...]
    tensors: tuple[_Tensor, ...]
    header: bytes

    @property
    def size_bytes(self) -> int:
        return len(self.header) + sum(ggufio.pad_bytes(t.n_bytes) for t in self.tensors)


def plan_proxy(spec: ProxySpec, *, layers: int, quantization: str | None, seed: int = 0) -> ProxyPlan:
    """Check the request and lay the proxy out; ``quantization=None`` copies a --like file's tensor types."""
    from pytest_axion.machine.model import embedded_model_path  # machine.model imports numpy (through gguf)

    check_layers(spec, layers)
    if seed < 0:
        raise ProxyError(f"a proxy's seed must be 0 or more, not {seed}")
    full_types, quantization_name = _full_types(spec, quantization)
    sources = select_layers(spec, full_types, layers)
    tensors = tuple(_planned(spec, tensor, full_types) for tensor in _proxy_tensors(spec, sources))
    tokenizer = fit_tokenizer(donor_tokenizer(embedded_model_path()), spec.vocab_size)
    kvs = [
        ggufio.Kv("general.architecture", ggufio.STRING, spec.architecture),
        ggufio.Kv("general.type", ggufio.STRING, "model"),
        ggufio.Kv("general.name", ggufio.STRING, f"proxy of {spec.name}: {layers} of {spec.n_layers} layers, "
                                                f"{quantization_name}, random weights"),
        *_file_type_kvs(quantization_name),
        *hyperparameter_kvs(spec, layers, sources),
        *tokenizer_kvs(tokenizer),
        ggufio.Kv(_KEY + "format_version", ggufio.UINT32, PROXY_FORMAT_VERSION),
        ggufio.Kv(_KEY + "of", ggufio.STRING, spec.name),
        ggufio.Kv(_KEY + "layers", ggufio.UINT32, layers),
        ggufio.Kv(_KEY + "full_layers", ggufio.UINT32, spec.n_layers),
        ggufio.Kv(_KEY + "quantization", ggufio.STRING, quantization_name),
        ggufio.Kv(_KEY + "seed", ggufio.UINT64, seed),
        ggufio.Kv(_KEY + "source_layers", ggufio.ARRAY, list(sources), ggufio.UINT32),
    ]
    header = ggufio.encode_header(kvs, [(t.name, t.dims, _type_id(t.type_name), t.n_bytes) for t in tensors])
    return ProxyPlan(spec, layers, quantization_name, seed, tuple(sources), tensors, header)


def proxy_size_bytes(spec: ProxySpec, *, layers: int, quantization: str | None) -> int:
    """The exact size of the proxy file :func:`write_proxy` would write."""
    return plan_proxy(spec, layers=layers, quantization=quantization).size_bytes


def _full_types(spec: ProxySpec, quantization: str | None) -> tuple[dict[str, str], str]:
    if quantization is not None:
        return tensor_types(spec, quantization), quantization
    if not spec.is_like:
        raise ProxyError(f"a proxy of {spec.name} needs a quantization: one of {', '.join(SUPPORTED_QUANTIZATIONS)} "
                         "(only a proxy --like a file can copy that file's types)")
    return {t.name: t.type_name or "F32" for t in spec.like_tensors}, spec.like_file_type or "as in the file"


def _file_type_kvs(quantization_name: str) -> list[ggufio.Kv]:
    from gguf.constants import LlamaFileType

    name = "MOSTLY_" + quantization_name
    if name not in LlamaFileType.__members__:
        return []
    return [ggufio.Kv("general.file_type", ggufio.UINT32, file_type_id(quantization_name)),
            ggufio.Kv("general.quantization_version", ggufio.UINT32, 2)]


def select_layers(spec: ProxySpec, full_types: dict[str, str], n_layers: int) -> list[int]:
    """The full model's layers a proxy of ``n_layers`` copies, so that its tensor types mix as the full model's.

    Layers are grouped by the types of their tensors (Q4_K_M gives some layers Q6_K attn_v and ffn_down);
    each group gets a share of the proxy's layers in proportion to its size (largest remainder), taken
    evenly spaced within the group. With all the layers it is the identity.
    """
    signatures: dict[int, list[tuple[str, str]]] = {layer: [] for layer in range(spec.n_layers)}
    for tensor in tensor_table(spec):
        if tensor.layer is not None:
            signatures[tensor.layer].append((tensor.name.split(".", 2)[2], full_types[tensor.name]))
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for layer, signature in signatures.items():
        groups.setdefault(tuple(sorted(signature)), []).append(layer)
    members = list(groups.values())
    quotas = [n_layers * len(m) / spec.n_layers for m in members]
    seats = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(members)), key=lambda g: (-(quotas[g] - seats[g]), -len(members[g]), g))
    for g in by_remainder[:n_layers - sum(seats)]:
        seats[g] += 1
    chosen = [m[int((j + 0.5) * len(m) / k)] for m, k in zip(members, seats, strict=True) for j in range(k)]
    return sorted(chosen)


def _proxy_tensors(spec: ProxySpec, sources: list[int]) -> Iterator[tuple[str, TensorShape]]:
    """(proxy name, full-model tensor): tensors before the first layer, the chosen layers renumbered, the rest."""
    table = tensor_table(spec)
    first_block = next(i for i, t in enumerate(table) if t.layer is not None)
    for tensor in table[:first_block]:
        if tensor.layer is None:
            yield tensor.name, tensor
    for proxy_layer, source in enumerate(sources):
        prefix = f"blk.{source}."
        for tensor in table:
            if tensor.name.startswith(prefix):
                yield f"blk.{proxy_layer}." + tensor.name[len(prefix):], tensor
    for tensor in table[first_block:]:
        if tensor.layer is None:
            yield tensor.name, tensor


def _planned(spec: ProxySpec, item: tuple[str, TensorShape], full_types: dict[str, str]) -> _Tensor:
    name, tensor = item
    type_name = full_types[tensor.name]
    if type_name not in blocks.WRITABLE_TYPES:
        raise ProxyError(f"tensor {tensor.name} of {spec.name} has type {type_name}, which proxies cannot fill "
                         f"with valid random blocks: proxies write {', '.join(blocks.WRITABLE_TYPES)}; "
                         "pass a quantization to requantize it")
    block_elements, _ = blocks.type_size(type_name)
    n_elements = math.prod(tensor.dims)
    if tensor.dims[0] % block_elements:
        raise ProxyError(f"tensor {tensor.name} of {spec.name}: rows of {tensor.dims[0]} do not divide into "
                         f"{type_name} blocks of {block_elements}: the header is inconsistent; use another file")
    if len(tensor.dims) >= 2 or type_name not in ("F32", "F16", "BF16"):
        fill = "random"
    elif tensor.name == "rope_freqs.weight" and spec.llama3_rope is not None:
        fill = "rope"
    else:
        fill = "zeros" if tensor.name.endswith(".bias") else "ones"   # norms and scales at 1, biases at 0
    return _Tensor(name, tensor.dims, type_name, blocks.tensor_bytes(type_name, n_elements), fill)


def _type_id(type_name: str) -> int:
    from gguf.constants import GGMLQuantizationType

    return int(GGMLQuantizationType[type_name])


def write_proxy(spec: ProxySpec, *, layers: int, quantization: str | None, path: str | os.PathLike[str],
                seed: int = 0) -> ProxyInfo:
    """Write a proxy of ``spec`` with ``layers`` layers to ``path`` atomically and return what it is.

    Raises ProxyError, with nothing written, for a bad request or too little disk space.
    """
    plan = plan_proxy(spec, layers=layers, quantization=quantization, seed=seed)
    target = Path(path)
    check_room(target, plan.size_bytes)
    with written_atomically(target) as handle:
        _write_data(plan, handle)
        written = handle.tell()
        if written != plan.size_bytes:
            raise AssertionError(f"proxy writer bug: wrote {written} bytes, planned {plan.size_bytes}")
    return _info(plan, target)


def _write_data(plan: ProxyPlan, handle: IO[bytes]) -> None:
    import numpy as np

    handle.write(plan.header)
    for index, tensor in enumerate(plan.tensors):
        if tensor.fill == "random":
            bits = np.random.PCG64(np.random.SeedSequence([plan.seed, index]))
            block_elements, block_bytes = blocks.type_size(tensor.type_name)
            n_blocks, fan_in = tensor.n_elements // block_elements, tensor.dims[0]
            per_chunk = max(1, _CHUNK_BYTES // block_bytes)
            for start in range(0, n_blocks, per_chunk):
                chunk = blocks.random_chunk(tensor.type_name, min(per_chunk, n_blocks - start), fan_in, bits)
                handle.write(chunk.data)   # the array's own buffer: no copy
        elif tensor.fill == "rope":
            assert plan.spec.llama3_rope is not None
            factors = plan.spec.llama3_rope.factors(plan.spec.head_dim, plan.spec.rope_freq_base)
            handle.write(blocks.values_chunk(tensor.type_name, factors))
        else:
            value = 1.0 if tensor.fill == "ones" else 0.0
            handle.write(blocks.constant_chunk(tensor.type_name, tensor.n_elements, value))
        handle.write(bytes(ggufio.pad_bytes(tensor.n_bytes) - tensor.n_bytes))


def check_room(target: Path, size_bytes: int) -> None:
    """A ProxyError unless the folder of ``target`` (or its nearest existing parent) has ``size_bytes`` free."""
    if target.is_dir():
        raise ProxyError(f"proxy path {target} is a folder: give a file name such as {target / 'proxy.gguf'}")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free_bytes = shutil.disk_usage(folder).free
    if size_bytes > free_bytes:
        raise ProxyError(f"no room for the proxy {target}: it needs {size_bytes / _GIB:.2f} GiB ({size_bytes:,} bytes) "
                         f"and {folder} has {free_bytes / _GIB:.2f} GiB free: free some space, write it elsewhere, "
                         "or give fewer layers")


def _info(plan: ProxyPlan, path: Path) -> ProxyInfo:
    return ProxyInfo(str(path), plan.spec.name, plan.n_layers, plan.spec.n_layers, plan.quantization, plan.seed,
                     plan.source_layers, plan.size_bytes)


def read_proxy_info(path: str | os.PathLike[str]) -> ProxyInfo | None:
    """What the proxy at ``path`` stands for, from its ``axion.proxy.*`` keys; None for an ordinary GGUF."""
    try:
        header = ggufio.read_header(path)
    except (OSError, ValueError, ggufio.HeaderError) as err:
        raise ProxyError(f"{path} is not a readable GGUF file ({err}): give the path of a .gguf model") from None
    if header.value(_KEY + "of") is None:
        return None
    return ProxyInfo(path=str(path), of=str(header.value(_KEY + "of")), n_layers=int(header.value(_KEY + "layers")),
                     full_layers=int(header.value(_KEY + "full_layers")),
                     quantization=str(header.value(_KEY + "quantization")), seed=int(header.value(_KEY + "seed")),
                     source_layers=tuple(header.value(_KEY + "source_layers", [])),
                     size_bytes=os.path.getsize(path))


def default_layers(spec: ProxySpec, quantization: str | None, *, last_level_cache_bytes: int) -> int:
    """The fewest layers (at least 2, at most the model's) that keep generation in the full model's memory regime.

    Each generated token reads every layer's weights and the output matrix once (the token embedding only
    one row). If those bytes exceed ``MEMORY_REGIME_FACTOR`` (4) times the last-level cache, generation is
    DRAM-bound, and the proxy gets layers until its own bytes exceed that too; a smaller model is
    cache-sensitive, so its proxy must read as many bytes as it does: all its layers. An unknown cache size
    (0) is taken as 256 MiB.
    """
    full_types, _ = _full_types(spec, quantization)
    table = tensor_table(spec)
    output_name = "output.weight" if any(t.name == "output.weight" for t in table) else "token_embd.weight"
    per_layer = [0] * spec.n_layers
    output_bytes = 0
    for tensor in table:
        n_bytes = blocks.tensor_bytes(full_types[tensor.name], math.prod(tensor.dims))
        if tensor.layer is not None:
            per_layer[tensor.layer] += n_bytes
        elif tensor.name == output_name:
            output_bytes = n_bytes
    cache_bytes = last_level_cache_bytes if last_level_cache_bytes > 0 else UNKNOWN_CACHE_BYTES
    target_bytes = min(output_bytes + sum(per_layer), MEMORY_REGIME_FACTOR * cache_bytes)
    for n_layers in range(min(MIN_DEFAULT_LAYERS, spec.n_layers), spec.n_layers):
        if output_bytes + sum(per_layer[i] for i in select_layers(spec, full_types, n_layers)) >= target_bytes:
            return n_layers
    return spec.n_layers


def proxy_cache_path(spec_name: str, layers: int, quantization: str, llama_cpp_version: str, *,
                     cache_dir: Path | None = None) -> Path:
    """Where a built proxy is cached: ``<cache>/proxies/llama.cpp-<version>/<name>.<layers>L.<quant>.v<N>.gguf``.

    The llama.cpp version is in the path because its quantization rules, and so the proxy's types, follow it.
    """
    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "_", text)

    folder = (cache_dir or default_cache_dir()) / "proxies" / f"llama.cpp-{safe(llama_cpp_version)}"
    return folder / f"{safe(spec_name)}.{layers}L.{safe(quantization)}.v{PROXY_FORMAT_VERSION}.gguf"


def ensure_proxy(spec: ProxySpec, *, quantization: str | None, llama_cpp_version: str, layers: int | None = None,
                 cache_dir: Path | None = None) -> ProxyInfo:
    """The cached proxy for this request, built once (under a file lock, so two processes do not both build it).

    ``layers=None`` takes :func:`default_layers` for this machine's last-level cache.
    """
    from filelock import FileLock, Timeout

    from pytest_axion.machine.limits import last_level_cache_bytes

    if layers is None:
        layers = default_layers(spec, quantization, last_level_cache_bytes=last_level_cache_bytes())
    plan = plan_proxy(spec, layers=layers, quantization=quantization)
    path = proxy_cache_path(spec.cache_name, layers, plan.quantization, llama_cpp_version, cache_dir=cache_dir)
    cached = _cached(path, plan)
    if cached is not None:
        return cached
    check_room(path, plan.size_bytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    try:
        with FileLock(str(lock_path), timeout=LOCK_TIMEOUT_S):
            cached = _cached(path, plan)   # another process may have built it while this one waited
            if cached is not None:
                return cached
            return write_proxy(spec, layers=layers, quantization=quantization, path=path)
    except Timeout:
        raise ProxyError(f"another process has held {lock_path} for {LOCK_TIMEOUT_S:.0f} s while building {path}: "
                         "wait for it, or delete the lock file if no such process runs") from None


def _cached(path: Path, plan: ProxyPlan) -> ProxyInfo | None:
    """The proxy at ``path`` if it is complete and is the one planned."""
    try:
        if path.stat().st_size != plan.size_bytes:
            return None
        info = read_proxy_info(path)
    except (OSError, ProxyError):
        return None
    if info is None or (info.of, info.n_layers, info.quantization, info.seed, info.source_layers) != (
            plan.spec.name, plan.n_layers, plan.quantization, plan.seed, plan.source_layers):
        return None
    return info
