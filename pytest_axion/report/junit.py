"""The run for CI dashboards: JUnit XML properties, one per verdict, named and worded alike for every kind."""

from __future__ import annotations

from collections.abc import Sequence

from pytest_axion.promises.thresholds import capacity
from pytest_axion.promises.verdict import Verdict


def junit_properties(verdicts: Sequence[Verdict]) -> list[tuple[str, str]]:
    """``(axion.<kind>.<name>, "<outcome>: <message>")`` per verdict, and the test's capacity if it has one."""
    properties = [(v.property_name, v.message()) for v in verdicts]
    most = capacity(verdicts)
    if most is not None:
        properties.append(("axion.capacity", str(most)))
    return properties
