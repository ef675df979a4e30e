"""Proxy models: the table, llama-quantize's type rules, the exact size, the errors, and real loads in llama.cpp.

The type rules are checked twice: by hand on the published configurations, and against llama.cpp's own
``llama_model_quantize`` run on small F16 proxies (in a subprocess: only the worker loads llama.cpp here).
"""

import json
import math
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from pytest_axion.proxy import (
    PROXY_SPECS,
    SUPPORTED_QUANTIZATIONS,
    Llama3Rope,
    ProxyError,
    ProxySpec,
    blocks,
    default_layers,
    ensure_proxy,
    ggufio,
    known_spec,
    parse_proxy_spec,
    proxy_cache_path,
    proxy_size_bytes,
    read_proxy_info,
    spec_from_gguf,
    tensor_types,
    write_proxy,
    writer,
)
from pytest_axion.proxy.quant import use_more_bits
from pytest_axion.proxy.spec import tensor_table
from pytest_axion.proxy.tokenizer import TOKEN_TYPE_UNUSED, donor_tokenizer, fit_tokenizer
from pytest_axion.proxy.writer import plan_proxy, select_layers

SMOL = "smollm2-135m"


def tiny(name="tiny", architecture="llama", **changes):
    """A small dense model: rows of 320 are not a multiple of 256, so K-quants fall back on some tensors."""
    figures = dict(n_layers=12, d_model=320, d_ffn=768, n_heads=5, n_kv_heads=1, head_dim=64, vocab_size=4096,
                   context_length=2048, rope_freq_base=10000.0, rms_eps=1e-5)
    return ProxySpec(name, architecture, **{**figures, **changes})


def one_line(err):
    message = str(err.value)
    assert "\n" not in message and message
    return message


# -- the table ------------------------------------------------------------------------------------------------


def test_the_table_holds_the_published_configurations():
    assert {"llama-3.3-70b", "llama-3.1-8b", "qwen2.5-7b", "mistral-7b", SMOL} <= set(PROXY_SPECS)
    big = known_spec("llama-3.3-70b")
    assert (big.n_layers, big.d_model, big.d_ffn, big.n_heads, big.n_kv_heads, big.head_dim, big.vocab_size) == (
        80, 8192, 28672, 64, 8, 128, 128256)
    assert (big.rope_freq_base, big.rms_eps, big.tied_embeddings) == (500000.0, 1e-5, False)
    assert big.llama3_rope == Llama3Rope(8.0, 1.0, 4.0, 8192)
    qwen = known_spec("qwen2.5-7b")
    assert (qwen.architecture, qwen.qkv_bias, qwen.vocab_size, qwen.rope_freq_base) == ("qwen2", True, 152064, 1e6)
    assert "attn_q.bias" in {t.name.split(".", 2)[2] for t in tensor_table(qwen) if t.layer == 0}
    assert known_spec("mistral-7b").vocab_size == 32768 and known_spec("mistral-7b").llama3_rope is None
    for spec in PROXY_SPECS.values():
        assert spec.head_dim * spec.n_heads >= spec.d_model // 2 and spec.n_heads % spec.n_kv_heads == 0


def test_the_smollm2_entry_is_the_embedded_models_header(model_path):
    from_file, table = spec_from_gguf(model_path), known_spec(SMOL)
    fields = ("architecture", "n_layers", "d_model", "d_ffn", "n_heads", "n_kv_heads", "head_dim", "vocab_size",
              "context_length", "rope_freq_base", "tied_embeddings", "qkv_bias")
    assert {f: getattr(from_file, f) for f in fields} == {f: getattr(table, f) for f in fields}
    assert from_file.rms_eps == pytest.approx(table.rms_eps)
    assert sorted((t.name, t.dims) for t in from_file.like_tensors) == sorted(
        (t.name, t.dims) for t in tensor_table(table))


def test_llama3_rope_factors_run_from_1_to_the_scaling_factor():
    factors = Llama3Rope().factors(128, 500000.0)
    assert len(factors) == 64 and factors[0] == 1.0 and factors[-1] == 8.0
    assert factors == sorted(factors) and any(1.0 < f < 8.0 for f in factors)


# -- the spec string --------------------------------------------------------------------------------------------


def test_proxy_spec_strings_parse():
    assert parse_proxy_spec("proxy:llama-3.3-70b:4") == ("llama-3.3-70b", 4)
    assert parse_proxy_spec("proxy:llama-3.1-8b") == ("llama-3.1-8b", None)


@pytest.mark.parametrize(("text", "expected"), [
    ("llama-3.3-70b", "not a proxy spec"),
    ("proxy:", "malformed"),
    ("proxy:a:1:2", "malformed"),
    ("proxy:llama-4:2", "known are llama-3.3-70b"),
    ("proxy:llama-3.3-70b:two", "not a whole number"),
    ("proxy:llama-3.3-70b:0", "at least 1 layer"),
    ("proxy:llama-3.3-70b:-2", "at least 1 layer"),
    ("proxy:llama-3.3-70b:81", "has 80 layers"),
])
def test_bad_proxy_spec_strings_are_one_line_errors(text, expected):
    with pytest.raises(ProxyError) as err:
        parse_proxy_spec(text)
    assert expected in one_line(err)


def test_proxy_requests_name_a_model_or_a_file_like_which_to_build():
    from pytest_axion.proxy.spec import ProxyRequest, parse_proxy_request

    assert parse_proxy_request("proxy:llama-3.3-70b:4") == ProxyRequest("llama-3.3-70b", None, 4, None)
    assert parse_proxy_request("proxy:llama-3.3-70b:2:Q4_K_M") == ProxyRequest("llama-3.3-70b", None, 2, "Q4_K_M")
    assert parse_proxy_request("proxy:llama-3.1-8b:Q8_0") == ProxyRequest("llama-3.1-8b", None, None, "Q8_0")
    # a file's path may hold colons of its own; only what follows ".gguf" is the layer count
    assert parse_proxy_request("proxy:/m/a:b/Llama.GGUF:4") == ProxyRequest(None, Path("/m/a:b/Llama.GGUF"), 4, None)
    assert parse_proxy_request("proxy:m.gguf") == ProxyRequest(None, Path("m.gguf"), None, None)


@pytest.mark.parametrize(("text", "expected"), [
    ("proxy:m.gguf:Q4_0", "takes no quantization"),
    ("proxy:m.gguf:2:3", "write nothing or :LAYERS"),
    ("proxy:llama-3.3-70b:-2", "at least 1 layer"),
    ("m.gguf", "not a proxy spec"),
])
def test_bad_proxy_requests_are_one_line_errors(text, expected):
    from pytest_axion.proxy.spec import parse_proxy_request

    with pytest.raises(ProxyError) as err:
        parse_proxy_request(text)
    assert expected in one_line(err)


def test_a_request_like_a_file_reads_its_header_and_checks_the_layers(tmp_path):
    from pytest_axion.proxy.spec import parse_proxy_request

    source = write_proxy(tiny(), layers=12, quantization="Q4_K_M", path=tmp_path / "full.gguf")
    assert parse_proxy_request(f"proxy:{source.path}:2").spec().like_file_type == "Q4_K_M"
    for text, expected in ((f"proxy:{source.path}:13", "has 12 layers"), (f"proxy:{source.path}:0", "at least 1"),
                           (f"proxy:{tmp_path / 'none.gguf'}:2", "no such file")):
        with pytest.raises(ProxyError) as err:
            parse_proxy_request(text).spec()
        assert expected in one_line(err), text


# -- llama-quantize's type rules ---------------------------------------------------------------------------------


def test_use_more_bits_is_the_first_and_last_eighth_and_every_third_between():
    assert [i for i in range(32) if use_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_q4_k_m_of_llama_70b_gives_attn_v_more_bits_and_ffn_down_q6_k_where_llama_cpp_does():
    types = tensor_types(known_spec("llama-3.3-70b"), "Q4_K_M")
    more_bits = [i for i in range(80) if use_more_bits(i, 80)]
    assert len(more_bits) == 40
    for i in range(80):
        assert types[f"blk.{i}.attn_v.weight"] == ("Q6_K" if i in more_bits else "Q5_K")   # the 70B bump
        assert types[f"blk.{i}.ffn_down.weight"] == ("Q6_K" if i in more_bits else "Q4_K")
        assert types[f"blk.{i}.attn_q.weight"] == types[f"blk.{i}.ffn_up.weight"] == "Q4_K"
        assert types[f"blk.{i}.attn_norm.weight"] == "F32"
    assert (types["output.weight"], types["token_embd.weight"], types["rope_freqs.weight"]) == ("Q6_K", "Q4_K", "F32")


def test_an_8b_model_has_no_70b_bump():
    types = tensor_types(known_spec("llama-3.1-8b"), "Q4_K_M")
    assert Counter(types[f"blk.{i}.attn_v.weight"] for i in range(32)) == {"Q6_K": 16, "Q4_K": 16}


def test_q4_0_q8_0_and_f16_choices():
    spec = known_spec("llama-3.1-8b")
    q4 = tensor_types(spec, "Q4_0")
    assert (q4["output.weight"], q4["token_embd.weight"], q4["blk.5.ffn_down.weight"]) == ("Q6_K", "Q4_0", "Q4_0")
    assert set(tensor_types(spec, "Q8_0").values()) == {"Q8_0", "F32"}
    assert set(tensor_types(spec, "F16").values()) == {"F16", "F32"}


def test_rows_a_block_does_not_divide_fall_back_as_llama_cpp_does():
    types = tensor_types(known_spec(SMOL), "Q4_K_M")   # rows of 576: not a multiple of 256
    assert types["token_embd.weight"] == "Q8_0"          # tied: the output's rule, then Q6_K's fallback
    assert types["blk.0.attn_q.weight"] == types["blk.0.ffn_gate.weight"] == "Q5_0"
    assert (types["blk.0.attn_v.weight"], types["blk.3.attn_v.weight"]) == ("Q8_0", "Q5_0")
    assert (types["blk.0.ffn_down.weight"], types["blk.3.ffn_down.weight"]) == ("Q6_K", "Q4_K")   # rows of 1536


def test_an_unsupported_quantization_lists_the_supported_ones():
    for quantization in ("Q3_K_M", None):
        with pytest.raises(ProxyError) as err:
            plan_proxy(known_spec(SMOL), layers=2, quantization=quantization)
        assert "Q4_K_M" in one_line(err) and "Q8_0" in one_line(err)


_QUANTIZE = """
import ctypes, sys
import llama_cpp
llama_cpp.llama_backend_init()
quiet = llama_cpp.llama_log_callback(lambda level, text, data: None)
llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
for job in sys.argv[1:]:
    source, ftype, target = job.split("|")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + ftype), 1
    assert llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params)) == 0, job
"""


def test_the_type_rules_match_llama_cpps_own_quantizer(tmp_path):
    """llama_model_quantize on small F16 proxies picks, tensor by tensor, the types tensor_types predicts."""
    sources = {
        "tiny": (tiny(), SUPPORTED_QUANTIZATIONS),
        # 80 layers with grouped-query attention: llama.cpp's 70B rule; rows of 64 make every K-quant fall back
        "deep": (tiny(n_layers=80, d_model=64, d_ffn=128, n_heads=2, n_kv_heads=1, head_dim=32, vocab_size=512),
                 ("Q4_K_M", "Q4_K_S")),
        "qwen": (tiny(architecture="qwen2", n_layers=80, d_model=256, d_ffn=256, n_heads=4, n_kv_heads=2,
                      head_dim=64, vocab_size=512, qkv_bias=True, tied_embeddings=True), ("Q4_K_M", "Q4_0")),
    }
    jobs, expected = [], {}
    for name, (spec, quantizations) in sources.items():
        source = write_proxy(spec, layers=spec.n_layers, quantization="F16", path=tmp_path / f"{name}.gguf").path
        as_file = spec_from_gguf(source)
        for quantization in quantizations:
            target = tmp_path / f"{name}-{quantization}.gguf"
            jobs.append(f"{source}|{quantization}|{target}")
            expected[target] = tensor_types(as_file, quantization)
    subprocess.run([sys.executable, "-c", _QUANTIZE, *jobs], check=True, timeout=300)
    for target, predicted in expected.items():
        made = {t.name: t.type_name for t in spec_from_gguf(target).like_tensors}
        assert made == predicted, target.name
    assert Counter(expected[tmp_path / "deep-Q4_K_M.gguf"].values())["Q5_1"] == 40   # 70B: Q5_K, then its fallback


# -- layer choice, size, default layers ----------------------------------------------------------------------------


def test_proxy_layers_mix_tensor_types_as_the_full_model_does():
    spec = known_spec("llama-3.3-70b")
    types = tensor_types(spec, "Q4_K_M")

    def q6_share(layers):
        return sum(types[f"blk.{i}.ffn_down.weight"] == "Q6_K" for i in layers) / len(layers)

    assert q6_share(select_layers(spec, types, 2)) == 0.5 and q6_share(select_layers(spec, types, 8)) == 0.5
    assert select_layers(spec, types, 80) == list(range(80))
    assert len(set(select_layers(spec, types, 7))) == 7


def test_the_size_is_computed_exactly_before_writing():
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    def n_bytes(type_name, *dims):
        block_elements, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
        return -(-math.prod(dims) // block_elements * block_bytes // 32) * 32

    spec = known_spec("llama-3.3-70b")
    layer = (n_bytes("Q4_0", 8192, 8192) * 2 + n_bytes("Q4_0", 8192, 1024) * 2 + n_bytes("Q4_0", 8192, 28672) * 3
             + n_bytes("F32", 8192) * 2)
    data = (n_bytes("Q4_0", 8192, 128256) + n_bytes("Q6_K", 8192, 128256) + n_bytes("F32", 8192) + n_bytes("F32", 64)
            + 2 * layer)
    plan = plan_proxy(spec, layers=2, quantization="Q4_0")
    assert plan.size_bytes == len(plan.header) + data == proxy_size_bytes(spec, layers=2, quantization="Q4_0")
    assert 2.2e9 < plan.size_bytes < 2.5e9 and len(plan.header) % 32 == 0


def test_default_layers_keep_the_full_models_memory_regime():
    big, small = known_spec("llama-3.3-70b"), known_spec(SMOL)
    assert default_layers(big, "Q4_0", last_level_cache_bytes=32 << 20) == 2
    assert default_layers(big, "Q4_0", last_level_cache_bytes=1 << 40) == 80   # a cache bigger than the model
    layers_by_cache = [default_layers(big, "Q4_K_M", last_level_cache_bytes=mib << 20) for mib in (256, 1024, 4096)]
    assert layers_by_cache == sorted(layers_by_cache) and 2 < layers_by_cache[-1] < 80
    assert default_layers(small, "Q4_0", last_level_cache_bytes=32 << 20) == 30   # cache-sized: all its layers
    assert default_layers(small, "Q4_0", last_level_cache_bytes=1 << 20) == 2
    assert default_layers(small, "Q4_0", last_level_cache_bytes=0) == 30          # unknown: assumed large


# -- random blocks ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", blocks.WRITABLE_TYPES)
def test_random_blocks_are_finite_with_the_planned_spread(type_name):
    import numpy as np
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize

    block_elements, block_bytes = blocks.type_size(type_name)
    n_blocks = 8192 // block_elements
    raw = blocks.random_chunk(type_name, n_blocks, 256, np.random.PCG64(7))
    assert raw.nbytes == n_blocks * block_bytes
    if type_name in ("F32", "F16"):
        weights = raw.view("<f4" if type_name == "F32" else "<f2").astype(np.float64)
    else:
        weights = dequantize(raw.reshape(n_blocks, block_bytes), GGMLQuantizationType[type_name]).astype(np.float64)
    rms = math.sqrt(float(np.mean(weights * weights)))
    assert np.isfinite(weights).all() and 0.5 < rms * 16 < 2.0   # 1/sqrt(256): a Xavier-like spread


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K"])
def test_block_scales_vary_as_a_real_models_do(type_name):
    """One scale per tensor let llama.cpp's fp16 lookup table stay in cache: a proxy 13-16% faster than its model."""
    import numpy as np

    layout = blocks.LAYOUTS[type_name]
    block_bytes = blocks.type_size(type_name)[1]
    n_blocks = 4096
    raw = blocks.random_chunk(type_name, n_blocks, 576, np.random.PCG64(3)).reshape(n_blocks, block_bytes)

    def field(offset: int) -> np.ndarray:
        return raw[:, offset:offset + 2].copy().view("<f2").ravel().astype(np.float64)

    scales = field(layout.scale_offsets[0])
    assert len(np.unique(scales)) > 500 and (scales > 0).all()
    assert np.std(np.log(scales)) == pytest.approx(blocks.SCALE_SPREAD, abs=0.02)
    if layout.min_offsets:
        ratio = field(layout.min_offsets[0]) / scales
        assert np.median(ratio) == pytest.approx(layout.min_per_scale, rel=0.05)
        assert np.std(np.log(ratio / layout.min_per_scale)) == pytest.approx(blocks.MIN_SPREAD, abs=0.02)


# -- the tokenizer ---------------------------------------------------------------------------------------------------


def test_the_donor_tokenizer_is_padded_with_unused_tokens(model_path):
    donor = donor_tokenizer(model_path)
    padded = fit_tokenizer(donor, 128256)
    assert len(padded.tokens) == len(padded.token_types) == 128256 and len(set(padded.tokens)) == 128256
    assert padded.tokens[:49152] == donor.tokens and padded.merges == donor.merges
    assert set(padded.token_types[49152:]) == {TOKEN_TYPE_UNUSED}


def test_a_smaller_vocabulary_keeps_the_donors_first_tokens_and_their_merges(model_path):
    donor = donor_tokenizer(model_path)
    cut = fit_tokenizer(donor, 1000)
    kept = set(cut.tokens)
    assert len(cut.tokens) == 1000 and 0 < len(cut.merges) < len(donor.merges)
    assert all(a in kept and b in kept and a + b in kept for a, b in (m.split(" ") for m in cut.merges))
    with pytest.raises(ProxyError) as err:
        fit_tokenizer(donor, donor.min_vocab_size - 1)
    assert f"at least {donor.min_vocab_size}" in one_line(err)


# -- writing, reading, errors ------------------------------------------------------------------------------------------


def test_a_written_proxy_names_what_it_stands_for(tmp_path, model_path):
    info = write_proxy(known_spec(SMOL), layers=3, quantization="Q4_0", path=tmp_path / "p.gguf", seed=5)
    read = read_proxy_info(info.path)
    assert read == info and Path(info.path).stat().st_size == info.size_bytes
    assert (read.of, read.n_layers, read.full_layers, read.quantization, read.seed) == (SMOL, 3, 30, "Q4_0", 5)
    assert read_proxy_info(model_path) is None
    header = ggufio.read_header(info.path)
    assert header.value("general.name").startswith("proxy of smollm2-135m: 3 of 30 layers")
    assert header.value("llama.block_count") == 3 and header.value("general.file_type") == 2
    assert [p.name for p in tmp_path.iterdir()] == ["p.gguf"]


def test_a_failed_write_leaves_nothing_under_the_final_name(tmp_path, monkeypatch):
    target = tmp_path / "p.gguf"
    target.write_bytes(b"the previous file")
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    real = blocks.random_chunk
    monkeypatch.setattr(blocks, "random_chunk", failing)
    with pytest.raises(OSError):
        write_proxy(known_spec(SMOL), layers=2, quantization="Q4_0", path=target)
    assert target.read_bytes() == b"the previous file" and [p.name for p in tmp_path.iterdir()] == ["p.gguf"]


def test_no_room_on_disk_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(writer.shutil, "disk_usage", lambda folder: type("U", (), {"free": 1 << 20})())
    target = tmp_path / "new" / "p.gguf"
    with pytest.raises(ProxyError) as err:
        write_proxy(known_spec(SMOL), layers=2, quantization="Q4_0", path=target)
    message = one_line(err)
    assert "needs 0.03 GiB" in message and "0.00 GiB free" in message and not (tmp_path / "new").exists()


@pytest.mark.parametrize(("layers", "seed", "expected"), [(0, 0, "at least 1 layer"), (-1, 0, "at least 1 layer"),
                                                         (31, 0, "has 30 layers"), (2, -1, "seed")])
def test_bad_layer_counts_and_seeds_write_nothing(tmp_path, layers, seed, expected):
    with pytest.raises(ProxyError) as err:
        write_proxy(known_spec(SMOL), layers=layers, quantization="Q4_0", path=tmp_path / "p.gguf", seed=seed)
    assert expected in one_line(err) and not list(tmp_path.iterdir())


def test_unknown_model_names_list_the_known_ones():
    with pytest.raises(ProxyError) as err:
        known_spec("gpt-5")
    assert all(name in one_line(err) for name in PROXY_SPECS)


@pytest.mark.parametrize(("content", "expected"), [
    (b"version https://git-lfs.github.com/spec/v1\n", "not a GGUF model"),
    (b"", "not a GGUF model"),
    (None, "no such file"),
])
def test_like_a_file_that_is_not_gguf_is_one_line(tmp_path, content, expected):
    path = tmp_path / "m.gguf"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ProxyError) as err:
        spec_from_gguf(path)
    assert expected in one_line(err) and str(path) in one_line(err)


def test_like_a_mixture_of_experts_is_refused(tmp_path):
    kvs = [ggufio.Kv("general.architecture", ggufio.STRING, "llama"), ggufio.Kv("llama.block_count", ggufio.UINT32, 1),
           ggufio.Kv("llama.expert_count", ggufio.UINT32, 8)]
    tensors = [("token_embd.weight", (64, 512), 0, 64 * 512 * 4), ("blk.0.ffn_gate_exps.weight", (64, 128, 8), 0, 4)]
    path = tmp_path / "moe.gguf"
    path.write_bytes(ggufio.encode_header(kvs, tensors))   # a header alone is enough to read a spec
    with pytest.raises(ProxyError) as err:
        spec_from_gguf(path)
    assert "routing makes random weights unrepresentative" in one_line(err)


def test_like_a_header_alone_gives_the_files_shapes_and_types(tmp_path):
    source = write_proxy(tiny(), layers=12, quantization="Q4_K_M", path=tmp_path / "full.gguf")
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(Path(source.path).read_bytes()[:len(plan_proxy(tiny(), layers=12,
                                                                            quantization="Q4_K_M").header)])
    like = spec_from_gguf(header_only)
    assert (like.n_layers, like.d_model, like.vocab_size, like.like_file_type) == (12, 320, 4096, "Q4_K_M")
    assert {t.name: t.type_name for t in like.like_tensors} == tensor_types(tiny(), "Q4_K_M")


# -- the cache -----------------------------------------------------------------------------------------------------


def test_the_cache_path_names_model_layers_quantization_and_llama_cpp_version(tmp_path):
    path = proxy_cache_path("llama-3.3-70b", 2, "Q4_K_M", "0.3.36", cache_dir=tmp_path)
    assert path.parent == tmp_path / "proxies" / "llama.cpp-0.3.36"
    assert path.name.startswith("llama-3.3-70b.2L.Q4_K_M.") and path.suffix == ".gguf"
    assert proxy_cache_path("a/b", 2, "Q4_0", "x y", cache_dir=tmp_path).parent.parent == tmp_path / "proxies"


def test_ensure_proxy_builds_once_even_when_two_ask_at_once(tmp_path, monkeypatch):
    built = []
    real = writer.write_proxy
    monkeypatch.setattr(writer, "write_proxy", lambda *a, **k: built.append(1) or real(*a, **k))
    results = []

    def ask():
        results.append(ensure_proxy(known_spec(SMOL), layers=2, quantization="Q4_0", llama_cpp_version="t",
                                    cache_dir=tmp_path))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1 and len(results) == 2 and results[0] == results[1]
    assert ensure_proxy(known_spec(SMOL), layers=2, quantization="Q4_0", llama_cpp_version="t",
                        cache_dir=tmp_path) == results[0] and len(built) == 1
    Path(results[0].path).write_bytes(b"GGUF cut short")   # a damaged cache entry is rebuilt, not trusted
    ensure_proxy(known_spec(SMOL), layers=2, quantization="Q4_0", llama_cpp_version="t", cache_dir=tmp_path)
    assert len(built) == 2


# -- real loads in llama.cpp ------------------------------------------------------------------------------------------


def _load_and_measure(path):
    from pytest_axion.engines.worker import EngineProcess

    engine = EngineProcess(sys.executable, model_path=str(path), threads=1)
    try:
        run = engine.run("prompt", repetitions=1, n_prompt=16)
        tokens = engine.count_tokens("Proxy models stand for big ones.")
        return engine.facts, run, tokens
    finally:
        engine.close()


@pytest.mark.parametrize("quantization", ["Q4_0", "Q8_0", "Q4_K_M"])
def test_a_proxy_of_the_embedded_shapes_loads_and_measures(tmp_path, quantization):
    info = write_proxy(known_spec(SMOL), layers=2, quantization=quantization, path=tmp_path / "p.gguf")
    facts, run, tokens = _load_and_measure(info.path)
    expected = {"Q4_0": "Q4_0", "Q8_0": "Q8_0", "Q4_K_M": "Q4_K - Medium"}[quantization]
    assert expected in facts.description and facts.n_vocab == 49152 and facts.n_ctx_train == 8192
    assert run.n_prompt == 16 and len(run.seconds) == 1 and run.seconds[0] > 0 and tokens > 3


@pytest.mark.parametrize(("vocab_size", "architecture"), [(50000, "qwen2"), (1000, "llama")])
def test_padded_and_cut_vocabularies_load_through_like(tmp_path, vocab_size, architecture):
    """A --like source with a vocabulary above and below the donor's: the proxy copies its types and loads."""
    spec = tiny(architecture=architecture, vocab_size=vocab_size, qkv_bias=architecture == "qwen2")
    source = write_proxy(spec, layers=12, quantization="Q4_K_M", path=tmp_path / "source.gguf")
    like = spec_from_gguf(source.path)
    info = write_proxy(like, layers=2, quantization=None, path=tmp_path / "proxy.gguf")
    assert (info.of, info.full_layers, info.quantization) == ("source.gguf", 12, "Q4_K_M")
    facts, run, tokens = _load_and_measure(info.path)
    assert facts.n_vocab == vocab_size and architecture in facts.description
    assert run.seconds[0] > 0 and tokens > 3



def test_a_run_measures_a_proxy_named_on_the_command_line_and_names_what_it_stands_for(pytester, tmp_path,
                                                                                    monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pytester.makepyfile("""
        import pytest

        @pytest.mark.axion_slo(prompt_tps=1)
        def test_prompt(axion):
            axion.prompt(32)
    """)
    report = tmp_path / "2L.json"
    result = pytester.runpytest("--axion-slo", f"--axion-model=proxy:{SMOL}:2", "--axion-repetitions=3",
                                "--axion-efficiency=off", "-p", "no:cacheprovider", f"--axion-report={report}")
    result.assert_outcomes(passed=1)
    [built] = (tmp_path / "cache" / "pytest-axion" / "proxies").rglob("*.gguf")
    assert built.name.startswith(f"{SMOL}.2L.")
    result.stdout.fnmatch_lines([f"axion: model {built.stem}*",
                                 f"model: {built.name} (*) loaded in *; proxy of {SMOL}: 2 of 30 layers, random "
                                 "Q4_0 weights*"])
    recorded = json.loads(report.read_text())
    assert recorded["model"]["proxy"] == {"of": SMOL, "layers": 2, "full_layers": 30, "quantization": "Q4_0",
                                          "seed": recorded["model"]["proxy"]["seed"]}
    # the same suite on 4 layers, predicting the full model from both runs: in the summary and the report (3
    # repetitions each: an interval needs 3 samples per proxy)
    four = tmp_path / "4L.json"
    result = pytester.runpytest("--axion-slo", f"--axion-model=proxy:{SMOL}:4", "--axion-repetitions=3",
                                "--axion-efficiency=off", "-p", "no:cacheprovider", f"--axion-report={four}",
                                f"--axion-predict-from={report}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"prediction for {SMOL} (30 layers) from proxies of 2, 4 layers: *A prediction, "
                                 "not a measurement*",
                                 "*test_prompt*prompt_tps*pp32+tg0 x1*2L *, 4L *tokens/s*"])
    predicted = json.loads(four.read_text())["prediction"]
    assert predicted["of"] == SMOL and predicted["from_layers"] == [2, 4] and predicted["problem"] is None
    (row,) = predicted["rows"]
    assert set(row["measured"]) == {"2", "4"} and row["low"] is not None and row["low"] <= row["value"], row
    # with a core busy, a resampled line through 2 and 4 layers can give no positive time at 30 layers: the
    # rate's interval is then unbounded above, null in the report and "unbounded" in the summary
    assert row["high"] is None or row["value"] <= row["high"], row
    # ... and the command gives the same from the two reports
    from pytest_axion.cli import main

    capsys.readouterr()   # what the runs above printed
    assert main(["predict", str(report), str(four)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"predicted for {SMOL} at 30 layers from proxies of 2, 4 layers")
    assert f"{row['value']:.4g} tokens/s" in printed
    assert main(["predict", str(report)]) == 2
    assert "two or more layer counts, got [2]" in capsys.readouterr().err
    # a prediction needs a proxy run, and reports of proxies of the same model
    result = pytester.runpytest("--axion-slo", f"--axion-predict-from={report}", "-p", "no:cacheprovider")
    assert result.ret == 4 and "is not a proxy: measure one with --axion-model proxy:NAME:LAYERS" in result.stderr.str()
    result = pytester.runpytest("--axion-slo", f"--axion-model=proxy:{SMOL}:4",
                                f"--axion-predict-from={tmp_path / 'none.json'}", "-p", "no:cacheprovider")
    assert result.ret == 4 and "none.json" in result.stderr.str() and "Traceback" not in result.stderr.str()
    result = pytester.runpytest("--axion-slo", "--axion-model=proxy:no-such-model:2", "-p", "no:cacheprovider")
    assert result.ret == 4 and "no-such-model" in result.stderr.str() and "Traceback" not in result.stderr.str()


def test_a_run_measures_a_proxy_like_a_gguf_file_named_on_the_command_line(pytester, tmp_path, monkeypatch):
    """``--axion-model proxy:FILE.gguf:LAYERS``: the file's shapes and types, cut to LAYERS, built once and measured."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = write_proxy(tiny(), layers=12, quantization="Q4_K_M", path=tmp_path / "served-model.gguf")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.axion_slo(prompt_tps=1)
        def test_prompt(axion):
            axion.prompt(32)
    """)
    args = ("--axion-slo", f"--axion-model=proxy:{source.path}:2", "--axion-repetitions=3", "--axion-efficiency=off",
            "-p", "no:cacheprovider")
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1)
    [built] = (tmp_path / "cache" / "pytest-axion" / "proxies").rglob("*.gguf")
    assert built.name.startswith("served-model.gguf-") and ".2L.Q4_K_M." in built.name
    result.stdout.fnmatch_lines(["model: * proxy of served-model.gguf: 2 of 12 layers, random Q4_K_M weights*"])
    built_at = built.stat().st_mtime_ns
    pytester.runpytest(*args).assert_outcomes(passed=1)   # the second run measures the cached proxy
    assert built.stat().st_mtime_ns == built_at
    result = pytester.runpytest("--axion-slo", f"--axion-model=proxy:{source.path}:13", "-p", "no:cacheprovider")
    assert result.ret == 4 and "has 12 layers" in result.stderr.str() and "Traceback" not in result.stderr.str()


def test_the_proxy_command_writes_a_proxy_and_bad_requests_are_one_line(tmp_path, capsys):
    from pytest_axion.cli import main

    target = tmp_path / "p.gguf"
    assert main(["proxy", f"{SMOL}:2", "--out", str(target)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{target}\nproxy of {SMOL} (2 of 30 layers, Q4_0)") and target.stat().st_size > 0
    for argv, expected in ((["proxy", "no-such-model"], "no-such-model"),
                           (["proxy", SMOL, "--layers", "0", "--out", str(tmp_path / "z.gguf")], "at least 1 layer"),
                           (["proxy", f"{SMOL}:2", "--quant", "Q3_XX", "--out", str(tmp_path / "q.gguf")], "Q3_XX"),
                           (["proxy", "--like", str(tmp_path / "missing.gguf")], "no such file"),
                           (["proxy"], "name a known model")):
        assert main(argv) == 2, argv
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and expected in error, (argv, error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.gguf"]   # nothing else written
