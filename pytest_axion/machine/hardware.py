"""The machine that measured: its fingerprint, and a hardware id that selects its baselines.

Machines sold as one kind differ (one VM has AVX-512, the next is a Zen 3 without it and runs 30% slower;
two AMD EPYC generations behind one hypervisor both say "AMD EPYC" and archspec calls both
``x86_64_v4``), so the id is derived from what tells CPU generations apart: on x86 the CPUID family and
model, on Arm the implementer and part, plus the cores and the ISA features llama.cpp uses. What only
describes a machine (archspec's name, stepping, microcode, caches, the DMI product) is kept in the
fingerprint, where "baseline differs" can name it, but never changes the id: a split id costs only
"no baseline yet", a merged one costs false regressions. Collectors never raise for unavailable data.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

from pytest_axion.errors import HardwareIdError
from pytest_axion.machine.cpu import (
    CpuInfo,
    clean,
    cpuinfo_blocks,
    llama_isa_features,
    normalise_arch,
    parse_cpuinfo,
    parse_system_info,
    unique,
)

_ID_ALLOWED = re.compile(r"[A-Za-z0-9._-]")
_ID_MAX_CHARS = 100
_ID_EXAMPLE = "gcp-c4a-standard-32"
# Windows opens a device instead of a folder for these names, with or without an extension.
_WINDOWS_DEVICE_NAMES = frozenset(
    ["con", "prn", "aux", "nul", *(f"com{n}" for n in range(1, 10)), *(f"lpt{n}" for n in range(1, 10))]
)
# Longest CPU name kept in a derived id, so the id stays far below the 100-character limit.
_ID_PART_MAX_CHARS = 40
# 1: arch-archspec-cores-hash(vendor, name, cores, features); 2: family/model in the readable part and the hash.
HARDWARE_ID_SCHEME = 2
_X86_VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd", "HygonGenuine": "hygon", "CentaurHauls": "centaur",
                "Shanghai": "zhaoxin"}

# Fingerprint fields compared one to one by differences(): what changes performance, then what describes.
_COMPARED_FIELDS = ("arch", "cpu_vendor", "cpu_model", "cpu_family", "cpu_model_number", "logical_cores",
                    "physical_cores", "llama_cpp_python", "microarch", "cpu_stepping", "microcode", "caches", "dmi")


def microarch_name() -> str:
    """archspec's name for this CPU (``zen3``, ``x86_64_v4``, ``neoverse_v2``); ``unknown`` if it fails.

    Descriptive only: archspec decides x86 names by required flags, which hypervisors hide.
    """
    return str(getattr(_archspec_host(), "name", "")) or "unknown"


def _archspec_host() -> object | None:
    """archspec's best-matching micro-architecture for this CPU, or None if it cannot tell."""
    try:
        import archspec.cpu

        host: object = archspec.cpu.host()
        return host
    except Exception:  # archspec raises on unreadable /proc or odd vendors; the id does not need it
        return None


def cpu_generation(cpu: CpuInfo) -> str:
    """The readable CPU part of the id: ``amd_f25m17``, ``intel_f6m207``, ``neoverse_v2``."""
    if cpu.family and cpu.model_number:
        vendor = _X86_VENDORS.get(cpu.vendor, cpu.vendor)
        return _id_part(f"{vendor}_f{cpu.family}m{cpu.model_number}").lower()
    name = cpu.model_name if cpu.model_name != "unknown" else cpu.vendor
    return _id_part(name).lower()


def derive_hardware_id(cpu: CpuInfo) -> str:
    """``<arch>-<cpu>-<N>c-<hash8>``, e.g. ``x86_64-amd_f25m17-2c-3f9a1c2e``; N is logical cores.

    ``<cpu>`` is the x86 vendor with CPUID family and model, or the Arm core (implementer and part).
    The hash is the first 8 hex digits of sha256 over the id scheme, vendor, model name, family,
    model, physical core count and the sorted ``llama_isa_features``: the same machine type gives the
    same id on every run, while another CPU generation, a machine with or without AVX-512, another
    core count, or SMT off instead of on gets another. Nothing that varies between runs or only
    describes (hostname, memory, clock, stepping, microcode, mitigations) goes in. A kernel that newly
    reports a feature llama.cpp uses (AMX needs kernel support) does change the id, as it changes speed.
    """
    features = llama_isa_features(cpu.flags, arch=cpu.arch)
    identity = "\n".join([f"scheme {HARDWARE_ID_SCHEME}", cpu.vendor, cpu.model_name, f"family {cpu.family}",
                          f"model {cpu.model_number}", f"{cpu.physical_cores} physical cores", *features])
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:8]
    return f"{_id_part(cpu.arch)}-{cpu_generation(cpu)}-{max(1, cpu.logical_cores)}c-{digest}"


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
    bad_chars = unique(char for char in value if not _ID_ALLOWED.fullmatch(char))
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

    ``llama_cpp_system_info`` is a plain dict (left out of ``hash()``; do not mutate it). Fields after
    it were added with hardware id scheme 2; a fingerprint stored before reads them as empty (unknown)
    and ``hardware_id_scheme`` 1.
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
    cpu_family: str = ""
    cpu_model_number: str = ""
    cpu_stepping: str = ""
    microcode: str = ""
    caches: str = ""             # e.g. "L1d 32K, L1i 32K, L2 1024K, L3 32768K" (per core, as sysfs lists them)
    dmi: str = ""                # e.g. "Amazon EC2 c7g.4xlarge"; AWS names its instance type, GCP and Azure do not
    hardware_id_scheme: int = 1

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
        optional = {"llama_cpp_system_info", *_SCHEME_2_FIELDS}
        missing = sorted(item.name for item in fields(cls) if item.name not in data and item.name not in optional)
        if missing:
            raise ValueError(f"{source} lacks {', '.join(missing)}: write it with HardwareFingerprint.to_json()")
        later = {name: _json_str(data, name, source) for name in _SCHEME_2_FIELDS
                 if name != "hardware_id_scheme" and name in data}
        if "hardware_id_scheme" in data:
            later["hardware_id_scheme"] = _json_int(data, "hardware_id_scheme", source)   # type: ignore[assignment]
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
            llama_cpp_system_info=(_json_str_dict(data, "llama_cpp_system_info", source)
                                   if "llama_cpp_system_info" in data else {}),
            **later,  # type: ignore[arg-type]
        )

    @property
    def cpu_description(self) -> str:
        """``AMD EPYC (family 25 model 17 stepping 1, archspec x86_64_v4)``: the CPU as a person reads it."""
        numbers = " ".join(f"{name} {value}" for name, value in (("family", self.cpu_family),
                                                                 ("model", self.cpu_model_number),
                                                                 ("stepping", self.cpu_stepping)) if value)
        return f"{self.cpu_model} ({numbers + ', ' if numbers else ''}archspec {self.microarch})"

    def differences(self, other: HardwareFingerprint) -> list[str]:
        """How ``other`` (this run) differs from this (stored) fingerprint, one short line each.

        For example ``"cpu_model_number 17 -> 2"``, ``"isa_features +avx512f -sve"`` or
        ``"llama.cpp KLEIDIAI 1 -> absent"``. Python, OS, memory size and the id's source are ignored;
        a field either side does not know (an older file) is not compared, and a fingerprint of the
        old id scheme says so.
        """
        changes = [
            f"{name} {getattr(self, name) or '?'} -> {getattr(other, name) or '?'}"
            for name in _COMPARED_FIELDS
            if getattr(self, name) != getattr(other, name) and getattr(self, name) != "" and getattr(other, name) != ""
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
        if self.hardware_id_scheme < HARDWARE_ID_SCHEME <= other.hardware_id_scheme:
            changes.append(f"recorded under hardware id scheme {self.hardware_id_scheme}, which did not tell CPU "
                           "generations apart (no CPU family or model): it may come from another CPU; record it again")
        return changes


_SCHEME_2_FIELDS = ("cpu_family", "cpu_model_number", "cpu_stepping", "microcode", "caches", "dmi",
                    "hardware_id_scheme")


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


CPUINFO_PATH = "/proc/cpuinfo"
SYS_ROOT = "/sys"


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
    cpuinfo_text = _read_text(CPUINFO_PATH)
    cpu = _collect_cpu(cpuinfo_text)
    if hardware_id_override is None:
        hardware_id, id_source = derive_hardware_id(cpu), "derived"
    else:
        hardware_id, id_source = hardware_id_override, override_source
    return HardwareFingerprint(
        hardware_id=hardware_id,
        hardware_id_source=id_source,
        arch=cpu.arch,
        cpu_vendor=cpu.vendor,
        cpu_model=cpu.model_name,
        microarch=microarch_name(),
        logical_cores=cpu.logical_cores,
        physical_cores=cpu.physical_cores,
        isa_features=llama_isa_features(cpu.flags, arch=cpu.arch),
        memory_bytes=_memory_bytes(),
        os=f"{platform.system()} {platform.release()}".strip() or "unknown",
        python=platform.python_version(),
        llama_cpp_python=llama_cpp_python_version,
        llama_cpp_system_info=parse_system_info(system_info),
        cpu_family=cpu.family,
        cpu_model_number=cpu.model_number,
        cpu_stepping=cpu.stepping,
        microcode=_microcode(cpuinfo_text),
        caches=_caches(SYS_ROOT),
        dmi=_dmi(SYS_ROOT),
        hardware_id_scheme=HARDWARE_ID_SCHEME,
    )


def _collect_cpu(cpuinfo_text: str) -> CpuInfo:
    """The CPU from ``/proc/cpuinfo`` text (Linux), else from platform and os; psutil's physical core count."""
    arch = normalise_arch(platform.machine()) or "unknown"
    if cpuinfo_blocks(cpuinfo_text):
        cpu = parse_cpuinfo(cpuinfo_text, arch=arch)
    else:
        logical_cores = os.cpu_count() or 1
        cpu = CpuInfo(arch, "unknown", platform.processor() or "unknown", logical_cores, logical_cores, frozenset())
    if not cpu.flags:
        cpu = replace(cpu, flags=_archspec_features())
    return replace(cpu, physical_cores=_physical_cores(default=cpu.physical_cores, limit=cpu.logical_cores))


def _read_text(path: str | os.PathLike[str]) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except (OSError, ValueError):
        return ""


def _microcode(cpuinfo_text: str) -> str:
    """The microcode revision x86 guests list (unreliable there: Azure shows 0xffffffff); '' on Arm."""
    blocks = cpuinfo_blocks(cpuinfo_text)
    return clean(blocks[0].get("microcode", "")) if blocks else ""


def _caches(sys_root: str) -> str:
    """CPU 0's caches as sysfs lists them: ``L1d 32K, L1i 32K, L2 1024K, L3 32768K``."""
    folder = os.path.join(sys_root, "devices", "system", "cpu", "cpu0", "cache")
    try:
        indexes = sorted(name for name in os.listdir(folder) if name.startswith("index"))
    except OSError:
        return ""
    caches = []
    for index in indexes:
        level = _read_text(os.path.join(folder, index, "level")).strip()
        kind = _read_text(os.path.join(folder, index, "type")).strip()
        size = _read_text(os.path.join(folder, index, "size")).strip()
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        if level and size:
            caches.append(f"L{level}{suffix} {size}")
    return ", ".join(caches)


def _dmi(sys_root: str) -> str:
    """DMI vendor and product (AWS Nitro names its instance type here); never a per-instance serial or UUID."""
    folder = os.path.join(sys_root, "class", "dmi", "id")
    parts = [clean(_read_text(os.path.join(folder, name))) for name in ("sys_vendor", "product_name")]
    return " ".join(unique(part for part in parts if part))


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
