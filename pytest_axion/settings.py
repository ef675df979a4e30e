"""Command-line options and ini values, resolved once into one validated, frozen record.

One table (:data:`OPTIONS`) drives the pytest options, the ini keys, the help text and the
resolution, so they cannot disagree. Precedence: command line > ini > default. Every value keeps
where it came from, so an error can say which option or ini key to fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from pytest_axion.errors import SettingsError
from pytest_axion.hardware import validate_hardware_id
from pytest_axion.reading import DEFAULT_READING_SPEED, ReadingSpeedSpec, parse_reading_speed

T = TypeVar("T")


@dataclass(frozen=True)
class OptionSpec:
    name: str           # attribute name in Settings
    flag: str           # command-line flag
    ini: str | None     # ini key, or None for command-line only
    kind: str           # "flag", "str", "int"
    help: str
    metavar: str | None = None


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("enabled", "--axion-slo", None, "flag",
               "run the performance measurements and check the declared SLOs (without it, tests that "
               "use the axion fixtures are skipped)"),
    OptionSpec("model", "--axion-model", "axion_model", "str",
               "GGUF model to measure (default: the embedded SmolLM2-135M Q4_1 from pytest-axion[model])",
               "PATH"),
    OptionSpec("threads", "--axion-threads", "axion_threads", "int",
               "threads for llama.cpp (default: the number of physical cores)", "N"),
    OptionSpec("repetitions", "--axion-repetitions", "axion_repetitions", "int",
               "timed repetitions per measurement, after one warm-up (default: 5, as llama-bench)", "R"),
    OptionSpec("reading_speed", "--axion-reading-speed", "axion_reading_speed", "str",
               "human reading speed for per_user_tps='reading': tokens/s ('5', the default) or words per "
               "minute ('238wpm', converted with the model's tokenizer)", "SPEED"),
    OptionSpec("report", "--axion-report", "axion_report", "str",
               "write a JSON report of every measurement and verdict (schema: pytest_axion/schemas/"
               "report.schema.json)", "PATH"),
    OptionSpec("plots", "--axion-plots", "axion_plots", "str",
               "draw the benchmark's three figures (PNG and SVG) into this folder; needs pytest-axion[plots]",
               "DIR"),
    OptionSpec("hardware", "--axion-hardware", "axion_hardware", "str",
               "hardware id that selects baselines, e.g. gcp-c4a-standard-32 (default: derived from the "
               "CPU; letters, digits, '.', '_' and '-' only)", "ID"),
)

DEFAULT_REPETITIONS = 5
MAX_REPETITIONS = 1000


@dataclass(frozen=True)
class Sourced(Generic[T]):
    """A value and where it came from: ``--axion-threads``, ``ini axion_threads`` or ``default``."""

    value: T
    source: str


@dataclass(frozen=True)
class Settings:
    enabled: bool
    model: Sourced[str | None]      # None: the embedded model
    threads: Sourced[int]
    repetitions: Sourced[int]
    hardware: Sourced[str | None]   # None: derive from the CPU
    reading_speed: ReadingSpeedSpec
    report: Sourced[str | None]
    plots: Sourced[str | None]
    warnings: tuple[str, ...] = ()


def resolve_settings(cli: Mapping[str, object], ini: Mapping[str, str], *,
                     physical_cores: int, logical_cores: int) -> Settings:
    """Build :class:`Settings` from raw option values (``None`` = not given) and raw ini strings.

    Raises :class:`SettingsError` naming the option or ini key and the fix.
    """
    warnings: list[str] = []
    raw = {spec.name: _pick(spec, cli, ini) for spec in OPTIONS}

    threads = _as_int(raw["threads"], default=max(1, physical_cores))
    if threads.value < 1:
        raise SettingsError(
            f"{threads.source} must be at least 1, got {threads.value}: "
            f"omit it to use the {physical_cores} physical core(s)"
        )
    if threads.value > logical_cores:
        warnings.append(
            f"{threads.source}={threads.value} exceeds the {logical_cores} logical CPU(s): "
            "threads will compete for cores and the figures will be low"
        )

    repetitions = _as_int(raw["repetitions"], default=DEFAULT_REPETITIONS)
    if not 1 <= repetitions.value <= MAX_REPETITIONS:
        raise SettingsError(
            f"{repetitions.source} must be between 1 and {MAX_REPETITIONS}, got {repetitions.value}"
        )

    hardware = _as_optional_str(raw["hardware"])
    if hardware.value is not None:
        validate_hardware_id(hardware.value, source=hardware.source)

    model = _as_optional_str(raw["model"])
    if model.value is not None:
        model = Sourced(os.path.expanduser(model.value), model.source)

    reading_raw = _as_optional_str(raw["reading_speed"])
    reading_speed = (DEFAULT_READING_SPEED if reading_raw.value is None
                     else parse_reading_speed(reading_raw.value, source=reading_raw.source))

    return Settings(
        enabled=bool(raw["enabled"].value),
        reading_speed=reading_speed,
        report=_as_optional_str(raw["report"]),
        plots=_as_optional_str(raw["plots"]),
        model=model,
        threads=threads,
        repetitions=repetitions,
        hardware=hardware,
        warnings=tuple(warnings),
    )


def _pick(spec: OptionSpec, cli: Mapping[str, object], ini: Mapping[str, str]) -> Sourced[object]:
    value = cli.get(spec.name)
    if value is not None and value is not False:
        return Sourced(value, spec.flag)
    if spec.ini is not None:
        text = ini.get(spec.ini, "")
        if text is not None and str(text).strip():
            return Sourced(str(text).strip(), f"ini {spec.ini}")
    return Sourced(None, "default")


def _as_int(raw: Sourced[object], *, default: int) -> Sourced[int]:
    if raw.value is None:
        return Sourced(default, "default")
    return Sourced(_convert(raw, int, "a whole number"), raw.source)


def _as_optional_str(raw: Sourced[object]) -> Sourced[str | None]:
    if raw.value is None:
        return Sourced(None, "default")
    return Sourced(str(raw.value), raw.source)


def _convert(raw: Sourced[object], convert: Callable[[str], T], expected: str) -> T:
    try:
        return convert(str(raw.value).strip())
    except ValueError:
        raise SettingsError(f"{raw.source} must be {expected}, got {raw.value!r}") from None
