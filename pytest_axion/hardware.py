"""The machine that measured: CPU, ISA features, llama.cpp build flags, and a stable hardware id.

Machines sold as one kind differ (one VM has AVX-512, the next does not, and runs 30% slower), so the
hardware id is derived from what the CPU really offers, never from a name alone. Collectors are
small functions that return what they can and never raise for unavailable data.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_axion.errors import HardwareIdError

_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,100}")
_ID_EXAMPLE = "gcp-c4a-standard-32"

# Arm "CPU implementer" codes and the parts llama.cpp users meet most (from the kernel's cputype.h).
_ARM_IMPLEMENTERS = {"0x41": "ARM", "0x61": "Apple", "0xc0": "Ampere", "0x48": "HiSilicon", "0x51": "Qualcomm"}
_ARM_PARTS = {
    ("0x41", "0xd0c"): "Neoverse-N1", ("0x41", "0xd40"): "Neoverse-V1", ("0x41", "0xd49"): "Neoverse-N2",
    ("0x41", "0xd4f"): "Neoverse-V2", ("0x41", "0xd8e"): "Neoverse-N3", ("0x41", "0xd84"): "Neoverse-V3",
    ("0x41", "0xd0b"): "Cortex-A76", ("0x41", "0xd08"): "Cortex-A72", ("0xc0", "0xac3"): "Ampere-1",
    ("0xc0", "0xac4"): "Ampere-1a",
}

# ISA features llama.cpp's CPU kernels choose between, as the kernel spells them -> our name.
_AARCH64_FEATURES = {
    "asimd": "asimd", "asimddp": "dotprod", "i8mm": "i8mm", "svei8mm": "i8mm", "sve": "sve", "sve2": "sve2",
    "sme": "sme", "sme2": "sme2", "bf16": "bf16", "svebf16": "bf16", "fphp": "fp16", "asimdhp": "fp16",
}
_X86_FEATURES = {
    "sse3": "sse3", "pni": "sse3", "ssse3": "ssse3", "avx": "avx", "avx2": "avx2", "f16c": "f16c", "fma": "fma",
    "avx_vnni": "avx_vnni", "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512vl": "avx512vl",
    "avx512dq": "avx512dq", "avx512cd": "avx512cd", "avx512vbmi": "avx512_vbmi", "avx512_vbmi": "avx512_vbmi",
    "avx512_vnni": "avx512_vnni", "avx512_bf16": "avx512_bf16", "avx512_fp16": "avx512_fp16",
    "amx_tile": "amx_tile", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16",
}


@dataclass(frozen=True)
class CpuInfo:
    arch: str
    vendor: str
    model_name: str
    logical_cores: int
    physical_cores: int
    flags: frozenset[str]


def parse_cpuinfo(text: str, *, arch: str) -> CpuInfo:
    """Parse ``/proc/cpuinfo`` of an x86_64 or aarch64 Linux machine."""
    blocks = [_fields(block) for block in re.split(r"\n\s*\n", text.strip()) if "processor" in block]
    first = blocks[0] if blocks else {}
    logical = max(1, len(blocks))
    if arch == "aarch64":
        implementer = first.get("CPU implementer", "").lower()
        part = first.get("CPU part", "").lower()
        vendor = _ARM_IMPLEMENTERS.get(implementer, implementer or "unknown")
        model = first.get("model name") or _ARM_PARTS.get((implementer, part), f"{vendor} part {part}".strip())
        return CpuInfo(arch, vendor, model, logical, logical, frozenset(first.get("Features", "").split()))
    cores = {(b.get("physical id", "0"), b.get("core id", str(i))) for i, b in enumerate(blocks)}
    return CpuInfo(
        arch=arch,
        vendor=first.get("vendor_id", "unknown"),
        model_name=first.get("model name", "unknown"),
        logical_cores=logical,
        physical_cores=max(1, len(cores)),
        flags=frozenset(first.get("flags", "").split()),
    )


def parse_lscpu(text: str) -> CpuInfo:
    """Parse the default output of ``lscpu``."""
    values = _fields(text)

    def count(*keys: str) -> int:
        for key in keys:
            if values.get(key, "").isdigit():
                return int(values[key])
        return 1

    logical = count("CPU(s)")
    physical = count("Core(s) per socket", "Core(s) per cluster") * count("Socket(s)", "Cluster(s)")
    return CpuInfo(
        arch=values.get("Architecture", platform.machine()),
        vendor=values.get("Vendor ID", "unknown"),
        model_name=values.get("Model name", "unknown"),
        logical_cores=logical,
        physical_cores=min(logical, physical),
        flags=frozenset(values.get("Flags", "").split()),
    )


def _fields(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and key.strip() not in out:
            out[key.strip()] = value.strip()
    return out


def llama_isa_features(flags: frozenset[str], *, arch: str) -> tuple[str, ...]:
    """The CPU features llama.cpp's kernels care about, in one spelling, sorted.

    aarch64: asimddp -> dotprod, svei8mm -> i8mm, svebf16 -> bf16, fphp/asimdhp -> fp16;
    x86: pni -> sse3, avx512vbmi -> avx512_vbmi. Other names are kept as the kernel prints them.
    """
    table = _AARCH64_FEATURES if arch == "aarch64" else _X86_FEATURES
    return tuple(sorted({table[f] for f in flags if f in table}))


def parse_system_info(text: str) -> dict[str, str]:
    """``llama_print_system_info()`` as a mapping; non-CPU backends' keys get a ``Backend.`` prefix."""
    out: dict[str, str] = {}
    backend = "CPU"
    for part in text.split("|"):
        part = part.strip()
        if not part:
            continue
        # "CPU : SSE3 = 1" opens a backend group; "AVX = 1" continues the current one.
        match = re.match(r"^(\w[\w ]*?)\s*:\s*(.*)$", part)
        if match:
            backend, part = match.group(1).strip(), match.group(2).strip()
        key, sep, value = part.partition("=")
        if not sep:
            continue
        name = key.strip().upper() if backend == "CPU" else f"{backend}.{key.strip().upper()}"
        out.setdefault(name, value.strip())
    return out


def microarch_name() -> str:
    """archspec's micro-architecture name: ``zen3``, ``x86_64_v4``, ``neoverse_v2``; ``unknown`` if none."""
    try:
        import archspec.cpu

        return str(archspec.cpu.host().name)
    except Exception:  # archspec cannot tell on some hosts; the id still has the ISA hash
        return "unknown"


def derive_hardware_id(cpu: CpuInfo, *, microarch: str) -> str:
    """``<arch>-<microarch>-<N>c-<hash8>``: stable for one machine type, different when ISA or cores differ."""
    features = llama_isa_features(cpu.flags, arch=cpu.arch)
    identity = "\n".join([cpu.vendor, cpu.model_name, *features])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    raw = f"{cpu.arch}-{microarch}-{cpu.logical_cores}c-{digest}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)


def validate_hardware_id(value: str, *, source: str) -> str:
    """Accept only file-system-safe ids (they name a baselines folder)."""
    if not _ID_PATTERN.fullmatch(value) or value.startswith("."):
        raise HardwareIdError(
            f"invalid hardware id {value!r} (from {source}): use 1-100 letters, digits, '.', '_' and '-', "
            f"not starting with '.', for example {_ID_EXAMPLE!r}"
        )
    return value


@dataclass(frozen=True)
class HardwareFingerprint:
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
    llama_cpp_system_info: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["isa_features"] = list(self.isa_features)
        data["llama_cpp_system_info"] = dict(sorted(self.llama_cpp_system_info.items()))
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HardwareFingerprint:
        values = {name: data[name] for name in cls.__dataclass_fields__}
        values["isa_features"] = tuple(values["isa_features"])
        values["llama_cpp_system_info"] = {str(k): str(v) for k, v in values["llama_cpp_system_info"].items()}
        return cls(**values)

    def differences(self, other: HardwareFingerprint) -> list[str]:
        """What differs between two machines in ways that change performance, one short line each."""
        out = []
        for name in ("arch", "cpu_vendor", "cpu_model", "microarch", "logical_cores", "physical_cores",
                     "llama_cpp_python"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                out.append(f"{name} {mine} -> {theirs}")
        added = sorted(set(other.isa_features) - set(self.isa_features))
        removed = sorted(set(self.isa_features) - set(other.isa_features))
        if added or removed:
            out.append("isa_features " + " ".join([*(f"+{f}" for f in added), *(f"-{f}" for f in removed)]))
        flags = sorted(set(self.llama_cpp_system_info) | set(other.llama_cpp_system_info))
        for flag in flags:
            mine_flag = self.llama_cpp_system_info.get(flag, "absent")
            theirs_flag = other.llama_cpp_system_info.get(flag, "absent")
            if mine_flag != theirs_flag:
                out.append(f"llama.cpp {flag} {mine_flag} -> {theirs_flag}")
        return out


def _read_cpu() -> CpuInfo:
    arch = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            return parse_cpuinfo(handle.read(), arch=arch)
    except OSError:
        logical = os.cpu_count() or 1
        return CpuInfo(arch, "unknown", platform.processor() or "unknown", logical, logical, frozenset())


def _physical_cores(cpu: CpuInfo) -> int:
    try:
        import psutil

        return int(psutil.cpu_count(logical=False) or cpu.physical_cores)
    except Exception:
        return cpu.physical_cores


def _memory_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:
        return 0


def collect_hardware(*, system_info: str = "", llama_cpp_python_version: str = "not installed",
                     hardware_id_override: str | None = None,
                     override_source: str = "--axion-hardware") -> HardwareFingerprint:
    """Fingerprint this machine; the id is derived from the CPU unless overridden (and validated)."""
    cpu = _read_cpu()
    microarch = microarch_name()
    if hardware_id_override is not None:
        hardware_id, id_source = validate_hardware_id(hardware_id_override, source=override_source), override_source
    else:
        hardware_id, id_source = derive_hardware_id(cpu, microarch=microarch), "derived"
    return HardwareFingerprint(
        hardware_id=hardware_id,
        hardware_id_source=id_source,
        arch=cpu.arch,
        cpu_vendor=cpu.vendor,
        cpu_model=cpu.model_name,
        microarch=microarch,
        logical_cores=cpu.logical_cores,
        physical_cores=_physical_cores(cpu),
        isa_features=llama_isa_features(cpu.flags, arch=cpu.arch),
        memory_bytes=_memory_bytes(),
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        llama_cpp_python=llama_cpp_python_version,
        llama_cpp_system_info=parse_system_info(system_info),
    )
