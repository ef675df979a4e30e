"""The JSON Schemas of what pytest-axion keeps on disk (the ``*.schema.json`` files beside this module, the
single source of truth for baselines and reports) and the checks against them. Pure: reading the shipped
files is the only side effect.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import fastjsonschema
import jsonschema

BASELINE_SCHEMA = "baseline.schema.json"
REPORT_SCHEMA = "report.schema.json"


def load_schema(name: str) -> dict[str, Any]:
    """One shipped schema, parsed (a fresh copy on every call)."""
    text = (resources.files(__name__) / name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def validate_report(report: Mapping[str, Any]) -> None:
    """Raise jsonschema.ValidationError if the report does not match the shipped schema.

    Reports of every readable version validate: version 1 lacks only the baseline parts; versions 1-4
    keep verdicts per measurement and per kind, version 5 in one top-level list, every kind alike.
    """
    jsonschema.validate(report, load_schema(REPORT_SCHEMA))


@functools.cache
def baseline_validator() -> jsonschema.Draft202012Validator:
    """The reference validator of baseline files, for exact error paths and messages; built once."""
    return jsonschema.Draft202012Validator(load_schema(BASELINE_SCHEMA))


@functools.cache
def _baseline_fast_check() -> Callable[[Any], Any]:
    """The same schema compiled to Python (fastjsonschema): ~20x faster on the valid files that are the
    rule, so a 10 MB folder validates in a fraction of a second. The schema uses only keywords whose
    meaning is the same in the drafts fastjsonschema implements; a file it refuses is re-checked by
    jsonschema for the message."""
    check: Callable[[Any], Any] = fastjsonschema.compile(load_schema(BASELINE_SCHEMA))
    return check


def baseline_quickly_valid(data: Any) -> bool:
    """True if parsed JSON is a valid baseline file, by the fast check."""
    try:
        _baseline_fast_check()(data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def baseline_errors(data: Any) -> list[jsonschema.ValidationError]:
    """Every way parsed JSON violates the baseline schema, ordered by where (none: valid)."""
    if baseline_quickly_valid(data):
        return []
    return sorted(baseline_validator().iter_errors(data), key=lambda e: list(e.path))
