"""How llama.cpp's own programs are built: the installed library's kernels, and only what it does not ship (pure
logic)."""

import pytest

from pytest_axion.serve.build import BuildError, cpu_has_amx, isa_cmake_args, provided_targets, targets_to_build

SPR_FLAGS = "flags\t\t: fpu avx512f avx512_vnni amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d"
ZEN4_FLAGS = "flags\t\t: fpu avx512f avx512_vnni avx512_bf16"


def test_an_amx_cpu_is_told_from_its_cpuinfo_flags():
    assert cpu_has_amx(f"processor\t: 0\n{SPR_FLAGS}\n")
    assert not cpu_has_amx(f"processor\t: 0\n{ZEN4_FLAGS}\n")
    assert not cpu_has_amx("model name\t: says amx_int8 in its name\n")   # only the flags line counts


def test_programs_leave_out_amx_only_where_the_library_was_built_without_it():
    without = "CPU : AVX512 = 1 | AVX512_VNNI = 1 | LLAMAFILE = 1 |"
    with_amx = "CPU : AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 |"
    assert isa_cmake_args(without, cpu_amx=True) == ("-DCMAKE_C_FLAGS=-mno-amx-int8", "-DCMAKE_CXX_FLAGS=-mno-amx-int8")
    assert isa_cmake_args(with_amx, cpu_amx=True) == ()
    assert isa_cmake_args(without, cpu_amx=False) == ()   # -march=native adds no AMX on a CPU without it


# cmake 3.25's --graphviz file of llama-server (llama.cpp of llama-cpp-python 0.3.36), cut to what matters
SERVER_GRAPH = r'''digraph "llama-server" {
node [
  fontsize = "12"
];
    "node43" [ label = "llama-server", shape = egg ];
    "node13" [ label = "llama-server-impl", shape = doubleoctagon ];
    "node43" -> "node13" [ style = dotted ] // llama-server -> llama-server-impl
    "node0" [ label = "cpp-httplib\n(vendor::cpp-httplib)", shape = octagon ];
    "node13" -> "node0"  // llama-server-impl -> cpp-httplib
    "node15" [ label = "llama-ui-assets", shape = box ];
    "node13" -> "node15"  // llama-server-impl -> llama-ui-assets
    "node16" [ label = "server-context", shape = octagon ];
    "node13" -> "node16"  // llama-server-impl -> server-context
    "node7" [ label = "llama-common", shape = doubleoctagon ];
    "node16" -> "node7"  // server-context -> llama-common
    "node7" -> "node0" [ style = dotted ] // llama-common -> cpp-httplib
    "node4" [ label = "llama", shape = doubleoctagon ];
    "node7" -> "node4"  // llama-common -> llama
    "node1" [ label = "ggml\n(ggml::ggml)", shape = doubleoctagon ];
    "node4" -> "node1"  // llama -> ggml
    "node9" [ label = "nlohmann\n(vendor::nlohmann)", shape = pentagon ];
    "node7" -> "node9"  // llama-common -> nlohmann
    "node17" [ label = "mtmd", shape = doubleoctagon ];
    "node16" -> "node17"  // server-context -> mtmd
    "node17" -> "node1"  // mtmd -> ggml
    "node20" [ label = "vendor-hash\n(vendor::hash)", shape = octagon ];
    "node17" -> "node20" [ style = dotted ] // mtmd -> vendor-hash
}
'''


def test_only_what_the_installed_library_does_not_ship_is_built_dependencies_first():
    order = targets_to_build(SERVER_GRAPH, "llama-server", {"llama", "ggml", "mtmd"})
    # the libraries the wheel ships, and what only they need (vendor-hash, under mtmd), are left out; the
    # interface library nlohmann has nothing to compile
    assert order == ["cpp-httplib", "llama-ui-assets", "llama-common", "server-context", "llama-server-impl",
                     "llama-server"]
    everything = targets_to_build(SERVER_GRAPH, "llama-server", set())
    assert {"llama", "ggml", "mtmd", "vendor-hash"} <= set(everything) and everything[-1] == "llama-server"
    assert everything.index("ggml") < everything.index("llama") < everything.index("llama-common")
    with pytest.raises(BuildError, match="no target llama-bench"):
        targets_to_build(SERVER_GRAPH, "llama-bench", set())


def test_the_librarys_files_name_its_cmake_targets(tmp_path):
    for name in ("libggml-base.so", "libggml-base.so.0", "libggml-base.so.0.25.3", "libllama.so.0.5.0",
                 "libmtmd.so", "README.txt"):
        (tmp_path / name).write_text("")
    assert provided_targets(tmp_path) == {"ggml-base", "llama", "mtmd"}
