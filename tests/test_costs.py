"""Bytes and operations per token from a GGUF tensor table whose sizes are known (pure; one real-model check)."""

import struct

import pytest

from pytest_axion.machine.costs import CostsError, model_costs
from pytest_axion.machine.gguf import read_gguf_info
from tests.test_gguf import gguf_bytes, write


def u32(key, value):
    return (key, 4, struct.pack("<I", value))


def string(key, text):
    return (key, 8, struct.pack("<Q", len(text)) + text.encode())


# Two layers, 8-wide, 2 query heads and 1 KV head of 4, vocabulary 10, every tensor F32 (4 bytes an element).
LAYER = [("attn_norm.weight", (8,)), ("attn_q.weight", (8, 8)), ("attn_k.weight", (8, 4)), ("attn_v.weight", (8, 4)),
         ("attn_output.weight", (8, 8)), ("ffn_up.weight", (8, 16)), ("ffn_down.weight", (16, 8))]
TENSORS = [("token_embd.weight", (8, 10)), *[(f"blk.{i}.{name}", dims) for i in range(2) for name, dims in LAYER],
           ("output_norm.weight", (8,))]
META = [string("general.architecture", "llama"), u32("llama.block_count", 2), u32("llama.embedding_length", 8),
        u32("llama.attention.head_count", 2), u32("llama.attention.head_count_kv", 1)]


def costs_of(tmp_path, tensors=TENSORS, kvs=META):
    return model_costs(read_gguf_info(write(tmp_path, gguf_bytes(tensors=tensors, kvs=kvs))))


def test_tied_embedding_is_read_whole_every_step(tmp_path):
    costs = costs_of(tmp_path)
    # per layer 32 + 256 + 128 + 128 + 256 + 512 + 512 = 1824 bytes; x2, + output_norm 32, + the embedding 320
    assert costs.tied_embedding and costs.step_weight_bytes == 2 * 1824 + 32 + 320 == 4000
    # matrices: per layer 64 + 32 + 32 + 64 + 128 + 128 = 448, x2, + the embedding as output matrix 80
    assert costs.matrix_params == 976 and costs.head_dim == 4 and costs.n_head_kv == 1
    assert costs.kv_bytes_per_position == 2 * 2 * 1 * 4 * 2 == 32
    assert costs.gen_step_bytes(2, 10) == 4000 + 2 * 10 * 32
    assert costs.gen_step_ops(2, 10) == 2 * (2 * 976 + 4 * 2 * 2 * 4 * 10)
    assert costs.prompt_ops(4) == 4 * 2 * 976 + 2 * 2 * 2 * 4 * 16
    # 8 tokens in micro-batches of 3: the weights three times, plus the KV cache written
    assert costs.prompt_bytes(4, 2, 3) == 3 * 4000 + 8 * 32


def test_separate_output_matrix_reads_only_the_embedding_rows(tmp_path):
    costs = costs_of(tmp_path, tensors=[*TENSORS, ("output.weight", (8, 10))])
    assert not costs.tied_embedding
    assert costs.step_weight_bytes == 2 * 1824 + 32 + 320   # output.weight instead of the embedding
    assert costs.embedding_row_bytes == 32                  # 8 floats
    assert costs.gen_step_bytes(2, 10) == 4000 + 2 * 32 + 2 * 10 * 32
    assert costs.matrix_params == 976


def test_missing_attention_metadata_is_a_one_line_error(tmp_path):
    with pytest.raises(CostsError, match=r"m\.gguf: the GGUF has no llama\.attention\.head_count"):
        costs_of(tmp_path, kvs=META[:3])


def test_mixture_of_experts_is_refused_not_overcounted(tmp_path):
    with pytest.raises(CostsError, match="mixture of 8 experts"):
        costs_of(tmp_path, kvs=[*META, u32("llama.expert_count", 8)])


def test_embedded_model_costs(model_path):
    info = read_gguf_info(model_path)
    costs = model_costs(info)
    # SmolLM2-135M ties its embedding: every tensor is read each step; 30 layers, 3 KV heads of 64
    assert costs.tied_embedding and costs.step_weight_bytes == sum(t.n_bytes for t in info.tensors)
    assert costs.kv_bytes_per_position == 2 * 30 * 3 * 64 * 2
    assert 130e6 < costs.matrix_params < 140e6
