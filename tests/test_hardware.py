import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from pytest_axion import hardware
from pytest_axion.errors import HardwareIdError
from pytest_axion.hardware import (
    CpuInfo,
    HardwareFingerprint,
    collect_hardware,
    derive_hardware_id,
    llama_isa_features,
    microarch_name,
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
ID_SHAPE = re.compile(r"[a-z0-9_]+-[a-z0-9_]+-[0-9]+c-[0-9a-f]{8}")
ZEN4_FEATURES = ("avx", "avx2", "avx512_bf16", "avx512_vbmi", "avx512_vnni", "avx512bw", "avx512cd", "avx512dq",
                 "avx512f", "avx512vl", "bmi2", "f16c", "fma", "sse3", "sse4_2", "ssse3")


def cpuinfo(name, arch="x86_64"):
    return parse_cpuinfo((DATA / f"{name}.cpuinfo").read_text(), arch=arch)


def lscpu(name):
    return parse_lscpu((DATA / f"{name}.lscpu").read_text())


def features(cpu):
    return llama_isa_features(cpu.flags, arch=cpu.arch)


# --- parsing /proc/cpuinfo and lscpu ---------------------------------------------------------------


def test_google_axion_is_a_32_core_neoverse_v2_with_sve2():
    cpu = cpuinfo("google-axion-c4a-standard-32", arch="aarch64")
    assert (cpu.arch, cpu.vendor, cpu.model_name) == ("aarch64", "ARM", "Neoverse-V2")
    assert (cpu.logical_cores, cpu.physical_cores) == (32, 32)
    assert features(cpu) == ("asimd", "bf16", "dotprod", "fp16", "i8mm", "sve", "sve2")
    assert {"asimddp", "svei8mm", "bti"} <= cpu.flags  # raw flags are kept as the kernel spells them


def test_aws_graviton3_is_a_neoverse_v1_with_sve_but_not_sve2():
    cpu = cpuinfo("aws-graviton3-c7g-4xlarge", arch="aarch64")
    assert (cpu.vendor, cpu.model_name, cpu.logical_cores, cpu.physical_cores) == ("ARM", "Neoverse-V1", 16, 16)
    assert features(cpu) == ("asimd", "bf16", "dotprod", "fp16", "i8mm", "sve")


def test_amd_zen4_counts_smt_siblings_once_and_has_avx512():
    cpu = cpuinfo("amd-zen4-epyc-9b14")
    assert (cpu.vendor, cpu.model_name) == ("AuthenticAMD", "AMD EPYC 9B14")
    assert (cpu.logical_cores, cpu.physical_cores) == (8, 4)
    assert features(cpu) == ZEN4_FEATURES
    assert "avx512_bitalg" in cpu.flags and "avx_vnni" not in cpu.flags


def test_intel_sapphire_rapids_has_amx_and_avx_vnni():
    cpu = cpuinfo("intel-sapphire-rapids-8481c")
    assert (cpu.vendor, cpu.model_name) == ("GenuineIntel", "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz")
    assert (cpu.logical_cores, cpu.physical_cores) == (8, 4)
    assert features(cpu) == tuple(sorted([*ZEN4_FEATURES, "amx_bf16", "amx_int8", "amx_tile", "avx_vnni"]))
    assert "avx512_fp16" in cpu.flags and "avx512_fp16" not in features(cpu)  # no llama.cpp kernel uses it


def test_amd_zen3_has_avx2_but_no_avx512():
    cpu = cpuinfo("amd-zen3-epyc-7b13")
    assert (cpu.model_name, cpu.logical_cores, cpu.physical_cores) == ("AMD EPYC 7B13", 8, 4)
    assert features(cpu) == ("avx", "avx2", "bmi2", "f16c", "fma", "sse3", "sse4_2", "ssse3")


@pytest.mark.parametrize("name", ["google-axion-c4a-standard-32", "amd-zen4-epyc-9b14", "intel-sapphire-rapids-8481c"])
def test_lscpu_describes_the_same_cpu_as_proc_cpuinfo(name):
    from_lscpu = lscpu(name)
    assert from_lscpu == cpuinfo(name, arch=from_lscpu.arch)
    assert derive_hardware_id(from_lscpu, microarch="m") == derive_hardware_id(
        cpuinfo(name, arch=from_lscpu.arch), microarch="m")


def test_lscpu_sums_the_core_types_of_a_big_little_cpu():
    text = """Architecture:            aarch64
CPU(s):                  8
Vendor ID:               ARM
  Model name:            Cortex-A55
    Thread(s) per core:  1
    Core(s) per socket:  4
    Socket(s):           1
    Flags:               fp asimd asimddp asimdhp
  Model name:            Cortex-A76
    Thread(s) per core:  1
    Core(s) per socket:  2
    Socket(s):           2
    Flags:               fp asimd asimddp asimdhp i8mm
"""
    cpu = parse_lscpu(text)
    assert (cpu.model_name, cpu.logical_cores, cpu.physical_cores) == ("Cortex-A55+Cortex-A76", 8, 8)
    assert cpu.flags == {"fp", "asimd", "asimddp", "asimdhp"}  # only what every core can run


def arm_block(processor, part, features="fp asimd asimddp", implementer="0x41"):
    return (f"processor\t: {processor}\nBogoMIPS\t: 48.00\nFeatures\t: {features}\nCPU implementer\t: {implementer}\n"
            f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 0\n")


def test_cpuinfo_names_each_core_type_of_a_big_little_cpu():
    blocks = [arm_block(n, "0xd05") for n in range(4)] + [arm_block(n, "0xd0b", "fp asimd asimddp i8mm")
                                                          for n in range(4, 8)]
    cpu = parse_cpuinfo("\n".join(blocks), arch="aarch64")
    assert (cpu.vendor, cpu.model_name, cpu.logical_cores) == ("ARM", "Cortex-A55+Cortex-A76", 8)
    assert cpu.flags == {"fp", "asimd", "asimddp"}


def test_cpuinfo_keeps_unknown_arm_codes_raw():
    cpu = parse_cpuinfo(arm_block(0, "0x123", implementer="0x7f") + "\n" + arm_block(1, "0x123", implementer="0x7f"),
                        arch="aarch64")
    assert (cpu.vendor, cpu.model_name, cpu.logical_cores) == ("0x7f", "0x7f part 0x123", 2)
    ampere = parse_cpuinfo(arm_block(0, "0xac3", implementer="0xc0"), arch="aarch64")
    assert (ampere.vendor, ampere.model_name) == ("Ampere", "Ampere-1")


def x86_block(processor, *, physical_id, core_id=None, cores=1):
    core = "" if core_id is None else f"core id\t\t: {core_id}\n"
    return (f"processor\t: {processor}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)   CPU  E5-2680\n"
            f"physical id\t: {physical_id}\n{core}cpu cores\t: {cores}\nflags\t\t: fpu sse2 pni avx\n")


def test_cpuinfo_counts_vcpus_that_are_each_their_own_socket():
    cpu = parse_cpuinfo("\n".join(x86_block(n, physical_id=n, core_id=0) for n in range(4)), arch="x86_64")
    assert (cpu.logical_cores, cpu.physical_cores) == (4, 4)
    assert cpu.model_name == "Intel(R) Xeon(R) CPU E5-2680"  # padding collapsed, so the id hash is stable


def test_cpuinfo_without_core_ids_uses_cores_per_socket():
    text = "\n".join(x86_block(n, physical_id=n // 4, cores=2) for n in range(8))
    cpu = parse_cpuinfo(text, arch="x86_64")
    assert (cpu.logical_cores, cpu.physical_cores) == (8, 4)
    assert features(cpu) == ("avx", "sse3")


def test_isa_features_of_an_unknown_arch_are_empty():
    assert llama_isa_features(frozenset({"avx2", "sve", "vsx"}), arch="ppc64le") == ()
    assert llama_isa_features(frozenset({"asimddp"}), arch="arm64") == ("dotprod",)  # macOS spelling of aarch64


# --- llama_print_system_info() -------------------------------------------------------------------


def test_system_info_of_an_x86_build():
    assert parse_system_info(X86_INFO) == {
        "SSE3": "1", "SSSE3": "1", "AVX": "1", "AVX2": "1", "F16C": "1", "FMA": "1", "BMI2": "1", "AVX512": "1",
        "AVX512_VBMI": "1", "AVX512_VNNI": "1", "AVX512_BF16": "1", "LLAMAFILE": "1", "OPENMP": "1", "REPACK": "1"}


def test_system_info_of_an_arm_build_with_kleidiai():
    info = parse_system_info(ARM_INFO)
    assert info["KLEIDIAI"] == "1" and info["SVE_CNT"] == "16" and info["MATMUL_INT8"] == "1"
    assert len(info) == 10 and "AVX2" not in info


def test_system_info_keeps_other_backends_apart():
    text = "Metal : EMBED_LIBRARY = 1 | BF16 = 1 | CPU : NEON = 1 | BF16 = 0 | CUDA : ARCHS = 860,890 | "
    assert parse_system_info(text) == {
        "Metal.EMBED_LIBRARY": "1", "Metal.BF16": "1", "NEON": "1", "BF16": "0", "CUDA.ARCHS": "860,890"}


def test_system_info_without_backend_names_is_cpu():
    assert parse_system_info("AVX = 1 | AVX_VNNI = 0 | AVX2 = 1 | LLAMAFILE = 1 | ") == {
        "AVX": "1", "AVX_VNNI": "0", "AVX2": "1", "LLAMAFILE": "1"}
    assert parse_system_info("") == {}


# --- hardware ids --------------------------------------------------------------------------------


def test_hardware_id_is_readable_and_stable():
    zen4 = cpuinfo("amd-zen4-epyc-9b14")
    hardware_id = derive_hardware_id(zen4, microarch="zen4")
    assert ID_SHAPE.fullmatch(hardware_id) and hardware_id.startswith("x86_64-zen4-8c-")
    assert derive_hardware_id(cpuinfo("amd-zen4-epyc-9b14"), microarch="zen4") == hardware_id


def test_hardware_id_tells_apart_machines_sold_as_one_kind():
    zen4 = cpuinfo("amd-zen4-epyc-9b14")
    no_avx512 = replace(zen4, flags=frozenset(f for f in zen4.flags if not f.startswith("avx512")))
    machines = [
        derive_hardware_id(zen4, microarch="zen4"),
        derive_hardware_id(no_avx512, microarch="zen4"),       # same name and cores, no AVX-512
        derive_hardware_id(zen4, microarch="x86_64_v4"),       # archspec sees it differently
        derive_hardware_id(replace(zen4, logical_cores=16, physical_cores=8), microarch="zen4"),
        derive_hardware_id(replace(zen4, physical_cores=8), microarch="zen4"),  # SMT off, same vCPUs
        derive_hardware_id(cpuinfo("amd-zen3-epyc-7b13"), microarch="zen3"),
        derive_hardware_id(cpuinfo("amd-zen3-epyc-7b13"), microarch="zen4"),  # only the CPU itself differs
        derive_hardware_id(cpuinfo("intel-sapphire-rapids-8481c"), microarch="sapphirerapids"),
        derive_hardware_id(cpuinfo("google-axion-c4a-standard-32", "aarch64"), microarch="neoverse_v2"),
        derive_hardware_id(cpuinfo("aws-graviton3-c7g-4xlarge", "aarch64"), microarch="neoverse_v1"),
    ]
    assert len(set(machines)) == len(machines)
    assert all(validate_hardware_id(m, source="derived") == m and ID_SHAPE.fullmatch(m) for m in machines)


def test_hardware_id_ignores_flags_llama_cpp_does_not_use():
    zen4 = cpuinfo("amd-zen4-epyc-9b14")
    # Kernels add mitigation and hypervisor flags across versions; those must not move the baselines.
    other_kernel = replace(zen4, flags=(zen4.flags - {"hypervisor", "ibpb", "avx512_bitalg"}) | {"bhi_ctrl"})
    assert derive_hardware_id(other_kernel, microarch="zen4") == derive_hardware_id(zen4, microarch="zen4")


def test_odd_cpu_names_still_give_a_safe_id():
    odd = CpuInfo("x86/64", "Vendor/X", "Model: 9 (weird) / name", 2, 2, frozenset())
    hardware_id = derive_hardware_id(odd, microarch="../" + "a" * 200)
    assert validate_hardware_id(hardware_id, source="derived") == hardware_id
    assert hardware_id.startswith("x86_64-" + "a" * 40 + "-2c-")
    assert derive_hardware_id(odd, microarch="").startswith("x86_64-unknown-2c-")


BAD_IDS = ["a/b", "a/../b", "..", ".", ".hidden", "", "x" * 101, "a b", "c:\\x", "é", "a\nb", "trailing.", "con",
           "NUL.txt"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_unsafe_hardware_ids_are_rejected_in_one_line_naming_value_source_and_fix(bad):
    with pytest.raises(HardwareIdError) as err:
        validate_hardware_id(bad, source="--axion-hardware")
    message = str(err.value)
    assert message.startswith("invalid hardware id " + repr(bad[:60])[:-1])  # long values are cut short
    assert "(from --axion-hardware)" in message and "'gcp-c4a-standard-32'" in message
    assert "\n" not in message and len(message) < 300


def test_the_rejection_says_what_is_wrong():
    with pytest.raises(HardwareIdError, match=r"contains '/' ' '"):
        validate_hardware_id("a/b c", source="x")
    with pytest.raises(HardwareIdError, match="101 characters long"):
        validate_hardware_id("x" * 101, source="x")
    with pytest.raises(HardwareIdError, match=r"baselines/zen4\.json"):
        validate_hardware_id(".zen4", source="baselines/zen4.json")


@pytest.mark.parametrize("good", ["gcp-c4a-standard-32", "aws_c7g.4xlarge", "a", "a..b", "x" * 100, "console",
                                  "x86_64-zen3-2c-3f9a1c2e"])
def test_safe_hardware_ids_are_accepted(good):
    assert validate_hardware_id(good, source="x") == good


# --- fingerprints --------------------------------------------------------------------------------


def fingerprint(**changes):
    base = HardwareFingerprint(
        hardware_id="x86_64-zen4-8c-12345678", hardware_id_source="derived", arch="x86_64",
        cpu_vendor="AuthenticAMD", cpu_model="AMD EPYC 9B14", microarch="zen4", logical_cores=8, physical_cores=4,
        isa_features=("avx2", "avx512_vnni", "avx512f"), memory_bytes=32 * 2**30, os="Linux 6.1.0-18-cloud-amd64",
        python="3.11.7", llama_cpp_python="0.3.16", llama_cpp_system_info=parse_system_info(X86_INFO))
    return replace(base, **changes)


def test_fingerprint_round_trips_through_json():
    original = fingerprint()
    data = original.to_json()
    assert list(data) == sorted(data)
    assert data["isa_features"] == ["avx2", "avx512_vnni", "avx512f"]
    assert data["llama_cpp_system_info"]["AVX512"] == "1" and data["memory_bytes"] == 32 * 2**30
    assert HardwareFingerprint.from_json(json.loads(json.dumps(data, sort_keys=True))) == original


def test_fingerprints_hash_like_they_compare():
    assert hash(fingerprint()) == hash(fingerprint()) and fingerprint() in {fingerprint()}
    assert fingerprint() != fingerprint(llama_cpp_system_info={})


def test_from_json_ignores_unknown_keys_and_names_what_is_wrong():
    data = {**fingerprint().to_json(), "written_by": "a newer pytest-axion"}
    assert HardwareFingerprint.from_json(data) == fingerprint()
    with pytest.raises(ValueError, match=r"baseline\.json lacks memory_bytes, microarch"):
        HardwareFingerprint.from_json({k: v for k, v in data.items() if k not in ("microarch", "memory_bytes")},
                                      source="baseline.json")
    with pytest.raises(ValueError, match="'logical_cores' must be a whole number"):
        HardwareFingerprint.from_json({**data, "logical_cores": True})
    with pytest.raises(ValueError, match="'isa_features' must be a list of strings"):
        HardwareFingerprint.from_json({**data, "isa_features": "avx2"})
    with pytest.raises(HardwareIdError, match=r"from baseline\.json"):
        HardwareFingerprint.from_json({**data, "hardware_id": "../etc"}, source="baseline.json")


def test_differences_name_what_changes_performance():
    changed = fingerprint(microarch="zen3", isa_features=("avx2", "avx_vnni"), logical_cores=4,
                          llama_cpp_python="0.3.17",
                          llama_cpp_system_info={**parse_system_info(X86_INFO), "AVX512": "0"})
    assert fingerprint().differences(changed) == [
        "microarch zen4 -> zen3",
        "logical_cores 8 -> 4",
        "llama_cpp_python 0.3.16 -> 0.3.17",
        "isa_features +avx_vnni -avx512_vnni -avx512f",
        "llama.cpp AVX512 1 -> 0",
    ]


def test_differences_ignore_python_os_memory_and_the_id_source():
    other = fingerprint(python="3.12.1", os="Linux 6.8", memory_bytes=1, hardware_id_source="--axion-hardware")
    assert fingerprint().differences(other) == []


def test_a_llama_cpp_flag_on_one_side_only_is_a_difference():
    arm = fingerprint(llama_cpp_system_info=parse_system_info(ARM_INFO))
    without_kleidiai = fingerprint(llama_cpp_system_info={k: v for k, v in parse_system_info(ARM_INFO).items()
                                                          if k != "KLEIDIAI"})
    assert arm.differences(without_kleidiai) == ["llama.cpp KLEIDIAI 1 -> absent"]
    assert without_kleidiai.differences(arm) == ["llama.cpp KLEIDIAI absent -> 1"]


# --- collecting on this machine ------------------------------------------------------------------


def test_collect_hardware_on_this_machine():
    fp = collect_hardware(system_info=X86_INFO, llama_cpp_python_version="0.3.16")
    assert fp.logical_cores == os.cpu_count() and 1 <= fp.physical_cores <= fp.logical_cores
    assert fp.memory_bytes == psutil.virtual_memory().total > 0
    assert fp.hardware_id_source == "derived" and ID_SHAPE.fullmatch(fp.hardware_id)
    assert validate_hardware_id(fp.hardware_id, source="derived") == fp.hardware_id
    assert fp.microarch == microarch_name() != "" and fp.hardware_id.split("-")[1] == fp.microarch
    assert (fp.llama_cpp_python, fp.llama_cpp_system_info["REPACK"]) == ("0.3.16", "1")
    assert HardwareFingerprint.from_json(json.loads(json.dumps(fp.to_json()))) == fp
    assert collect_hardware().hardware_id == fp.hardware_id  # same machine, same id


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_collect_hardware_on_linux_agrees_with_proc_cpuinfo():
    fp = collect_hardware()
    cpu = parse_cpuinfo(Path("/proc/cpuinfo").read_text(), arch=fp.arch)
    assert (fp.cpu_vendor, fp.cpu_model, fp.logical_cores) == (cpu.vendor, cpu.model_name, cpu.logical_cores)
    assert fp.isa_features == features(cpu) and fp.isa_features  # every x86_64/aarch64 CPU has some
    expected = replace(cpu, physical_cores=psutil.cpu_count(logical=False) or cpu.physical_cores)
    assert fp.hardware_id == derive_hardware_id(expected, microarch=fp.microarch)


def test_collect_hardware_honours_a_valid_override_and_rejects_a_bad_one():
    fp = collect_hardware(hardware_id_override="gcp-c4a-standard-32", override_source="ini axion_hardware")
    assert (fp.hardware_id, fp.hardware_id_source) == ("gcp-c4a-standard-32", "ini axion_hardware")
    assert fp.logical_cores >= 1 and fp.isa_features == collect_hardware().isa_features
    with pytest.raises(HardwareIdError, match=r"'\.\./\.\./etc' \(from ini axion_hardware\)"):
        collect_hardware(hardware_id_override="../../etc", override_source="ini axion_hardware")


def test_collectors_fall_back_instead_of_raising(monkeypatch, tmp_path):
    import archspec.cpu

    def broken(*args, **kwargs):
        raise RuntimeError("unavailable")

    monkeypatch.setattr(psutil, "cpu_count", broken)
    monkeypatch.setattr(psutil, "virtual_memory", broken)
    # No /proc/cpuinfo (macOS, Windows): the core count comes from os, the flags from archspec.
    cpu = hardware._collect_cpu(str(tmp_path / "missing"))
    assert cpu.logical_cores == cpu.physical_cores == os.cpu_count()
    assert cpu.flags == archspec.cpu.host().features
    fp = collect_hardware()
    assert fp.memory_bytes > 0  # from sysconf
    assert 1 <= fp.physical_cores <= fp.logical_cores
    monkeypatch.setattr(archspec.cpu, "host", broken)
    assert microarch_name() == "unknown"
    assert collect_hardware().hardware_id.split("-")[1] == "unknown"
