import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from pytest_axion.errors import HardwareIdError
from pytest_axion.machine import hardware
from pytest_axion.machine.cpu import CpuInfo, llama_isa_features, parse_cpuinfo, parse_lscpu, parse_system_info
from pytest_axion.machine.hardware import (
    HardwareFingerprint,
    collect_hardware,
    cpu_generation,
    derive_hardware_id,
    microarch_name,
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


# --- hardware ids --------------------------------------------------------------------------------


def test_hardware_id_is_readable_and_stable():
    zen4 = cpuinfo("amd-zen4-epyc-9b14")
    hardware_id = derive_hardware_id(zen4)
    assert ID_SHAPE.fullmatch(hardware_id) and hardware_id.startswith("x86_64-amd_f25m17-8c-")
    assert derive_hardware_id(cpuinfo("amd-zen4-epyc-9b14")) == hardware_id
    assert cpu_generation(cpuinfo("intel-sapphire-rapids-8481c")) == "intel_f6m143"
    assert cpu_generation(cpuinfo("google-axion-c4a-standard-32", "aarch64")) == "neoverse_v2"


def test_hardware_id_tells_apart_machines_sold_as_one_kind():
    zen4 = cpuinfo("amd-zen4-epyc-9b14")
    no_avx512 = replace(zen4, flags=frozenset(f for f in zen4.flags if not f.startswith("avx512")))
    masked = replace(zen4, model_name="AMD EPYC")   # what a hypervisor shows for Zen 4 and Zen 5 alike
    machines = [
        derive_hardware_id(zen4),
        derive_hardware_id(no_avx512),                                      # same name and cores, no AVX-512
        derive_hardware_id(masked),
        derive_hardware_id(replace(masked, family="26", model_number="2")),   # Zen 5 behind the same name
        derive_hardware_id(replace(masked, model_number="160")),            # another model of the same family
        derive_hardware_id(replace(zen4, logical_cores=16, physical_cores=8)),
        derive_hardware_id(replace(zen4, physical_cores=8)),                # SMT off, same vCPUs
        derive_hardware_id(cpuinfo("amd-zen3-epyc-7b13")),
        derive_hardware_id(cpuinfo("intel-sapphire-rapids-8481c")),
        derive_hardware_id(cpuinfo("google-axion-c4a-standard-32", "aarch64")),
        derive_hardware_id(cpuinfo("aws-graviton3-c7g-4xlarge", "aarch64")),
    ]
    assert len(set(machines)) == len(machines)
    assert all(validate_hardware_id(m, source="derived") == m and ID_SHAPE.fullmatch(m) for m in machines)


def test_hardware_id_ignores_what_only_describes_the_machine():
    zen4 = cpuinfo("amd-zen4-epyc-9b14")
    # Kernels add mitigation and hypervisor flags across versions; those must not move the baselines,
    # nor may a stepping that guests report inconsistently.
    other_kernel = replace(zen4, flags=(zen4.flags - {"hypervisor", "ibpb", "avx512_bitalg"}) | {"bhi_ctrl"},
                           stepping="2")
    assert derive_hardware_id(other_kernel) == derive_hardware_id(zen4)


def test_odd_cpu_names_still_give_a_safe_id():
    odd = CpuInfo("x86/64", "Vendor/X", "../" + "a" * 200, 2, 2, frozenset())
    hardware_id = derive_hardware_id(odd)
    assert validate_hardware_id(hardware_id, source="derived") == hardware_id
    assert hardware_id.startswith("x86_64-" + "a" * 40 + "-2c-")
    assert derive_hardware_id(replace(odd, vendor="", model_name="unknown")).startswith("x86_64-unknown-2c-")
    weird = derive_hardware_id(replace(odd, family="2/5", model_number="../17"))
    assert validate_hardware_id(weird, source="derived") == weird and "-vendor_x_f2_5m_17-" in weird


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
        python="3.11.7", llama_cpp_python="0.3.16", llama_cpp_system_info=parse_system_info(X86_INFO),
        cpu_family="25", cpu_model_number="17", cpu_stepping="1", microcode="0x1000065",
        caches="L1d 32K, L1i 32K, L2 1024K, L3 32768K", dmi="", hardware_id_scheme=2)
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
        "logical_cores 8 -> 4",
        "llama_cpp_python 0.3.16 -> 0.3.17",
        "microarch zen4 -> zen3",
        "isa_features +avx_vnni -avx512_vnni -avx512f",
        "llama.cpp AVX512 1 -> 0",
    ]


def test_differences_name_another_cpu_generation_behind_the_same_name():
    # An id given by hand (--axion-hardware) can cover machines of two generations: say which.
    zen5 = fingerprint(cpu_model="AMD EPYC", cpu_family="26", cpu_model_number="2", cpu_stepping="0",
                       microcode="0xb002116", caches="L1d 48K, L1i 32K, L2 1024K, L3 32768K")
    assert fingerprint(cpu_model="AMD EPYC").differences(zen5) == [
        "cpu_family 25 -> 26", "cpu_model_number 17 -> 2", "cpu_stepping 1 -> 0", "microcode 0x1000065 -> 0xb002116",
        "caches L1d 32K, L1i 32K, L2 1024K, L3 32768K -> L1d 48K, L1i 32K, L2 1024K, L3 32768K"]


def test_a_fingerprint_of_the_old_id_scheme_reads_and_says_what_it_cannot_tell():
    old = {k: v for k, v in fingerprint().to_json().items()
           if k not in ("cpu_family", "cpu_model_number", "cpu_stepping", "microcode", "caches", "dmi",
                        "hardware_id_scheme")}
    stored = HardwareFingerprint.from_json(old, source="old.json")
    assert (stored.hardware_id_scheme, stored.cpu_family, stored.cpu_model_number) == (1, "", "")
    assert stored.differences(fingerprint()) == [
        "recorded under hardware id scheme 1, which did not tell CPU generations apart (no CPU family or model): "
        "it may come from another CPU; record it again"]


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
    assert fp.microarch == microarch_name() != "" and fp.hardware_id_scheme == 2
    assert fp.hardware_id.split("-")[1] == cpu_generation(hardware._collect_cpu(Path("/proc/cpuinfo").read_text()))
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
    assert fp.hardware_id == derive_hardware_id(expected)
    assert (fp.cpu_family, fp.cpu_model_number) == (cpu.family, cpu.model_number)


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
    cpu = hardware._collect_cpu("")
    assert cpu.logical_cores == cpu.physical_cores == os.cpu_count()
    assert cpu.flags == archspec.cpu.host().features
    fp = collect_hardware()
    assert fp.memory_bytes > 0  # from sysconf
    assert 1 <= fp.physical_cores <= fp.logical_cores
    derived = collect_hardware().hardware_id
    monkeypatch.setattr(archspec.cpu, "host", broken)
    assert microarch_name() == "unknown"
    assert collect_hardware().hardware_id == derived   # archspec only describes; the id does not rest on it
    monkeypatch.setattr(hardware, "SYS_ROOT", str(tmp_path / "no-sys"))
    assert (collect_hardware().caches, collect_hardware().dmi) == ("", "")


def test_the_fingerprint_keeps_what_describes_the_machine(monkeypatch, tmp_path):
    cache = tmp_path / "devices" / "system" / "cpu" / "cpu0" / "cache"
    for index, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "1024K"),
                                                 (3, "Unified", "32768K")]):
        folder = cache / f"index{index}"
        folder.mkdir(parents=True)
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(f"{value}\n")
    dmi = tmp_path / "class" / "dmi" / "id"
    dmi.mkdir(parents=True)
    (dmi / "sys_vendor").write_text("Amazon EC2\n")
    (dmi / "product_name").write_text("c7a.2xlarge\n")
    monkeypatch.setattr(hardware, "SYS_ROOT", str(tmp_path))
    monkeypatch.setattr(hardware, "CPUINFO_PATH", str(DATA / "amd-zen4-epyc-9b14.cpuinfo"))
    fp = collect_hardware()
    assert (fp.cpu_family, fp.cpu_model_number, fp.cpu_stepping, fp.microcode) == ("25", "17", "1", "0xffffffff")
    assert fp.caches == "L1d 48K, L1i 32K, L2 1024K, L3 32768K" and fp.dmi == "Amazon EC2 c7a.2xlarge"
    assert fp.hardware_id.startswith("x86_64-amd_f25m17-8c-")
    assert fp.cpu_description == f"AMD EPYC 9B14 (family 25 model 17 stepping 1, archspec {fp.microarch})"
