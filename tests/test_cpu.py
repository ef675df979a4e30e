import re
from pathlib import Path

import pytest

from pytest_axion.machine.cpu import (
    UsableCores,
    llama_isa_features,
    parse_cpuinfo,
    parse_lscpu,
    parse_system_info,
    usable_cores,
)

DATA = Path(__file__).parent / "data" / "cpuinfo"
X86_INFO = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
            "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
ARM_INFO = ("CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | MATMUL_INT8 = 1 | SVE = 1 | SVE_CNT = 16 | "
            "KLEIDIAI = 1 | OPENMP = 1 | REPACK = 1 |")
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


def test_x86_family_model_and_stepping_are_read_and_arm_has_its_revision():
    zen4 = cpuinfo("amd-zen4-epyc-9b14")
    assert (zen4.family, zen4.model_number, zen4.stepping) == ("25", "17", "1")
    spr = cpuinfo("intel-sapphire-rapids-8481c")
    assert (spr.family, spr.model_number, spr.stepping) == ("6", "143", "8")
    axion = cpuinfo("google-axion-c4a-standard-32", "aarch64")
    # Arm's implementer and part are in vendor and model name already (ARM, Neoverse-V2).
    assert (axion.family, axion.model_number, axion.stepping) == ("", "", "r0p1")


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


# --- the cores this process may use --------------------------------------------------------------


def fake_sys(tmp_path, siblings, *, performance=None, cgroup_v2=None, cgroup_v1=None):
    """A /sys tree: thread siblings per CPU, hybrid performance cores, and cgroup CPU quotas."""
    for cpu, sibling_list in siblings.items():
        topology = tmp_path / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "thread_siblings_list").write_text(sibling_list + "\n")
    if performance is not None:
        (tmp_path / "devices" / "cpu_core").mkdir(parents=True)
        (tmp_path / "devices" / "cpu_core" / "cpus").write_text(performance + "\n")
    cgroup = tmp_path / "cgroup"
    lines = []
    if cgroup_v2 is not None:
        folder = tmp_path / "fs" / "cgroup" / "ci" / "job"
        folder.mkdir(parents=True)
        (folder / "cpu.max").write_text(cgroup_v2 + "\n")
        (tmp_path / "fs" / "cgroup" / "cpu.max").write_text("max 100000\n")
        lines.append("0::/ci/job")
    if cgroup_v1 is not None:
        folder = tmp_path / "fs" / "cgroup" / "cpu" / "docker" / "abc"
        folder.mkdir(parents=True)
        quota, period = cgroup_v1
        (folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        (folder / "cpu.cfs_period_us").write_text(f"{period}\n")
        lines.append("4:cpu,cpuacct:/docker/abc")
    cgroup.write_text("\n".join(lines) + "\n")
    return {"sys_root": str(tmp_path), "cgroup_file": str(cgroup)}


def test_smt_siblings_count_once_as_llama_cpp_counts_them(tmp_path):
    paths = fake_sys(tmp_path, {0: "0,4", 1: "1,5", 2: "2,6", 3: "3,7", 4: "0,4", 5: "1,5", 6: "2,6", 7: "3,7"})
    cores = usable_cores(affinity=range(8), **paths)
    assert (cores.logical, cores.physical, cores.quota_cpus, cores.default_threads) == (8, 4, None, 4)


def test_only_the_cpus_of_the_affinity_mask_count(tmp_path):
    paths = fake_sys(tmp_path, {cpu: str(cpu) for cpu in range(64)})
    cores = usable_cores(affinity={8, 9, 10, 11}, **paths)   # taskset -c 8-11 on a 64-core host
    assert (cores.logical, cores.physical, cores.default_threads) == (4, 4, 4)


def test_a_hybrid_cpu_counts_performance_cores_only(tmp_path):
    # 4 P-cores with SMT (CPUs 0-7) and 8 E-cores (8-15), as on an Alder Lake desktop CI runner.
    siblings = {cpu: f"{cpu - cpu % 2},{cpu - cpu % 2 + 1}" for cpu in range(8)}
    siblings |= {cpu: str(cpu) for cpu in range(8, 16)}
    cores = usable_cores(affinity=range(16), **fake_sys(tmp_path, siblings, performance="0-7"))
    assert (cores.logical, cores.physical, cores.default_threads) == (16, 4, 4)


@pytest.mark.parametrize(("v2", "v1", "quota"), [("400000 100000", None, 4.0), (None, (250000, 100000), 2.5),
                                               ("max 100000", None, None), (None, (-1, 100000), None)])
def test_a_cgroup_cpu_quota_caps_the_default_threads(tmp_path, v2, v1, quota):
    paths = fake_sys(tmp_path, {cpu: str(cpu) for cpu in range(16)}, cgroup_v2=v2, cgroup_v1=v1)
    cores = usable_cores(affinity=range(16), **paths)
    assert cores.quota_cpus == quota
    assert cores.default_threads == (int(quota) if quota else 16)


def test_no_sysfs_falls_back_to_the_affinity_mask(tmp_path):
    cores = usable_cores(affinity={0, 1, 2}, sys_root=str(tmp_path / "none"), cgroup_file=str(tmp_path / "none"))
    assert (cores.logical, cores.physical, cores.quota_cpus) == (3, 3, None)


def test_this_machine_has_usable_cores():
    cores = usable_cores()
    assert 1 <= cores.physical <= cores.logical and cores.default_threads >= 1
    assert re.fullmatch(r"\d+ physical core\(s\) of the \d+ CPU\(s\) this process may use.*", cores.describe())
    assert isinstance(cores, UsableCores)
