"""Required build and CPU features: ``--axion-require-features KLEIDIAI,REPACK`` and ``requires=[...]``.

A release may depend on a specific build (the publication's speed came from llama.cpp with Arm's
KleidiAI kernels) or CPU (``sve``, ``i8mm``, ``avx512_vnni``). Names in upper case are llama.cpp
build flags as ``llama_print_system_info()`` prints them; names in lower case are the CPU ISA
features of the hardware fingerprint. Pure: the caller passes what the build and CPU report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pytest_axion.errors import SettingsError

# Every flag ggml's CPU backend can report (ggml_backend_cpu_get_features), plus llama.cpp's own.
LLAMA_FLAGS = frozenset({
    "SSE3", "SSSE3", "AVX", "AVX_VNNI", "AVX2", "F16C", "FMA", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
    "AVX512_BF16", "AMX_INT8", "NEON", "ARM_FMA", "FP16_VA", "MATMUL_INT8", "SVE", "DOTPROD", "SVE_CNT", "SME",
    "SME2", "RISCV_V", "VSX", "VXE", "NNPA", "WASM_SIMD", "LLAMAFILE", "KLEIDIAI", "REPACK", "OPENMP",
    "ACCELERATE",
})
# The CPU features the hardware fingerprint records (hardware.llama_isa_features' spellings).
ISA_FEATURES = frozenset({
    "asimd", "dotprod", "fp16", "i8mm", "bf16", "sve", "sve2", "sme", "sme2",
    "sse3", "ssse3", "sse4_2", "avx", "avx2", "f16c", "fma", "bmi2", "avx_vnni", "avx512f", "avx512bw",
    "avx512vl", "avx512dq", "avx512cd", "avx512_vnni", "avx512_vbmi", "avx512_bf16", "amx_tile", "amx_int8",
    "amx_bf16",
})


def parse_features(raw: str | Sequence[object], *, source: str) -> tuple[str, ...]:
    """``"KLEIDIAI, REPACK"`` or ``["KLEIDIAI", "sve"]`` -> names; unknown names are a usage error."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    names = []
    for item in items:
        if not isinstance(item, str):
            raise SettingsError(f"{source} must list feature names as strings, got {item!r}")
        name = item.strip()
        if name:
            names.append(name)
    unknown = [n for n in names if n not in LLAMA_FLAGS and n not in ISA_FEATURES]
    if unknown:
        raise SettingsError(
            f"{source}: unknown feature(s) {', '.join(unknown)}; llama.cpp build flags (upper case): "
            f"{', '.join(sorted(LLAMA_FLAGS))}; CPU features (lower case): {', '.join(sorted(ISA_FEATURES))}")
    if not names:
        raise SettingsError(f"{source} names no feature")
    return tuple(dict.fromkeys(names))


def missing_features(required: Iterable[str], *, system_info: Mapping[str, str],
                     isa_features: Iterable[str]) -> list[str]:
    """Required names this build or CPU lacks (a build flag counts only when its value is not 0)."""
    isa = set(isa_features)
    missing = []
    for name in required:
        if name in LLAMA_FLAGS:
            if system_info.get(name, "0") in ("0", ""):
                missing.append(name)
        elif name not in isa:
            missing.append(name)
    return missing


def missing_message(missing: Sequence[str], *, source: str, system_info: Mapping[str, str],
                    isa_features: Sequence[str]) -> str:
    """One line: what is missing, what the build and CPU reported, and the fix."""
    reported = " ".join(f"{k}={v}" for k, v in sorted(system_info.items()) if "." not in k) or "nothing"
    flags = [m for m in missing if m in LLAMA_FLAGS]
    fix = ("rebuild llama-cpp-python with the kernels enabled (CMAKE_ARGS, e.g. -DGGML_CPU_KLEIDIAI=ON)"
           if flags else "run on a CPU that has them")
    return (f"{source}: required feature(s) missing: {', '.join(missing)}; llama.cpp reported {reported}; "
            f"CPU features: {', '.join(isa_features) or 'none'}: {fix}, or drop them from {source}")
