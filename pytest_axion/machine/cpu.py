"""What the CPU is and which of its cores this process may use, read from the kernel.

``/proc/cpuinfo`` and ``lscpu`` are parsed into one :class:`CpuInfo` (identity, core counts, ISA
flags, and on x86 the family/model/stepping that tell CPU generations apart where hypervisors mask the
name); ``llama_print_system_info()`` into a flag mapping; and :func:`usable_cores` counts the cores the
process may really run on (affinity, cgroup CPU quota, performance cores of a hybrid CPU), which is
what llama.cpp's thread count must not exceed. Readers take their file roots as parameters and never
raise for unavailable data. Pure apart from those reads.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

_T = TypeVar("_T")

# platform.machine() spellings of other systems -> the Linux kernel's.
_ARCH_ALIASES: Mapping[str, str] = MappingProxyType({"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"})

# Arm "CPU implementer" codes, named as util-linux's lscpu names them (so both parsers agree).
_ARM_IMPLEMENTERS: Mapping[int, str] = MappingProxyType({
    0x41: "ARM", 0x42: "Broadcom", 0x43: "Cavium", 0x46: "FUJITSU", 0x48: "HiSilicon", 0x4E: "NVIDIA",
    0x50: "APM", 0x51: "Qualcomm", 0x53: "Samsung", 0x56: "Marvell", 0x61: "Apple", 0x70: "Phytium",
    0xC0: "Ampere",
})
# (implementer, part) -> core name, for the cores llama.cpp users meet (kernel cputype.h, lscpu-arm.c).
_ARM_PARTS: Mapping[tuple[int, int], str] = MappingProxyType({
    (0x41, 0xD03): "Cortex-A53", (0x41, 0xD05): "Cortex-A55", (0x41, 0xD08): "Cortex-A72",
    (0x41, 0xD0B): "Cortex-A76", (0x41, 0xD0C): "Neoverse-N1", (0x41, 0xD0D): "Cortex-A77",
    (0x41, 0xD40): "Neoverse-V1", (0x41, 0xD41): "Cortex-A78", (0x41, 0xD44): "Cortex-X1",
    (0x41, 0xD46): "Cortex-A510", (0x41, 0xD47): "Cortex-A710", (0x41, 0xD48): "Cortex-X2",
    (0x41, 0xD49): "Neoverse-N2", (0x41, 0xD4A): "Neoverse-E1", (0x41, 0xD4D): "Cortex-A715",
    (0x41, 0xD4E): "Cortex-X3", (0x41, 0xD4F): "Neoverse-V2", (0x41, 0xD80): "Cortex-A520",
    (0x41, 0xD81): "Cortex-A720", (0x41, 0xD82): "Cortex-X4", (0x41, 0xD83): "Neoverse-V3AE",
    (0x41, 0xD84): "Neoverse-V3", (0x41, 0xD8E): "Neoverse-N3", (0x46, 0x001): "A64FX",
    (0x48, 0xD01): "Kunpeng-920", (0x4E, 0x004): "Carmel", (0x61, 0x022): "Icestorm-M1",
    (0x61, 0x023): "Firestorm-M1", (0xC0, 0xAC3): "Ampere-1", (0xC0, 0xAC4): "Ampere-1a",
})

# Kernel flag -> our name, for the features llama.cpp's CPU kernels choose between (ggml cpu-feats).
_AARCH64_FEATURES: Mapping[str, str] = MappingProxyType({
    "asimd": "asimd", "asimddp": "dotprod", "asimdhp": "fp16", "fphp": "fp16", "i8mm": "i8mm", "bf16": "bf16",
    "sve": "sve", "sve2": "sve2", "sme": "sme", "sme2": "sme2",
})
_X86_FEATURES: Mapping[str, str] = MappingProxyType({
    "pni": "sse3", "sse3": "sse3", "ssse3": "ssse3", "sse4_2": "sse4_2", "avx": "avx", "avx2": "avx2",
    "f16c": "f16c", "fma": "fma", "bmi2": "bmi2", "avx_vnni": "avx_vnni", "avx512f": "avx512f",
    "avx512bw": "avx512bw", "avx512vl": "avx512vl", "avx512dq": "avx512dq", "avx512cd": "avx512cd",
    "avx512vbmi": "avx512_vbmi", "avx512_vbmi": "avx512_vbmi", "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16", "amx_tile": "amx_tile", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16",
})
_ISA_TABLES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"aarch64": _AARCH64_FEATURES, "x86_64": _X86_FEATURES}
)

# "Metal : EMBED_LIBRARY = 1" opens a backend's group in llama_print_system_info(); "AVX = 1" continues one.
_SYSTEM_INFO_GROUP = re.compile(r"(?P<backend>[A-Za-z][\w ]*?)\s*:\s*(?P<rest>.*)")


@dataclass(frozen=True)
class CpuInfo:
    """What the kernel (or lscpu) says about the CPU: identity, core counts and raw ISA flags.

    ``family``, ``model_number`` and ``stepping`` are x86's CPUID numbers as the kernel prints them
    ("25", "17", "1"): they stay exact when a hypervisor masks the brand string as "AMD EPYC". On Arm
    the implementer and part are already in ``vendor`` and ``model_name`` ("ARM", "Neoverse-V2"), so
    ``family`` and ``model_number`` are empty and ``stepping`` is the revision ("r0p1").
    """

    arch: str
    vendor: str
    model_name: str
    logical_cores: int
    physical_cores: int
    flags: frozenset[str]
    family: str = ""
    model_number: str = ""
    stepping: str = ""


def normalise_arch(machine: str) -> str:
    return _ARCH_ALIASES.get(machine.strip().lower(), machine.strip())


def parse_cpuinfo(text: str, *, arch: str) -> CpuInfo:
    """Parse ``/proc/cpuinfo`` of an x86_64 or aarch64 Linux machine.

    Logical cores are the ``processor`` blocks; x86 physical cores are the distinct
    (``physical id``, ``core id``) pairs. arm64 lists no topology and its server cores have no SMT,
    so there physical equals logical (``collect_hardware`` asks psutil, which reads sysfs, instead).
    Flags are those every block lists. Without a ``model name``, an Arm core is named from its
    ``CPU implementer``/``CPU part``; several core types (big.LITTLE) are joined with ``+``.
    """
    arch = normalise_arch(arch)
    blocks = cpuinfo_blocks(text)
    logical_cores = max(1, len(blocks))
    flags = _common_flags(block.get("flags", block.get("Features")) for block in blocks)
    first = blocks[0] if blocks else {}
    if arch == "aarch64" or ("CPU implementer" in first and "vendor_id" not in first):
        vendor, model_name = _arm_identity(blocks)
        return CpuInfo(arch, vendor, model_name, logical_cores, logical_cores, flags,
                       stepping=_arm_revision(first.get("CPU variant", ""), first.get("CPU revision", "")))
    physical_cores = min(logical_cores, max(1, _x86_physical_cores(blocks) or logical_cores))
    return CpuInfo(
        arch=arch,
        vendor=clean(first.get("vendor_id", "")) or "unknown",
        model_name=clean(first.get("model name", first.get("cpu", ""))) or "unknown",
        logical_cores=logical_cores,
        physical_cores=physical_cores,
        flags=flags,
        family=clean(first.get("cpu family", "")),
        model_number=clean(first.get("model", "")),
        stepping=clean(first.get("stepping", "")),
    )


def cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    """One field mapping per ``processor`` block; trailing machine-wide blocks are dropped."""
    blocks = [dict(_key_values(chunk)) for chunk in re.split(r"\n[ \t]*\n", text)]
    return [block for block in blocks if "processor" in block]


def _key_values(text: str) -> list[tuple[str, str]]:
    pairs = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            pairs.append((key.strip(), value.strip()))
    return pairs


def clean(text: str) -> str:
    # Older Intel brand strings pad with runs of spaces; one space keeps the id hash stable.
    return " ".join(text.split())


def _common_flags(flag_lists: Iterable[str | None]) -> frozenset[str]:
    """Flags every CPU offers, as llama.cpp's threads may run on any of them."""
    common: frozenset[str] | None = None
    for flag_list in flag_lists:
        if flag_list is not None:
            flags = frozenset(flag_list.split())
            common = flags if common is None else common & flags
    return common or frozenset()


def _x86_physical_cores(blocks: list[dict[str, str]]) -> int:
    """Distinct cores by topology ids, else summed ``cpu cores`` per socket; 0 when neither is listed."""
    if blocks and all("core id" in block for block in blocks):
        return len({(block.get("physical id", "0"), block["core id"]) for block in blocks})
    cores_per_socket = {block.get("physical id", "0"): block.get("cpu cores", "") for block in blocks}
    if cores_per_socket and all(cores.isdigit() for cores in cores_per_socket.values()):
        return sum(int(cores) for cores in cores_per_socket.values())
    return 0


def _arm_identity(blocks: list[dict[str, str]]) -> tuple[str, str]:
    """(vendor, model name) of an Arm machine; core types in order of first appearance."""
    core_types = unique((block.get("CPU implementer", ""), block.get("CPU part", "")) for block in blocks)
    if not core_types:
        return "unknown", "unknown"
    vendor = "+".join(unique(_arm_vendor(implementer) for implementer, _ in core_types))
    model_name = clean(blocks[0].get("model name", ""))
    if not model_name:
        model_name = "+".join(unique(_arm_part_name(implementer, part) for implementer, part in core_types))
    return vendor, model_name


def _arm_revision(variant: str, revision: str) -> str:
    """``r<variant>p<revision>``, as lscpu prints an Arm core's stepping; '' when not listed."""
    variant_code = _hex(variant)
    revision_code = int(revision) if revision.isdigit() else _hex(revision)
    if variant_code is None or revision_code is None:
        return ""
    return f"r{variant_code}p{revision_code}"


def _arm_vendor(implementer: str) -> str:
    code = _hex(implementer)
    return _ARM_IMPLEMENTERS.get(code, implementer) if code is not None else implementer or "unknown"


def _arm_part_name(implementer: str, part: str) -> str:
    implementer_code, part_code = _hex(implementer), _hex(part)
    if implementer_code is not None and part_code is not None and (implementer_code, part_code) in _ARM_PARTS:
        return _ARM_PARTS[(implementer_code, part_code)]
    return f"{_arm_vendor(implementer)} part {part or 'unknown'}"


def _hex(text: str) -> int | None:
    try:
        return int(text, 16)
    except ValueError:
        return None


def unique(items: Iterable[_T]) -> list[_T]:
    """Items without repeats, in order of first appearance (so a derived name is stable)."""
    return list(dict.fromkeys(items))


def parse_lscpu(text: str) -> CpuInfo:
    """Parse the default output of ``lscpu`` (flat util-linux < 2.38 or grouped >= 2.38, C locale).

    Physical cores are cores per socket (or per cluster) times sockets (or clusters), summed over
    the core types of a heterogeneous CPU, each listed under its own ``Model name``.
    """
    header, sections = _lscpu_sections(text)
    logical_cores = _first_count([header], "CPU(s)") or 1
    physical_cores = sum(
        _first_count([section, header], "Core(s) per socket", "Core(s) per cluster")
        * (_first_count([section, header], "Socket(s)", "Cluster(s)") or 1)
        for section in sections
    )
    if not physical_cores:
        physical_cores = logical_cores // (_first_count([header], "Thread(s) per core") or 1)
    model_names = unique(clean(s.get("Model name", "")) for s in sections)
    arch = normalise_arch(header.get("Architecture", "")) or "unknown"
    first = sections[0]

    def field(key: str) -> str:
        return clean(first.get(key, header.get(key, "")))
    x86 = arch != "aarch64"
    return CpuInfo(
        arch=arch,
        vendor=clean(header.get("Vendor ID", "")) or "unknown",
        model_name="+".join(name for name in model_names if name not in ("", "-")) or "unknown",
        logical_cores=logical_cores,
        physical_cores=min(logical_cores, max(1, physical_cores)),
        flags=_common_flags(section.get("Flags", header.get("Flags")) for section in sections),
        family=field("CPU family") if x86 else "",
        model_number=field("Model") if x86 else "",
        stepping=field("Stepping"),
    )


def _lscpu_sections(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Fields before the first ``Model name`` (the header), then one mapping per ``Model name``."""
    header: dict[str, str] = {}
    sections: list[dict[str, str]] = []
    for key, value in _key_values(text):
        if key == "Model name":
            sections.append({})
        (sections[-1] if sections else header).setdefault(key, value)
    return header, sections or [{}]


def _first_count(mappings: list[dict[str, str]], *keys: str) -> int:
    """The first whole number found under ``keys``; 0 if none (lscpu prints '-' for unknown)."""
    for mapping in mappings:
        for key in keys:
            if mapping.get(key, "").isdigit():
                return int(mapping[key])
    return 0


def llama_isa_features(flags: frozenset[str], *, arch: str) -> tuple[str, ...]:
    """The ISA features llama.cpp's CPU kernels choose between, in one spelling, sorted.

    =======  ==========================================  ==========================================
    arch     kernel flag                                 our name (llama.cpp system-info name)
    =======  ==========================================  ==========================================
    aarch64  asimd                                       asimd (NEON)
    aarch64  asimddp                                     dotprod (DOTPROD)
    aarch64  asimdhp, fphp                               fp16 (FP16_VA)
    aarch64  i8mm, bf16, sve, sve2, sme, sme2            unchanged (MATMUL_INT8, BF16, SVE, ...)
    x86_64   pni (the kernel's SSE3), sse3               sse3
    x86_64   avx512vbmi                                  avx512_vbmi
    x86_64   ssse3, sse4_2, avx, avx2, f16c, fma, bmi2,  unchanged
             avx_vnni, avx512f, avx512bw, avx512vl,
             avx512dq, avx512cd, avx512_vnni,
             avx512_bf16, amx_tile, amx_int8, amx_bf16
    =======  ==========================================  ==========================================

    Other flags (``svei8mm``, ``avx512_fp16``, ``hypervisor``, mitigations ...) are left out, so they
    cannot change the hardware id. Other architectures give an empty tuple.
    """
    table = _ISA_TABLES.get(normalise_arch(arch), {})
    return tuple(sorted({table[flag] for flag in flags if flag in table}))


def parse_system_info(text: str) -> dict[str, str]:
    """``llama_print_system_info()`` as a mapping of flag -> value, both as printed.

    CPU flags keep their bare name (``"AVX2"``, ``"SVE_CNT"``); other backends' flags get the
    backend as prefix (``"Metal.EMBED_LIBRARY"``), so no group erases another's. A flag repeated
    within one group keeps its first value. Text without a ``BACKEND :`` opener (llama.cpp before
    2024) counts as CPU.
    """
    info: dict[str, str] = {}
    backend = "CPU"
    for item in re.split(r"[|\n]", text):
        group = _SYSTEM_INFO_GROUP.fullmatch(item.strip())
        if group:
            backend, item = group["backend"], group["rest"]
        key, sep, value = item.partition("=")
        key = key.strip()
        if sep and key:
            info.setdefault(key if backend == "CPU" else f"{backend}.{key}", value.strip())
    return info


# -- the cores this process may use ------------------------------------------------------------------

SYS_ROOT = "/sys"
PROC_SELF_CGROUP = "/proc/self/cgroup"


@dataclass(frozen=True)
class UsableCores:
    """The CPUs this process may run on, and the threads llama.cpp should use on them.

    llama.cpp's tools default to one thread per physical core (SMT siblings add nothing to matrix
    arithmetic; on a hybrid x86 CPU only performance cores count). A thread count above what the
    process may use (a ``taskset`` or container cpuset, a cgroup CPU quota as ``docker --cpus=4`` sets
    on a 64-core host) makes llama.cpp's threads wait on each other at every step.
    """

    logical: int                  # CPUs in this process's affinity mask
    physical: int                 # distinct cores among them (performance cores only on hybrid x86)
    quota_cpus: float | None = None   # cgroup CPU quota in CPUs, if one is set
    machine_logical: int = 0      # every online CPU of the machine

    @property
    def default_threads(self) -> int:
        threads = self.physical
        if self.quota_cpus is not None:
            threads = min(threads, max(1, math.floor(self.quota_cpus)))
        return max(1, threads)

    def describe(self) -> str:
        """Where the default thread count comes from, e.g. ``2 physical cores of 2 usable CPUs``."""
        text = f"{self.physical} physical core(s) of the {self.logical} CPU(s) this process may use"
        if self.machine_logical > self.logical:
            text += f" (machine: {self.machine_logical})"
        if self.quota_cpus is not None and self.quota_cpus < self.physical:
            text += f", cgroup CPU quota {self.quota_cpus:g}"
        return text


def usable_cores(*, sys_root: str = SYS_ROOT, cgroup_file: str = PROC_SELF_CGROUP,
                 affinity: Iterable[int] | None = None) -> UsableCores:
    """Count the cores this process may use; falls back to ``os.cpu_count()`` where sysfs says nothing."""
    cpus = sorted(affinity if affinity is not None else _affinity())
    machine = os.cpu_count() or len(cpus) or 1
    if not cpus:
        return UsableCores(logical=machine, physical=machine, machine_logical=machine)
    performance = _cpu_list(_read(Path(sys_root, "devices", "cpu_core", "cpus")))
    candidates = [cpu for cpu in cpus if cpu in performance] if performance else cpus
    cores = {_read(Path(sys_root, "devices", "system", "cpu", f"cpu{cpu}", "topology", "thread_siblings_list"))
             or f"cpu{cpu}" for cpu in candidates or cpus}
    return UsableCores(logical=len(cpus), physical=max(1, len(cores)),
                       quota_cpus=_cgroup_quota(sys_root, cgroup_file), machine_logical=machine)


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except (OSError, ValueError):
        return ""


def _cpu_list(text: str) -> set[int]:
    """``0-3,8,10-11`` -> {0, 1, 2, 3, 8, 10, 11}; an unparsable list gives the empty set."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return set()
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def _cgroup_quota(sys_root: str, cgroup_file: str) -> float | None:
    """The tightest CPU quota on this process's cgroup path (v2 ``cpu.max``, v1 ``cfs_quota_us``)."""
    quotas: list[float] = []
    for line in _read(Path(cgroup_file)).splitlines():
        hierarchy, _, path = line.partition(":")[2].partition(":")
        controllers = set(hierarchy.split(","))
        if hierarchy == "":   # cgroup v2: walk from this cgroup up to the root
            for folder in _ancestors(Path(sys_root, "fs", "cgroup"), path):
                quota, _, period = _read(folder / "cpu.max").partition(" ")
                quotas += _quota(quota, period)
        elif "cpu" in controllers:
            for folder in _ancestors(Path(sys_root, "fs", "cgroup", "cpu"), path):
                quotas += _quota(_read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us"))
    return min(quotas) if quotas else None


def _ancestors(root: Path, path: str) -> list[Path]:
    parts = [part for part in path.split("/") if part and part != ".."]
    return [root.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _quota(quota: str, period: str) -> list[float]:
    if not quota.lstrip("-").isdigit() or not period.isdigit() or int(quota) <= 0 or int(period) <= 0:
        return []   # "max" or -1: no quota
    return [int(quota) / int(period)]
