"""Frozen records as builtin types and back: what an xdist worker sends its controller.

execnet carries builtin types only (xdist's own workers fill ``config.workeroutput`` with them), and a
pickle would run whatever class it names. Here a record becomes dicts, lists, strings and numbers,
JSON-serialisable, and comes back as the same frozen dataclasses; only dataclasses of this package are
rebuilt, and nothing else is called.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

RECORD = "__record__"   # the class of a dataclass, or the container kind a plain list or dict cannot say
PACKAGE = "pytest_axion."


def to_builtin(value: Any) -> Any:
    """``value`` as JSON types: dataclasses of this package, tuples, frozensets and dicts with any keys tagged."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith(PACKAGE):
            raise TypeError(f"only pytest-axion's records cross to the controller, not {cls.__qualname__}")
        return {RECORD: f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: to_builtin(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, tuple):
        return {RECORD: "tuple", "items": [to_builtin(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {RECORD: "frozenset", "items": [to_builtin(v) for v in sorted(value, key=repr)]}
    if isinstance(value, list):
        return [to_builtin(v) for v in value]
    if isinstance(value, dict):
        return {RECORD: "dict", "items": [[to_builtin(k), to_builtin(v)] for k, v in value.items()]}
    raise TypeError(f"{type(value).__qualname__} does not cross to the controller: give the record builtin fields")


def from_builtin(data: Any) -> Any:
    """The inverse of :func:`to_builtin`; a class outside this package, or not a dataclass, is refused."""
    if isinstance(data, list):
        return [from_builtin(v) for v in data]
    if not isinstance(data, dict):
        return data
    kind = data.get(RECORD)
    if kind == "tuple":
        return tuple(from_builtin(v) for v in data["items"])
    if kind == "frozenset":
        return frozenset(from_builtin(v) for v in data["items"])
    if kind == "dict":
        return {from_builtin(k): from_builtin(v) for k, v in data["items"]}
    if not isinstance(kind, str) or ":" not in kind:
        raise ValueError(f"not a transported record: {sorted(data)[:4]}")
    cls = _record_class(kind)
    values = {name: from_builtin(v) for name, v in data["fields"].items()}
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    record = cls(**{k: v for k, v in values.items() if k in init})
    for name, value in values.items():
        if name not in init:
            object.__setattr__(record, name, value)   # a frozen record's derived field, as it was
    return record


def _record_class(kind: str) -> type[Any]:
    module_name, _, qualname = kind.partition(":")
    if not module_name.startswith(PACKAGE):
        raise ValueError(f"{kind} is not one of pytest-axion's records")
    found: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not (isinstance(found, type) and dataclasses.is_dataclass(found)):
        raise ValueError(f"{kind} is not a record")
    return found
