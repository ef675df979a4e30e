"""The ``axion_slo`` marker: its keys, their validation, and the verdicts against measurements.

One table (:data:`SLO_KEYS`) drives the marker's help line, the parser and the docs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_axion.errors import SettingsError
from pytest_axion.features import parse_features
from pytest_axion.reading import ReadingSpeed
from pytest_axion.records import Measurement
from pytest_axion.settings import parse_tolerance
from pytest_axion.shape import STEADY_METRICS, SteadyLimits

MARKER = "axion_slo"
READING = "reading"
TTFT_PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class SloKey:
    name: str
    signature: str  # how the key reads in the marker help
    help: str


SLO_KEYS: tuple[SloKey, ...] = (
    SloKey("prompt_tps", "prompt_tps=50.0", "minimum prompt-processing speed, tokens/s, at every measured size"),
    SloKey("gen_tps", "gen_tps=20.0", "minimum total generation speed over the batch, tokens/s"),
    SloKey("per_user_tps", "per_user_tps='reading'",
           "minimum generation speed each user sees, tokens/s, or 'reading' for human reading speed"),
    SloKey("ttft_ms", "ttft_ms=2000", "maximum time to first token, ms, at ttft_percentile"),
    SloKey("ttft_percentile", "ttft_percentile=50", "percentile of the repetitions that ttft_ms checks: 50, 90 or 99"),
    SloKey("max_batch", "max_batch=4",
           "per_user_tps must hold at every measured batch size up to this (default: every measured size)"),
    SloKey("steady_within", "steady_within=0.15",
           "prompt speed across the test's batch and prompt sizes, and generation speed across generation "
           "lengths at each batch size, stay within this spread of their median; {'gen_tps': 0.15} checks "
           "only the named speeds"),
    SloKey("gen_scaling", "gen_scaling=1.5",
           "total generation speed at the largest batch is at least this many times batch 1, and never falls "
           "with batch size beyond its noise"),
    SloKey("requires", "requires=['KLEIDIAI']",
           "llama.cpp build flags (upper case) or CPU features (lower case) the test needs; checked before "
           "measuring"),
    SloKey("tolerance", "tolerance=0.10",
           "smallest slowdown against the stored baseline that counts as a regression for this test, a "
           "fraction or '10%' (default --axion-tolerance)"),
)


def marker_help() -> str:
    """The line ``pytest --markers`` shows."""
    args = ", ".join(key.signature for key in SLO_KEYS)
    keys = "; ".join(f"{key.name}: {key.help}" for key in SLO_KEYS)
    return f"{MARKER}({args}): performance promises checked under --axion-slo. {keys}."


@dataclass(frozen=True)
class SloSpec:
    prompt_tps: float | None = None
    gen_tps: float | None = None
    per_user_tps: float | str | None = None  # a number, or READING
    ttft_ms: float | None = None
    ttft_percentile: int = 50
    max_batch: int | None = None
    tolerance: float | None = None  # baseline gate tolerance; None: --axion-tolerance
    steady_within: SteadyLimits | None = None
    gen_scaling: float | None = None
    requires: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.requires and all(
            getattr(self, key) is None
            for key in ("prompt_tps", "gen_tps", "per_user_tps", "ttft_ms", "tolerance", "steady_within",
                        "gen_scaling"))


def parse_slo(args: Sequence[Any], kwargs: Mapping[str, Any], *, where: str) -> SloSpec:
    """Validate marker arguments; raises SettingsError naming the test (``where``) and the fix."""
    if args:
        raise SettingsError(f"{where}: {MARKER} takes keyword arguments only, got positional {list(args)!r}")
    known = {key.name for key in SLO_KEYS}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise SettingsError(f"{where}: unknown {MARKER} key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for name in ("prompt_tps", "gen_tps", "ttft_ms"):
        if name in kwargs:
            values[name] = _positive_number(kwargs[name], name, where)
    if "per_user_tps" in kwargs:
        raw = kwargs["per_user_tps"]
        values["per_user_tps"] = READING if raw == READING else _positive_number(raw, "per_user_tps", where,
                                                                                  also="or 'reading'")
    if "ttft_percentile" in kwargs:
        percentile = kwargs["ttft_percentile"]
        if isinstance(percentile, bool) or percentile not in TTFT_PERCENTILES:
            raise SettingsError(f"{where}: ttft_percentile must be one of 50, 90, 99, got {percentile!r}")
        values["ttft_percentile"] = int(percentile)
    if "max_batch" in kwargs:
        raw = kwargs["max_batch"]
        if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
            raise SettingsError(f"{where}: max_batch must be a whole number of at least 1, got {raw!r}")
        values["max_batch"] = raw
    if "steady_within" in kwargs:
        values["steady_within"] = _steady_limits(kwargs["steady_within"], where)
    if "gen_scaling" in kwargs:
        values["gen_scaling"] = _positive_number(kwargs["gen_scaling"], "gen_scaling", where)
    if "requires" in kwargs:
        raw = kwargs["requires"]
        values["requires"] = parse_features(raw if isinstance(raw, (str, list, tuple)) else [raw],
                                            source=f"{where}: requires")
    if "tolerance" in kwargs:
        raw = kwargs["tolerance"]
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise SettingsError(f"{where}: tolerance must be a fraction such as 0.1 or a string such as '10%', "
                                f"got {raw!r}")
        values["tolerance"] = parse_tolerance(str(raw), source=f"{where}: tolerance")
    spec = SloSpec(**values)
    if spec.is_empty:
        raise SettingsError(f"{where}: {MARKER} declares no promise; give at least one of prompt_tps, gen_tps, "
                            "per_user_tps, ttft_ms, steady_within, gen_scaling, requires, tolerance")
    return spec


def merge_marker_kwargs(closest_first: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Markers on module, class and function combine; the closest to the test wins per key."""
    merged: dict[str, Any] = {}
    for kwargs in closest_first:
        for key, value in kwargs.items():
            merged.setdefault(key, value)
    return merged


def _steady_limits(raw: Any, where: str) -> SteadyLimits:
    """A number for both speeds, or ``{"prompt_tps": x, "gen_tps": y}`` naming the speeds to check."""
    if not isinstance(raw, Mapping):
        return SteadyLimits.both(_positive_number(raw, "steady_within", where,
                                                  also="or a dict such as {'gen_tps': 0.15}"))
    unknown = sorted(str(k) for k in raw if k not in STEADY_METRICS)
    if unknown or not raw:
        got = f"got {', '.join(unknown)}" if unknown else "got an empty dict"
        raise SettingsError(f"{where}: steady_within's keys must be {' or '.join(STEADY_METRICS)}, {got}")
    limits = {name: _positive_number(value, f"steady_within[{name!r}]", where) for name, value in raw.items()}
    return SteadyLimits(prompt_tps=limits.get("prompt_tps"), gen_tps=limits.get("gen_tps"), named=True)


def _positive_number(value: Any, name: str, where: str, *, also: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        extra = f" {also}" if also else ""
        raise SettingsError(f"{where}: {name} must be a positive number{extra}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SloVerdict:
    """One promise checked against one measurement."""

    nodeid: str
    key: str
    metric: str
    batch_size: int
    n_prompt: int
    n_gen: int
    statistic: str       # "median" or "p90", ...
    n_samples: int
    observed: float
    threshold: float
    unit: str
    passed: bool
    enforced: bool       # False for batch sizes beyond max_batch: shown, never failing
    threshold_label: str  # how the threshold was obtained, e.g. the reading-speed conversion

    @property
    def comparison(self) -> str:
        at_least = self.metric != "ttft_ms"
        if self.passed:
            return ">=" if at_least else "<="
        return "<" if at_least else ">"

    @property
    def verdict(self) -> str:
        if not self.enforced:
            return "info"
        return "pass" if self.passed else "FAIL"

    def message(self) -> str:
        """``per_user_tps at batch 4: 3.9 t/s < 5.0 t/s (reading speed 5 t/s (default), median of 5)``."""
        unit = "t/s" if self.unit == "tokens/s" else self.unit
        detail = ", ".join(part for part in (self.threshold_label, f"{self.statistic} of {self.n_samples}") if part)
        return (f"{self.key} at batch {self.batch_size}: {_fmt(self.observed)} {unit} {self.comparison} "
                f"{_fmt(self.threshold)} {unit} ({detail})")

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["verdict"] = self.verdict
        data["message"] = self.message()
        return data


@dataclass(frozen=True)
class SloOutcome:
    verdicts: tuple[SloVerdict, ...]
    capacity: int | None  # largest batch size up to which every user gets per_user_tps; None if not declared

    @property
    def failures(self) -> list[SloVerdict]:
        return [v for v in self.verdicts if v.enforced and not v.passed]


def _fmt(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def evaluate_slos(spec: SloSpec, measurements: Sequence[Measurement], *, nodeid: str,
                  reading: ReadingSpeed | None) -> SloOutcome:
    """Check every declared promise against the test's measurements (median, or the TTFT percentile).

    A promise the test never measured is a SettingsError, never a silent pass.
    """
    verdicts: list[SloVerdict] = []
    for key in ("prompt_tps", "gen_tps", "per_user_tps", "ttft_ms"):
        declared = getattr(spec, key)
        if declared is None:
            continue
        relevant = [m for m in measurements if m.metric == key]
        if not relevant:
            raise SettingsError(f"{nodeid}: {MARKER}({key}=...) but the test measured no {key}: {_how_to_measure(key)}")
        threshold, label = _threshold(key, declared, reading)
        verdicts.extend(_judge(key, m, threshold, label, spec) for m in relevant)
    capacity = _capacity([v for v in verdicts if v.key == "per_user_tps"]) if spec.per_user_tps is not None else None
    if spec.max_batch is not None and spec.per_user_tps is not None:
        measured = max(v.batch_size for v in verdicts if v.key == "per_user_tps")
        if spec.max_batch > measured:
            raise SettingsError(f"{nodeid}: max_batch={spec.max_batch} but the test measured batch sizes up to "
                                f"{measured}: measure batch sizes up to {spec.max_batch} or lower max_batch")
    return SloOutcome(tuple(verdicts), capacity)


def _how_to_measure(key: str) -> str:
    return {
        "prompt_tps": "call axion.prompt(...) or axion.batched(...)",
        "gen_tps": "call axion.generate(...) or axion.batched(...)",
        "per_user_tps": "call axion.batched(...)",
        "ttft_ms": "call axion.batched(...)",
    }[key]


def _threshold(key: str, declared: float | str, reading: ReadingSpeed | None) -> tuple[float, str]:
    if declared == READING:
        if reading is None:
            raise SettingsError("per_user_tps='reading' needs the reading speed, which was not resolved")
        return reading.tokens_per_s, reading.label
    return float(declared), ""


def _judge(key: str, m: Measurement, threshold: float, label: str, spec: SloSpec) -> SloVerdict:
    if key == "ttft_ms":
        statistic = f"p{spec.ttft_percentile}"
        observed = {50: m.summary.p50, 90: m.summary.p90, 99: m.summary.p99}[spec.ttft_percentile]
        passed = observed <= threshold
    else:
        statistic, observed = "median", m.summary.median
        passed = observed >= threshold
    enforced = not (key == "per_user_tps" and spec.max_batch is not None and m.batch_size > spec.max_batch)
    return SloVerdict(nodeid=m.nodeid, key=key, metric=m.metric, batch_size=m.batch_size, n_prompt=m.n_prompt,
                      n_gen=m.n_gen, statistic=statistic, n_samples=len(m.samples), observed=observed,
                      threshold=threshold, unit=m.unit, passed=passed, enforced=enforced, threshold_label=label)


def _capacity(per_user: Sequence[SloVerdict]) -> int:
    """Largest batch size B such that every user gets the SLO at every measured size up to B (0: none)."""
    capacity = 0
    for batch_size in sorted({v.batch_size for v in per_user}):
        if all(v.passed for v in per_user if v.batch_size == batch_size):
            capacity = batch_size
        else:
            break
    return capacity
