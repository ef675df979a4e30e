"""Which kernels llama.cpp's own programs are built with: the installed library's choice (pure logic)."""

from pytest_axion.serve.build import cpu_has_amx, isa_cmake_args

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
