"""Which type each tensor gets, as llama.cpp's ``llama-quantize`` chooses it for a file type.

Re-implemented (not copied) from llama.cpp's ``src/llama-quant.cpp`` at commit 0c1e570 (the tree
llama-cpp-python 0.3.36 builds): ``llama_ftype_get_default_type``, ``tensor_allows_quantization``,
``tensor_get_category``, ``llama_tensor_get_type_impl`` and ``tensor_type_fallback``, for the file types
in :data:`SUPPORTED_QUANTIZATIONS`, without an importance matrix or user overrides, dense models only.
``tests/test_proxy.py`` checks the result against llama.cpp's own ``llama_model_quantize``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_axion.proxy.spec import ProxyError, ProxySpec, TensorShape, tensor_table

# File type (as llama-quantize names it) -> the default tensor type (llama_ftype_get_default_type).
DEFAULT_TYPES: dict[str, str] = {
    "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q8_0": "Q8_0",
    "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K", "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K",
    "F16": "F16", "BF16": "BF16",
}
SUPPORTED_QUANTIZATIONS = tuple(DEFAULT_TYPES)
_FLOAT_TYPES = ("F32", "F16", "BF16", "F64")
# tensor_type_fallback: a type whose block does not divide the row length falls back to a 32-block one.
_FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "TQ1_0": "Q4_0",
             "TQ2_0": "Q4_0", "IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL",
             "IQ2_S": "IQ4_NL", "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL", "IQ4_XS": "IQ4_NL"}
# tensor_allows_quantization: substrings of tensors kept in their source type (those a dense model can have).
_NOT_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj",
                  "ssm_conv1d", "shortconv.conv.weight", "attn_rel_b.weight", "time_mix_first.weight",
                  ".position_embd", "position_embd.weight", "token_types.weight")
_ATTN_V_LIKE = ("attn_v", "attn_qkv", "attn_kv_b")


def check_quantization(quantization: str) -> None:
    """A ProxyError naming the supported file types unless ``quantization`` is one."""
    if quantization not in DEFAULT_TYPES:
        raise ProxyError(f"unsupported proxy quantization {quantization!r}: supported are "
                         f"{', '.join(SUPPORTED_QUANTIZATIONS)}")


def file_type_id(quantization: str) -> int:
    """general.file_type for the file type (llama.cpp's LLAMA_FTYPE_MOSTLY_*)."""
    from gguf.constants import LlamaFileType

    return int(LlamaFileType["MOSTLY_" + quantization])


def block_size(type_name: str) -> int:
    """Elements per block of a ggml type (1 for the float types)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[type_name]][0]


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's rule for Q4_K_M / Q5_K_M: the first and last eighth of the layers and every third between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def category(name: str) -> str:
    """tensor_get_category: output, token_embd, attn_qkv, attn_kv_b, attn_v, attn_k, attn_q, ... or other."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part in ("attn_qkv", "attn_kv_b", "attn_v", "attn_k", "attn_q", "attn_output"):
        if f"{part}.weight" in name:
            return part
    for part in ("ffn_up", "ffn_gate", "ffn_down"):
        if part in name:
            return part
    return "other"


def allows_quantization(tensor: TensorShape) -> bool:
    """tensor_allows_quantization: 2-D or larger weights, not norms and a few small special tensors."""
    return (len(tensor.dims) >= 2 and tensor.name.endswith("weight")
            and not any(part in tensor.name for part in _NOT_QUANTIZED))


@dataclass
class _Counters:
    """quantize_state_impl's running counts: attn_v-like tensors and ffn_down tensors seen so far."""

    n_attention_wv: int
    n_ffn_down: int
    i_attention_wv: int = 0
    i_ffn_down: int = 0


def tensor_types(spec: ProxySpec, quantization: str) -> dict[str, str]:
    """Each tensor of the full model (name -> ggml type name) as llama-quantize makes it for ``quantization``.

    Tensors are visited in the order llama.cpp's loader sorts them (by layer, then name), which is the order
    its counters (the i-th attn_v, the i-th ffn_down) assume.
    """
    check_quantization(quantization)
    default = DEFAULT_TYPES[quantization]
    table = tensor_table(spec)
    tied = all(t.name != "output.weight" for t in table)
    counters = _Counters(n_attention_wv=sum(category(t.name) in _ATTN_V_LIKE for t in table),
                         n_ffn_down=spec.n_layers)
    chosen: dict[str, str] = {}
    for tensor in sorted(table, key=lambda t: (-1 if t.layer is None else t.layer, t.name)):
        if not allows_quantization(tensor):
            chosen[tensor.name] = tensor.type_name or "F32"
        elif default in _FLOAT_TYPES:
            chosen[tensor.name] = default
        else:
            picked = _impl(spec, quantization, default, tensor, tied, counters)
            chosen[tensor.name] = _fallback(tensor, picked)
    return {t.name: chosen[t.name] for t in table}


def _is_70b(spec: ProxySpec) -> bool:
    """llama.cpp's LLM_TYPE_70B, which gives attn_v more bits (models/llama.cpp, models/qwen2.cpp)."""
    if spec.architecture == "llama":
        return spec.n_layers == 80 and spec.n_heads != spec.n_kv_heads
    return spec.architecture in ("qwen2", "deci", "olmo") and spec.n_layers == 80


def _impl(spec: ProxySpec, ftype: str, new_type: str, tensor: TensorShape, tied: bool, st: _Counters) -> str:
    """llama_tensor_get_type_impl for the supported file types (no imatrix, no experts)."""
    cat, falcon = category(tensor.name), spec.architecture == "falcon"
    if cat == "output" or (tied and cat == "token_embd"):
        if falcon or tensor.dims[0] % block_size(new_type):
            return "Q8_0"
        return new_type if new_type == "Q8_0" else "Q6_K"
    if cat in _ATTN_V_LIKE:   # a fused attn_qkv too: llama.cpp's own QKV branch comes after this one, never reached
        if ftype in ("Q4_K_M", "Q5_K_M") and use_more_bits(st.i_attention_wv, st.n_attention_wv):
            new_type = "Q6_K"
        elif ftype == "Q4_K_S" and st.i_attention_wv < 4:
            new_type = "Q5_K"
        if _is_70b(spec) and new_type in ("Q3_K", "Q4_K"):
            new_type = "Q5_K"   # 70B: 8 heads share attn_v, which is 8x smaller than attn_q: more bits cost little
        st.i_attention_wv += 1
    elif cat == "ffn_down":
        i_layer, n_layers = st.i_ffn_down, st.n_ffn_down
        if ftype == "Q4_K_M" and falcon:
            new_type = "Q6_K" if i_layer < n_layers // 16 else "Q5_K" if use_more_bits(i_layer, n_layers) else "Q4_K"
        elif ftype in ("Q4_K_M", "Q5_K_M") and use_more_bits(i_layer, n_layers):
            new_type = "Q6_K"
        elif ftype == "Q4_K_S" and not falcon and i_layer < n_layers // 8:
            new_type = "Q5_K"
        st.i_ffn_down += 1
    return new_type


def _fallback(tensor: TensorShape, new_type: str) -> str:
    """tensor_type_fallback: a row length the block does not divide gets a 32-block type, or F16."""
    row_length = tensor.dims[0]
    if row_length % block_size(new_type) == 0:
        return new_type
    fallback = _FALLBACK.get(new_type, new_type)
    return fallback if row_length % block_size(fallback) == 0 else "F16"
