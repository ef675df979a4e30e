"""The run for machines: the JSON report, checked against the shipped schema before it is written."""

from __future__ import annotations

import dataclasses
import datetime
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from pytest_axion import __version__
from pytest_axion.errors import AxionError
from pytest_axion.files import write_json_atomically
from pytest_axion.promises.verdict import FAIL
from pytest_axion.report.record import RunRecord
from pytest_axion.schemas import validate_report

REPORT_SCHEMA_VERSION = 11
READABLE_REPORT_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8)


def build_report(run: RunRecord) -> dict[str, Any]:
    """The JSON report: fingerprints, settings, every measurement with samples and verdicts."""
    results = []
    for m in run.measurements:
        row = m.to_json()
        row["median"] = m.summary.median
        row["verdicts"] = [v.property_name for v in run.verdicts if m.key in v.involved and v.nodeid == m.nodeid]
        results.append(row)
    nodeids = list(dict.fromkeys([*(m.nodeid for m in run.measurements), *(v.nodeid for v in run.verdicts),
                                  *run.rate_levels, *run.capacity_searches]))
    tests = []
    for nodeid in nodeids:
        mine = [v for v in run.verdicts if v.nodeid == nodeid]
        promised = [v for v in mine if v.kind not in ("baseline", "capacity_baseline", "ab", "ab_capacity")]
        search = run.capacity_searches.get(nodeid)
        tests.append({"nodeid": nodeid, "outcome": run.test_outcomes.get(nodeid, "unknown"),
                      "capacity": run.capacities.get(nodeid), "capacity_search": search.to_json() if search else None,
                      "rate_levels": [level.to_json() for level in run.rate_levels.get(nodeid, ())],
                      "slo_passed": all(v.outcome != FAIL for v in promised) if promised else None})
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": {"name": "pytest-axion", "version": __version__},
        "settings": {"threads": run.threads, "repetitions": run.repetitions,
                     "reading_speed_tokens_per_s": run.reading.tokens_per_s, "reading_speed": run.reading.label,
                     "prompt_sizing": ({"fill_tokens": run.prompt_sizing.fill_tokens,
                                        "source": run.prompt_sizing.source,
                                        "points": [list(p) for p in run.prompt_sizing.points],
                                        "tokens_per_s": run.prompt_sizing.tokens_per_s}
                                       if run.prompt_sizing is not None else None)},
        "model": run.model.to_json(),
        "hardware": run.hardware.to_json(),
        "software": {"python": platform.python_version(), "pytest": _version("pytest"),
                     "llama_cpp_python": run.hardware.llama_cpp_python,
                     "llama_cpp_system_info": dict(sorted(run.hardware.llama_cpp_system_info.items()))},
        "baseline": run.baseline.to_json() if run.baseline is not None else None,
        "ab": run.ab.to_json() if run.ab is not None else None,
        "environment_warnings": list(run.environment),
        "warm_up": ({"n_prompt": run.warm_up.n_prompt, "seconds": list(run.warm_up.seconds),
                     "settled": run.warm_up.settled} if run.warm_up else None),
        "results": results,
        "verdicts": [v.to_json() for v in run.verdicts],
        "tests": tests,
        "efficiency": _efficiency(run),
        "served": run.served or None,
        "deployment": run.deployment,
        "replay_of": run.replay_of or None,
        "prediction": run.prediction.to_json() if run.prediction is not None else None,
    }


def _efficiency(run: RunRecord) -> dict[str, Any] | None:
    """The roofs and every cell's figure (schema version 6); None when efficiency was off or not measured."""
    if run.roofs is None:
        return None
    costs = run.roofs.costs
    return {"source": run.roofs_source, "limits": run.roofs.limits.to_json(),
            "costs": {**dataclasses.asdict(costs), "kv_bytes_per_position": costs.kv_bytes_per_position},
            "n_ubatch": run.roofs.n_ubatch,
            "figures": [f.to_json() for f in run.efficiency]}


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def write_report(path: Path, run: RunRecord) -> dict[str, Any]:
    """Build, validate and write the JSON report; an unwritable path is a one-line error."""
    report = build_report(run)
    validate_report(report)
    try:
        write_json_atomically(path, report)
    except OSError as err:
        raise AxionError(f"cannot write the report {path}: {err.strerror or err}: choose a writable "
                         "--axion-report path") from None
    return report
