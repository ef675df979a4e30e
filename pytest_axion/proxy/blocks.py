"""Random tensor data that llama.cpp computes with as with real weights: valid blocks, finite small scales.

A quantized block is random bytes with its fp16 scale fields (layouts from ggml's ``ggml-common.h``, the
fields ``ggml_validate_row_data`` checks) set to finite values around one level per tensor. That level is
chosen so each matrix keeps the variance of what it multiplies (as a Xavier initialisation does): activations
stay near 1 through every layer, so no NaN, infinity or fp16 overflow appears in the KV cache whatever the
depth. It is calibrated by dequantizing a sample with gguf-py's reference ``gguf.quants.dequantize``.

The scales vary from block to block as a real model's do, because speed depends on it: on x86, llama.cpp's
CPU dot products convert each block's fp16 scale through a 256 KiB lookup table (``ggml_table_f32_f16``),
so one scale per tensor always hits the cache. SmolLM2-135M's proxy with one scale per tensor generated
13-16% faster at batch 1 than the real model on a Zen 4 VM; the real model's Q4_1 tensors have 570-1300
distinct scales each, spread log-normally (standard deviation of ln d 0.18-0.41, median 0.25), and mins of
-7.5 d (10th-90th percentile -9.2 d to -5.8 d). Otherwise a dense model's speed does not depend on its
weights' values, only on their types and shapes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_MIN_NORMAL_FP16 = 2.0 ** -14   # smaller scales would be subnormal: keep to normal numbers
_MAX_FP16 = 65504.0
SCALE_SPREAD = 0.25       # standard deviation of ln(scale) over a tensor's blocks: SmolLM2-135M's median tensor
MIN_SPREAD = 0.17         # of ln(min / (min_per_scale * scale)): SmolLM2-135M's Q4_1 mins, -9.2 d to -5.8 d


@dataclass(frozen=True)
class _Layout:
    """Where a block keeps its fp16 scale (``d``) and, for types with a minimum, the fp16 min field."""

    scale_offsets: tuple[int, ...]
    min_offsets: tuple[int, ...] = ()
    min_per_scale: float = 0.0             # min = min_per_scale * d: centres the weights on zero
    masks: tuple[tuple[int, int, int], ...] = ()   # (start, stop, AND mask): small sub-block scales


_K_SCALES = ((4, 12, 0x0F),)   # Q4_K/Q5_K: 6-bit scales and mins held to 0..15, the top bits of the packing cleared
LAYOUTS: dict[str, _Layout] = {
    "Q4_0": _Layout((0,)), "Q5_0": _Layout((0,)), "Q8_0": _Layout((0,)),
    "Q4_1": _Layout((0,), (2,), -7.5), "Q5_1": _Layout((0,), (2,), -15.5),   # w = d*q + m
    "Q2_K": _Layout((80,), (82,), 1.5),                                     # w = d*sc*q - dmin*m
    "Q3_K": _Layout((108,)),
    "Q4_K": _Layout((0,), (2,), 7.5, _K_SCALES), "Q5_K": _Layout((0,), (2,), 15.5, _K_SCALES),
    "Q6_K": _Layout((208,), masks=((192, 208, 0x07),)),                      # int8 sub-block scales held to 0..7
    "IQ4_NL": _Layout((0,)), "IQ4_XS": _Layout((0,)), "IQ2_XXS": _Layout((0,)), "IQ2_XS": _Layout((0,)),
    "IQ2_S": _Layout((0,)), "IQ3_XXS": _Layout((0,)), "IQ3_S": _Layout((0,)), "IQ1_S": _Layout((0,)),
    "TQ1_0": _Layout((52,)), "TQ2_0": _Layout((64,)),
}
# Float types: the bit pattern keeps sign and mantissa random and sets the exponent (IEEE fields).
_FLOATS: dict[str, tuple[str, int, int, int]] = {   # type -> (numpy dtype, exponent shift, exponent bias, keep mask)
    "F32": ("<u4", 23, 127, 0x807FFFFF), "F16": ("<u2", 10, 15, 0x83FF), "BF16": ("<u2", 7, 127, 0x807F),
}
WRITABLE_TYPES = tuple(_FLOATS) + tuple(LAYOUTS)


def type_size(type_name: str) -> tuple[int, int]:
    """(elements per block, bytes per block) from gguf-py's GGML_QUANT_SIZES."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    block_elements, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    return block_elements, block_bytes


def tensor_bytes(type_name: str, n_elements: int) -> int:
    block_elements, block_bytes = type_size(type_name)
    return n_elements // block_elements * block_bytes


def target_rms(fan_in: int) -> float:
    """The weights' root mean square that keeps a matrix's output variance equal to its input's."""
    return 1.0 / math.sqrt(max(fan_in, 1))


def random_chunk(type_name: str, n_blocks: int, fan_in: int, bits: np.random.PCG64) -> npt.NDArray[np.uint8]:
    """``n_blocks`` random blocks of ``type_name`` (elements for the float types), as bytes."""
    import numpy as np

    block_bytes = type_size(type_name)[1]
    n_bytes = n_blocks * block_bytes
    raw = bits.random_raw(-(-n_bytes // 8)).view(np.uint8)[:n_bytes]
    if type_name in _FLOATS:
        dtype, shift, bias, keep = _FLOATS[type_name]
        exponent = round(math.log2(target_rms(fan_in) / 1.5))   # uniform mantissa: rms is about 1.5 * 2**exponent
        field = min(max(exponent + bias, 1), 2 * bias - 1)
        values = raw.view(dtype)
        values &= keep
        values |= field << shift
        return raw
    blocks = raw.reshape(n_blocks, block_bytes)
    scale = target_rms(fan_in) / _rms_at_unit_scale(type_name)
    _set_block_fields(blocks, LAYOUTS[type_name], scale, np.random.Generator(bits))
    return raw


def _set_block_fields(blocks: npt.NDArray[np.uint8], layout: _Layout, scale: float, rng: np.random.Generator) -> None:
    """Masks and scales of random blocks: each block's scale drawn log-normally about ``scale`` (its mean square
    kept: E[f^2] = 1), and its min, where the type has one, about ``min_per_scale`` times its own scale."""
    import numpy as np

    for start, stop, mask in layout.masks:
        blocks[:, start:stop] &= mask
    n_blocks = len(blocks)
    factors = np.exp(SCALE_SPREAD * rng.standard_normal(n_blocks) - SCALE_SPREAD ** 2)
    scales = np.clip(scale * factors, _MIN_NORMAL_FP16, _MAX_FP16)
    _set_fp16(blocks, layout.scale_offsets, scales)
    if layout.min_offsets:
        spread = np.exp(MIN_SPREAD * rng.standard_normal(n_blocks) - MIN_SPREAD ** 2 / 2)   # mean 1
        mins = np.clip(layout.min_per_scale * scales * spread, -_MAX_FP16, _MAX_FP16)
        _set_fp16(blocks, layout.min_offsets, mins)


def constant_chunk(type_name: str, n_elements: int, value: float) -> bytes:
    """``n_elements`` copies of ``value`` in a float type (norm weights, biases, RoPE factors)."""
    return values_chunk(type_name, [value] * n_elements)


def values_chunk(type_name: str, values: list[float]) -> bytes:
    """``values`` in a float type, little-endian."""
    import numpy as np

    as_f32 = np.asarray(values, dtype="<f4")
    if type_name == "F32":
        return as_f32.tobytes()
    if type_name == "F16":
        return as_f32.astype("<f2").tobytes()
    if type_name == "BF16":
        return (as_f32.view("<u4") >> 16).astype("<u2").tobytes()
    raise ValueError(f"{type_name} is not a float type")   # our bug: callers check


def _set_fp16(blocks: npt.NDArray[np.uint8], offsets: tuple[int, ...], values: float | npt.NDArray[np.float64]) -> None:
    """One fp16 field of every block: one value for all, or one per block."""
    import numpy as np

    as_bytes = np.broadcast_to(np.asarray(values, dtype="<f2"), (len(blocks),)).copy().view(np.uint8).reshape(-1, 2)
    for offset in offsets:
        blocks[:, offset:offset + 2] = as_bytes


@functools.cache
def _rms_at_unit_scale(type_name: str) -> float:
    """The weights' rms with the scale level at 1.0 (scales and mins varying as ``random_chunk`` varies them), from
    gguf-py's reference dequantizer on 4096 random blocks."""
    import numpy as np
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize

    n_blocks, block_bytes = 4096, type_size(type_name)[1]
    bits = np.random.PCG64(0)
    raw = bits.random_raw(-(-n_blocks * block_bytes // 8)).view(np.uint8)[:n_blocks * block_bytes].copy()
    blocks = raw.reshape(n_blocks, block_bytes)
    _set_block_fields(blocks, LAYOUTS[type_name], 1.0, np.random.Generator(bits))
    weights = dequantize(blocks, GGMLQuantizationType[type_name]).astype(np.float64)
    return float(np.sqrt(np.mean(weights * weights)))
