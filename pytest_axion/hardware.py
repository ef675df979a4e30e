"""The machine that measured: CPU, ISA features, llama.cpp build flags, and a stable hardware id.

Machines sold as one kind differ (one VM has AVX-512, the next is a Zen 3 without it and runs 30% slower),
so the hardware id is derived from what the CPU really offers, never from a name alone. Collectors are
small functions that return what they can and never raise for unavailable data.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import TypeVar

from pytest_axion.errors import HardwareIdError

_T = TypeVar("_T")

_ID_ALLOWED = re.compile(r"[A-Za-z0-9._-]")
_ID_MAX_CHARS = 100
_ID_EXAMPLE = "gcp-c4a-standard-32"
# Windows opens a device instead of a folder for these names, with or without an extension.
_WINDOWS_DEVICE_NAMES = frozenset(
    ["con", "prn", "aux", "nul", *(f"com{n}" for n in range(1, 10)), *(f"lpt{n}" for n in range(1, 10))]
)
# Longest microarch name kept in a derived id, so the id stays far below the 100-character limit.
_ID_PART_MAX_CHARS = 40

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

# Fingerprint fields whose change alters performance, compared one to one by differences().
_COMPARED_FIELDS = ("arch", "cpu_vendor", "cpu_model", "microarch", "logical_cores", "physical_cores",
                    "llama_cpp_python")


@dataclass(frozen=True)
class CpuInfo:
    """What the kernel (or lscpu) says about the CPU: identity, core counts and raw ISA flags."""

    arch: str
    vendor: str
    model_name: str
    logical_cores: int
    physical_cores: int
    flags: frozenset[str]


def parse_cpuinfo(text: str, *, arch: str) -> CpuInfo:
    """Parse ``/proc/cpuinfo`` of an x86_64 or aarch64 Linux machine.

    Logical cores are the ``processor`` blocks; x86 physical cores are the distinct
    (``physical id``, ``core id``) pairs. arm64 lists no topology and its server cores have no SMT,
    so there physical equals logical (``collect_hardware`` asks psutil, which reads sysfs, instead).
    Flags are those every block lists. Without a ``model name``, an Arm core is named from its
    ``CPU implementer``/``CPU part``; several core types (big.LITTLE) are joined with ``+``.
    """
    arch = _normalise_arch(arch)
    blocks = _cpuinfo_blocks(text)
    logical_cores = max(1, len(blocks))
    flags = _common_flags(block.get("flags", block.get("Features")) for block in blocks)
    first = blocks[0] if blocks else {}
    if arch == "aarch64" or ("CPU implementer" in first and "vendor_id" not in first):
        vendor, model_name = _arm_identity(blocks)
        return CpuInfo(arch, vendor, model_name, logical_cores, logical_cores, flags)
    physical_cores = min(logical_cores, max(1, _x86_physical_cores(blocks) or logical_cores))
    return CpuInfo(
        arch=arch,
        vendor=_clean(first.get("vendor_id", "")) or "unknown",
        model_name=_clean(first.get("model name", first.get("cpu", ""))) or "unknown",
        logical_cores=logical_cores,
        physical_cores=physical_cores,
        flags=flags,
    )


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
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


def _clean(text: str) -> str:
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
    core_types = _unique((block.get("CPU implementer", ""), block.get("CPU part", "")) for block in blocks)
    if not core_types:
        return "unknown", "unknown"
    vendor = "+".join(_unique(_arm_vendor(implementer) for implementer, _ in core_types))
    model_name = _clean(blocks[0].get("model name", ""))
    if not model_name:
        model_name = "+".join(_unique(_arm_part_name(implementer, part) for implementer, part in core_types))
    return vendor, model_name


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


def _unique(items: Iterable[_T]) -> list[_T]:
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
    model_names = _unique(_clean(s.get("Model name", "")) for s in sections)
    return CpuInfo(
        arch=_normalise_arch(header.get("Architecture", "")) or "unknown",
        vendor=_clean(header.get("Vendor ID", "")) or "unknown",
        model_name="+".join(name for name in model_names if name not in ("", "-")) or "unknown",
        logical_cores=logical_cores,
        physical_cores=min(logical_cores, max(1, physical_cores)),
        flags=_common_flags(section.get("Flags", header.get("Flags")) for section in sections),
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
    table = _ISA_TABLES.get(_normalise_arch(arch), {})
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


def microarch_name() -> str:
    """archspec's name for this CPU (``zen3``, ``x86_64_v4``, ``neoverse_v2``); ``unknown`` if it fails."""
    return str(getattr(_archspec_host(), "name", "")) or "unknown"


def _archspec_host() -> object | None:
    """archspec's best-matching micro-architecture for this CPU, or None if it cannot tell."""
    try:
        import archspec.cpu

        host: object = archspec.cpu.host()
        return host
    except Exception:  # archspec raises on unreadable /proc or odd vendors; the id still has the ISA hash
        return None


def derive_hardware_id(cpu: CpuInfo, *, microarch: str) -> str:
    """``<arch>-<microarch>-<N>c-<hash8>``, e.g. ``x86_64-zen3-2c-3f9a1c2e``; N is logical cores.

    The hash is the first 8 hex digits of sha256 over vendor, model name, physical core count and
    the sorted ``llama_isa_features``: the same machine type gives the same id on every run, while
    a machine with or without AVX-512, with another core count, or with SMT off instead of on, gets
    another. Nothing that varies between runs (hostname, memory size, clock, mitigation flags) goes
    in. A kernel that newly reports a feature llama.cpp uses (AMX needs kernel support) does change
    the id, as it changes the speed.
    """
    features = llama_isa_features(cpu.flags, arch=cpu.arch)
    identity = "\n".join([cpu.vendor, cpu.model_name, f"{cpu.physical_cores} physical cores", *features])
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:8]
    return f"{_id_part(cpu.arch)}-{_id_part(microarch)}-{max(1, cpu.logical_cores)}c-{digest}"


def _id_part(text: str) -> str:
    # '-' separates the parts and '.' may not lead, so a part holds only letters, digits and '_'.
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")[:_ID_PART_MAX_CHARS] or "unknown"


def validate_hardware_id(value: str, *, source: str) -> str:
    """Return ``value`` if it can name a baselines folder on any OS; else raise ``HardwareIdError``.

    Allowed: 1 to 100 letters, digits, '.', '_' and '-', not starting or ending with '.', and not
    a Windows device name (``con``, ``nul.x`` ...). The one-line message names the value, ``source``
    (an option, ini key or file) and the fix.
    """
    problem = _id_problem(value)
    if problem:
        shown = value if len(value) <= 60 else value[:60] + "..."
        raise HardwareIdError(
            f"invalid hardware id {shown!r} (from {source}): {problem}; use only letters, digits, '.', '_' and "
            f"'-', 1 to {_ID_MAX_CHARS} characters, not starting or ending with '.', "
            f"for example {_ID_EXAMPLE!r}"
        )
    return value


def _id_problem(value: str) -> str:
    """What makes ``value`` unsafe as a folder name, or '' if nothing does."""
    if not value:
        return "it is empty"
    if len(value) > _ID_MAX_CHARS:
        return f"it is {len(value)} characters long"
    bad_chars = _unique(char for char in value if not _ID_ALLOWED.fullmatch(char))
    if bad_chars:
        return "it contains " + " ".join(repr(char) for char in bad_chars)
    if value.startswith("."):
        return "it starts with '.'"
    if value.endswith("."):
        return "it ends with '.'"
    if value.split(".")[0].lower() in _WINDOWS_DEVICE_NAMES:
        return "it is a Windows device name"
    return ""


@dataclass(frozen=True)
class HardwareFingerprint:
    """Everything about the measuring machine and llama.cpp build that a baseline must match.

    ``llama_cpp_system_info`` is a plain dict (left out of ``hash()``; do not mutate it).
    """

    hardware_id: str
    hardware_id_source: str
    arch: str
    cpu_vendor: str
    cpu_model: str
    microarch: str
    logical_cores: int
    physical_cores: int
    isa_features: tuple[str, ...]
    memory_bytes: int
    os: str
    python: str
    llama_cpp_python: str
    llama_cpp_system_info: dict[str, str] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, object]:
        """Plain JSON types (lists, not tuples), keys sorted."""
        data: dict[str, object] = {item.name: getattr(self, item.name) for item in fields(self)}
        data["isa_features"] = list(self.isa_features)
        data["llama_cpp_system_info"] = dict(sorted(self.llama_cpp_system_info.items()))
        return dict(sorted(data.items()))

    @classmethod
    def from_json(cls, data: Mapping[str, object], *, source: str = "hardware fingerprint") -> HardwareFingerprint:
        """Rebuild from ``to_json()`` output; unknown keys are ignored (written by a newer version).

        Raises ``ValueError`` naming ``source`` for a missing or mistyped field, and
        ``HardwareIdError`` for an unsafe hardware id.
        """
        missing = sorted(item.name for item in fields(cls) if item.name not in data)
        if missing:
            raise ValueError(f"{source} lacks {', '.join(missing)}: write it with HardwareFingerprint.to_json()")
        return cls(
            hardware_id=validate_hardware_id(_json_str(data, "hardware_id", source), source=source),
            hardware_id_source=_json_str(data, "hardware_id_source", source),
            arch=_json_str(data, "arch", source),
            cpu_vendor=_json_str(data, "cpu_vendor", source),
            cpu_model=_json_str(data, "cpu_model", source),
            microarch=_json_str(data, "microarch", source),
            logical_cores=_json_int(data, "logical_cores", source),
            physical_cores=_json_int(data, "physical_cores", source),
            isa_features=_json_str_tuple(data, "isa_features", source),
            memory_bytes=_json_int(data, "memory_bytes", source),
            os=_json_str(data, "os", source),
            python=_json_str(data, "python", source),
            llama_cpp_python=_json_str(data, "llama_cpp_python", source),
            llama_cpp_system_info=_json_str_dict(data, "llama_cpp_system_info", source),
        )

    def differences(self, other: HardwareFingerprint) -> list[str]:
        """How ``other`` differs in ways that change performance, one short line each.

        For example ``"microarch zen3 -> zen4"``, ``"isa_features +avx512f -sve"`` or
        ``"llama.cpp KLEIDIAI 1 -> absent"``. Python, OS, memory size and the id's source are ignored.
        """
        changes = [
            f"{name} {getattr(self, name)} -> {getattr(other, name)}"
            for name in _COMPARED_FIELDS
            if getattr(self, name) != getattr(other, name)
        ]
        added = sorted(set(other.isa_features) - set(self.isa_features))
        removed = sorted(set(self.isa_features) - set(other.isa_features))
        if added or removed:
            changes.append(" ".join(["isa_features", *(f"+{f}" for f in added), *(f"-{f}" for f in removed)]))
        mine, theirs = self.llama_cpp_system_info, other.llama_cpp_system_info
        for flag in sorted(mine.keys() | theirs.keys()):
            before, after = mine.get(flag, "absent"), theirs.get(flag, "absent")
            if before != after:
                changes.append(f"llama.cpp {flag} {before} -> {after}")
        return changes


def _json_error(source: str, key: str, expected: str, value: object) -> ValueError:
    return ValueError(
        f"{source} field {key!r} must be {expected}, not {value!r}: write it with HardwareFingerprint.to_json()"
    )


def _json_str(data: Mapping[str, object], key: str, source: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise _json_error(source, key, "a string", value)
    return value


def _json_int(data: Mapping[str, object], key: str, source: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _json_error(source, key, "a whole number >= 0", value)
    return value


def _json_str_tuple(data: Mapping[str, object], key: str, source: str) -> tuple[str, ...]:
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _json_error(source, key, "a list of strings", value)
    return tuple(value)


def _json_str_dict(data: Mapping[str, object], key: str, source: str) -> dict[str, str]:
    value = data[key]
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise _json_error(source, key, "an object of strings", value)
    return {str(k): str(v) for k, v in value.items()}


def collect_hardware(
    *,
    system_info: str = "",
    llama_cpp_python_version: str = "not installed",
    hardware_id_override: str | None = None,
    override_source: str = "--axion-hardware",
) -> HardwareFingerprint:
    """Fingerprint this machine; the id is derived from the CPU unless overridden.

    ``system_info`` is ``llama_cpp.llama_print_system_info()`` decoded. An override is validated
    (``HardwareIdError`` naming ``override_source``) before anything is collected.
    """
    if hardware_id_override is not None:
        validate_hardware_id(hardware_id_override, source=override_source)
    cpu = _collect_cpu()
    microarch = microarch_name()
    if hardware_id_override is None:
        hardware_id, id_source = derive_hardware_id(cpu, microarch=microarch), "derived"
    else:
        hardware_id, id_source = hardware_id_override, override_source
    return HardwareFingerprint(
        hardware_id=hardware_id,
        hardware_id_source=id_source,
        arch=cpu.arch,
        cpu_vendor=cpu.vendor,
        cpu_model=cpu.model_name,
        microarch=microarch,
        logical_cores=cpu.logical_cores,
        physical_cores=cpu.physical_cores,
        isa_features=llama_isa_features(cpu.flags, arch=cpu.arch),
        memory_bytes=_memory_bytes(),
        os=f"{platform.system()} {platform.release()}".strip() or "unknown",
        python=platform.python_version(),
        llama_cpp_python=llama_cpp_python_version,
        llama_cpp_system_info=parse_system_info(system_info),
    )


def _collect_cpu(cpuinfo_path: str = "/proc/cpuinfo") -> CpuInfo:
    """The CPU from ``cpuinfo_path`` (Linux), else from platform and os; psutil's physical core count."""
    arch = _normalise_arch(platform.machine()) or "unknown"
    text = _read_text(cpuinfo_path)
    if _cpuinfo_blocks(text):
        cpu = parse_cpuinfo(text, arch=arch)
    else:
        logical_cores = os.cpu_count() or 1
        cpu = CpuInfo(arch, "unknown", platform.processor() or "unknown", logical_cores, logical_cores, frozenset())
    if not cpu.flags:
        cpu = replace(cpu, flags=_archspec_features())
    return replace(cpu, physical_cores=_physical_cores(default=cpu.physical_cores, limit=cpu.logical_cores))


def _normalise_arch(machine: str) -> str:
    return _ARCH_ALIASES.get(machine.strip().lower(), machine.strip())


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _archspec_features() -> frozenset[str]:
    """archspec's feature names for this CPU, where the kernel lists none (macOS, Windows)."""
    return frozenset(str(name) for name in getattr(_archspec_host(), "features", ()))


def _physical_cores(*, default: int, limit: int) -> int:
    """psutil's count (sysfs topology, right on arm64 too); ``default`` if it has none."""
    try:
        import psutil

        counted = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unsupported platform
        return default
    return int(counted) if isinstance(counted, int) and 1 <= counted <= limit else default


def _memory_bytes() -> int:
    """Total RAM from psutil, else POSIX sysconf, else 0 (unknown)."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # psutil missing or unsupported platform
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):  # not POSIX
        return 0
