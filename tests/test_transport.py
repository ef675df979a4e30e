"""What an xdist worker sends its controller: records as builtin types, and back (no pickle)."""

import dataclasses
import json
from pathlib import Path

import pytest

from pytest_axion.records import CapacityLevel, CapacitySearch, WarmUpRun
from pytest_axion.transport import from_builtin, to_builtin
from tests.test_report import run_record


def test_a_run_record_crosses_as_json_types_and_comes_back_equal():
    record = dataclasses.replace(
        run_record(), warm_up=WarmUpRun(n_prompt=64, seconds=(0.2, 0.1), settled=True),
        capacity_searches={"t.py::test_users": CapacitySearch(
            "t.py::test_users", 16, 16, "TTFT <= 2 s", 0.9, (CapacityLevel(1, 35, 35, 0.9, 1.0, "met", figures=(
                ("ttft_ms", 120.0),)), CapacityLevel(2, 36, 3, 0.0, 0.2, "missed", worst="TTFT p90 3 s > 2 s")),
            "promise", "2 users: TTFT p90 3 s > 2 s")},
        environment=("busy",), deployment="replay", replay_of="r.json")
    sent = json.loads(json.dumps(to_builtin(record)))   # what execnet could carry, and JSON can hold
    received = from_builtin(sent)
    assert received == record
    assert type(received.measurements[0].samples) is tuple and received.test_outcomes == record.test_outcomes
    assert received.hardware.llama_cpp_system_info == record.hardware.llama_cpp_system_info


def test_keys_that_are_not_strings_and_sets_survive():
    value = {"by_size": {1: (2.0, 3.0)}, "passed": frozenset({"a", "b"})}
    assert from_builtin(json.loads(json.dumps(to_builtin(value)))) == value


def test_only_the_packages_records_are_sent_or_rebuilt():
    with pytest.raises(TypeError, match="PosixPath does not cross to the controller"):
        to_builtin(Path("/x"))
    with pytest.raises(ValueError, match="os:system is not one of pytest-axion's records"):
        from_builtin({"__record__": "os:system", "fields": {}})
    with pytest.raises(ValueError, match="is not a record"):
        from_builtin({"__record__": "pytest_axion.transport:to_builtin", "fields": {}})
