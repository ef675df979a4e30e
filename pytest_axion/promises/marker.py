"""The ``axion_slo`` marker: its keys, gathered from the kinds of promise, and one parser for them all.

Each module of this package that defines ``MARKER_KEYS`` (its keys, each with a parser) and
``promises(spec, context)`` (its promises for one test) is a kind of promise; this module finds them,
so that a new kind is one new module: its keys appear in ``pytest --markers``, parse here, and its
verdicts go through the one confirm procedure and the one renderer. Pure: no pytest.
"""

from __future__ import annotations

import functools
import importlib
import math
import pkgutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from pytest_axion.errors import SettingsError
from pytest_axion.machine.features import parse_features
from pytest_axion.options import MARKER


@dataclass(frozen=True)
class MarkerKey:
    """One keyword of the marker: how it reads in the help, how it is checked, what it defaults to."""

    name: str
    signature: str                          # how the key reads in the marker help, e.g. "prompt_tps=50.0"
    help: str
    parse: Callable[[Any, str], Any]        # (raw value, where) -> the checked value; raises SettingsError
    default: Any = None
    promise: bool = True                    # False: it qualifies another key (a percentile, a batch limit)


def positive_number(value: Any, name: str, where: str, *, also: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        extra = f" {also}" if also else ""
        raise SettingsError(f"{where}: {name} must be a positive number{extra}, got {value!r}")
    return float(value)


def positive(name: str) -> Callable[[Any, str], float]:
    return lambda value, where: positive_number(value, name, where)


def one_of(name: str, allowed: Sequence[int]) -> Callable[[Any, str], int]:
    def parse(value: Any, where: str) -> int:
        if isinstance(value, bool) or value not in allowed:
            raise SettingsError(f"{where}: {name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return int(value)
    return parse


def _requires(value: Any, where: str) -> tuple[str, ...]:
    return parse_features(value if isinstance(value, (str, list, tuple)) else [value], source=f"{where}: requires")


CORE_KEYS = (
    MarkerKey("requires", "requires=['KLEIDIAI']",
              "llama.cpp build flags (upper case) or CPU features (lower case) the test needs; checked before "
              "measuring", _requires, default=()),
)


def kinds() -> tuple[ModuleType, ...]:
    """The modules of this package that are kinds of promise, in name order."""
    return _kinds()


@functools.cache
def _kinds() -> tuple[ModuleType, ...]:
    package = importlib.import_module(__package__ or "pytest_axion.promises")
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if hasattr(module, "MARKER_KEYS") and hasattr(module, "promises"):
            found.append(module)
    # The article's promises first in the help; a kind without KIND_ORDER comes after the built-in ones.
    return tuple(sorted(found, key=lambda m: (getattr(m, "KIND_ORDER", 100), m.__name__)))


def marker_keys() -> tuple[MarkerKey, ...]:
    return (*[key for module in kinds() for key in module.MARKER_KEYS], *CORE_KEYS)


@dataclass(frozen=True)
class SloSpec:
    """What one test's markers declare, checked: ``spec.prompt_tps``, ``spec.get("itl_ms")``."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        key = next((k for k in marker_keys() if k.name == name), None)
        if key is None:
            raise KeyError(f"{MARKER} has no key {name!r}")
        return key.default

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "values":
            raise AttributeError(name)
        try:
            return self.get(name)
        except KeyError:
            raise AttributeError(name) from None

    def declares(self, name: str) -> bool:
        return name in self.values


def marker_help() -> str:
    """The line ``pytest --markers`` shows."""
    keys = marker_keys()
    args = ", ".join(key.signature for key in keys)
    explained = "; ".join(f"{key.name}: {key.help}" for key in keys)
    return f"{MARKER}({args}): performance promises checked under --axion-slo. {explained}."


def parse_slo(args: Sequence[Any], kwargs: Mapping[str, Any], *, where: str) -> SloSpec:
    """Check the marker's arguments; a SettingsError names the test (``where``), the key and the fix."""
    if args:
        raise SettingsError(f"{where}: {MARKER} takes keyword arguments only, got positional {list(args)!r}")
    keys = {key.name: key for key in marker_keys()}
    unknown = sorted(set(kwargs) - set(keys))
    if unknown:
        raise SettingsError(f"{where}: unknown {MARKER} key(s) {', '.join(unknown)}; known: {', '.join(sorted(keys))}")
    values = {name: keys[name].parse(raw, where) for name, raw in kwargs.items()}
    if not any(keys[name].promise for name in values):
        promises = ", ".join(key.name for key in keys.values() if key.promise)
        raise SettingsError(f"{where}: {MARKER} declares no promise; give at least one of {promises}")
    return SloSpec(values)


def merge_marker_kwargs(closest_first: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Markers on module, class and function combine; the closest to the test wins per key."""
    merged: dict[str, Any] = {}
    for kwargs in closest_first:
        for key, value in kwargs.items():
            merged.setdefault(key, value)
    return merged


@dataclass(frozen=True)
class PromiseContext:
    """What a kind of promise may need beyond the marker to make one test's promises."""

    nodeid: str
    reading: Callable[[], Any]                 # -> ReadingSpeed, resolved only when a promise asks for it
    default_tolerance: float = 0.10            # --axion-tolerance
    gate: Any = None                           # the stored-baseline gate (BaselineGate), None: not comparing
    require_baseline: bool = False
    ab_baseline_side: Mapping[str, Any] | None = None   # (A, B) per round by B's key, in an A/B session
    ab_rounds: int = 0
    ab_tolerance: float = 0.05
    roofs: Callable[[], Any] | None = None     # -> efficiency.Roofs, measured on first use; None: efficiency off
    capacity: Any = None                       # the test's capacity search (CapacitySearch); None: it ran none


def promises_for(spec: SloSpec | None, context: PromiseContext) -> list[Any]:
    """Every promise of one test, from every kind of promise."""
    return [promise for module in kinds() for promise in module.promises(spec, context)]
