import json
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_axion.errors import HardwareIdError
from pytest_axion.hardware import (
    CpuInfo,
    HardwareFingerprint,
    collect_hardware,
    derive_hardware_id,
    llama_isa_features,
    parse_cpuinfo,
    parse_lscpu,
    parse_system_info,
    validate_hardware_id,
)

DATA = Path(__file__).parent / "data" / "cpuinfo"
X86_INFO = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
            "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
ARM_INFO = ("CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | MATMUL_INT8 = 1 | SVE = 1 | SVE_CNT = 16 | "
            "KLEIDIAI = 1 | OPENMP = 1 | REPACK = 1 |")


def cpuinfo(name, arch="x86_64"):
    return parse_cpuinfo((DATA / f"{name}.cpuinfo").read_text(), arch=arch)


def test_google_axion_neoverse_v2():
    cpu = cpuinfo("google-axion-c4a-standard-32", arch="aarch64")
    assert (cpu.vendor, cpu.model_name) == ("ARM", "Neoverse-V2")
    assert (cpu.logical_cores, cpu.physical_cores) == (32, 32)
    assert llama_isa_features(cpu.flags, arch="aarch64") == (
        "asimd", "bf16", "dotprod", "fp16", "i8mm", "sve", "sve2")


def test_aws_graviton3_has_sve_but_not_sve2():
    cpu = cpuinfo("aws-graviton3-c7g-4xlarge", arch="aarch64")
    features = llama_isa_features(cpu.flags, arch="aarch64")
    assert cpu.model_name == "Neoverse-V1" and cpu.logical_cores == 16
    assert "sve" in features and "i8mm" in features and "sve2" not in features


def test_amd_zen4_with_smt_counts_physical_cores():
    cpu = cpuinfo("amd-zen4-epyc-9b14")
    assert (cpu.vendor, cpu.model_name) == ("AuthenticAMD", "AMD EPYC 9B14")
    assert (cpu.logical_cores, cpu.physical_cores) == (8, 4)
    features = llama_isa_features(cpu.flags, arch="x86_64")
    assert {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_vbmi", "sse3"} <= set(features)
    assert "amx_int8" not in features


def test_intel_sapphire_rapids_has_amx():
    features = llama_isa_features(cpuinfo("intel-sapphire-rapids-8481c").flags, arch="x86_64")
    assert {"amx_tile", "amx_int8", "amx_bf16", "avx512_fp16", "avx_vnni"} <= set(features)


def test_zen3_has_no_avx512():
    features = llama_isa_features(cpuinfo("amd-zen3-epyc-7b13").flags, arch="x86_64")
    assert "avx2" in features and not [f for f in features if f.startswith("avx512")]


def test_lscpu_matches_cpuinfo():
    axion = parse_lscpu((DATA / "google-axion-c4a-standard-32.lscpu").read_text())
    assert (axion.arch, axion.model_name, axion.logical_cores, axion.physical_cores) == (
        "aarch64", "Neoverse-V2", 32, 32)
    zen4 = parse_lscpu((DATA / "amd-zen4-epyc-9b14.lscpu").read_text())
    assert (zen4.logical_cores, zen4.physical_cores) == (8, 4)
    assert zen4.flags == cpuinfo("amd-zen4-epyc-9b14").flags


def test_system_info_parses_x86_and_arm_builds():
    x86 = parse_system_info(X86_INFO)
    assert x86["AVX512"] == "1" and x86["REPACK"] == "1" and "KLEIDIAI" not in x86
    arm = parse_system_info(ARM_INFO)
    assert arm["KLEIDIAI"] == "1" and arm["SVE_CNT"] == "16" and arm["DOTPROD"] == "1"


def test_system_info_keeps_other_backends_apart():
    info = parse_system_info("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ACCELERATE = 1 |")
    assert info == {"Metal.EMBED_LIBRARY": "1", "NEON": "1", "ACCELERATE": "1"}


def test_hardware_id_is_stable_and_tells_machines_apart():
    zen4 = cpuinfo("amd-zen4-epyc-9b14")
    same = derive_hardware_id(zen4, microarch="zen4")
    assert same == derive_hardware_id(cpuinfo("amd-zen4-epyc-9b14"), microarch="zen4")
    assert same.startswith("x86_64-zen4-8c-")
    no_avx512 = replace(zen4, flags=frozenset(f for f in zen4.flags if not f.startswith("avx512")))
    more_cores = replace(zen4, logical_cores=16)
    ids = {same, derive_hardware_id(no_avx512, microarch="zen4"), derive_hardware_id(more_cores, microarch="zen4"),
           derive_hardware_id(cpuinfo("amd-zen3-epyc-7b13"), microarch="zen3")}
    assert len(ids) == 4
    for hardware_id in ids:
        assert validate_hardware_id(hardware_id, source="derived") == hardware_id


def test_odd_cpu_names_still_give_a_safe_id():
    odd = CpuInfo("x86_64", "Vendor/X", "Model: 9 (weird) / name", 2, 2, frozenset())
    assert validate_hardware_id(derive_hardware_id(odd, microarch="a/b"), source="derived")


@pytest.mark.parametrize("bad", ["a/b", "..", ".hidden", "", "x" * 101, "a b", "c:\\x", "é"])
def test_unsafe_hardware_ids_are_rejected_with_the_source_named(bad):
    with pytest.raises(HardwareIdError) as err:
        validate_hardware_id(bad, source="--axion-hardware")
    assert "--axion-hardware" in str(err.value) and "\n" not in str(err.value)


def test_instance_type_ids_are_accepted():
    assert validate_hardware_id("gcp-c4a-standard-32", source="x") == "gcp-c4a-standard-32"
    assert validate_hardware_id("aws_c7g.4xlarge", source="x") == "aws_c7g.4xlarge"


def fingerprint(**changes):
    base = HardwareFingerprint(
        hardware_id="x86_64-zen4-8c-12345678", hardware_id_source="derived", arch="x86_64",
        cpu_vendor="AuthenticAMD", cpu_model="AMD EPYC 9B14", microarch="zen4", logical_cores=8, physical_cores=4,
        isa_features=("avx2", "avx512f"), memory_bytes=32 * 2**30, os="Linux 6.1", python="3.11.7",
        llama_cpp_python="0.3.36", llama_cpp_system_info=parse_system_info(X86_INFO))
    return replace(base, **changes)


def test_fingerprint_round_trips_through_json():
    original = fingerprint()
    assert HardwareFingerprint.from_json(json.loads(json.dumps(original.to_json()))) == original


def test_differences_name_what_changes_performance_and_ignore_the_rest():
    changed = fingerprint(microarch="zen3", isa_features=("avx2",), python="3.12.1", memory_bytes=1,
                          llama_cpp_system_info={**parse_system_info(X86_INFO), "AVX512": "0"})
    diffs = fingerprint().differences(changed)
    assert "microarch zen4 -> zen3" in diffs
    assert "isa_features -avx512f" in diffs
    assert "llama.cpp AVX512 1 -> 0" in diffs
    assert not [d for d in diffs if "python" in d or "memory" in d]
    assert fingerprint().differences(fingerprint(python="3.12")) == []


def test_a_flag_present_on_one_side_only_is_a_difference():
    arm = fingerprint(llama_cpp_system_info=parse_system_info(ARM_INFO))
    no_kleidi = fingerprint(llama_cpp_system_info={k: v for k, v in arm.llama_cpp_system_info.items()
                                                   if k != "KLEIDIAI"})
    assert "llama.cpp KLEIDIAI 1 -> absent" in arm.differences(no_kleidi)


def test_collect_hardware_on_this_machine():
    fp = collect_hardware(system_info=X86_INFO, llama_cpp_python_version="0.3.36")
    assert fp.logical_cores >= 1 and 1 <= fp.physical_cores <= fp.logical_cores
    assert fp.memory_bytes > 0 and fp.hardware_id_source == "derived"
    assert validate_hardware_id(fp.hardware_id, source="derived") == fp.hardware_id
    assert fp.llama_cpp_system_info["REPACK"] == "1"


def test_collect_hardware_honours_a_valid_override_and_rejects_a_bad_one():
    fp = collect_hardware(hardware_id_override="gcp-c4a-standard-32", override_source="ini axion_hardware")
    assert (fp.hardware_id, fp.hardware_id_source) == ("gcp-c4a-standard-32", "ini axion_hardware")
    with pytest.raises(HardwareIdError, match="ini axion_hardware"):
        collect_hardware(hardware_id_override="../../etc", override_source="ini axion_hardware")
