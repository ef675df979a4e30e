"""Compare two stored results (reports or baseline files), like llama.cpp's compare-llama-bench, with
intervals and verdicts. Pure: reading files is the only side effect.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from pytest_axion.engines.records import METRICS, Measurement
from pytest_axion.errors import AxionError
from pytest_axion.promises.speedup import REGRESSED, Comparison, Side, compare
from pytest_axion.report.json_report import validate_report
from pytest_axion.store.baselines import MAX_BASELINE_BYTES, read_baseline


@dataclass(frozen=True)
class StoredSide:
    """One file's measurements as runs of samples per key, and what produced them."""

    source: str
    kind: str                       # "report" or "baseline"
    sides: dict[str, Side]
    metrics: dict[str, str]         # key -> metric
    labels: dict[str, str]          # key -> short human label
    llama_cpp_python: str
    system_info: dict[str, str]


def load_side(path: Path) -> StoredSide:
    """Read a report or a baseline file; anything else is a one-line error naming it."""
    try:
        if path.stat().st_size > MAX_BASELINE_BYTES:
            raise AxionError(f"{path} is larger than {MAX_BASELINE_BYTES:,} bytes: not a report or baseline")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise AxionError(f"cannot read {path}: {err.strerror or err}") from None
    except (ValueError, RecursionError) as err:
        raise AxionError(f"{path} is not valid JSON ({str(err)[:120]}): pass a --axion-report file or a "
                         "baseline file") from None
    if isinstance(data, dict) and "entries" in data:
        baseline = read_baseline(path)
        return StoredSide(
            source=str(path), kind="baseline",
            sides={key: Side(entry.runs) for key, entry in baseline.entries.items()},
            metrics={key: entry.metric for key, entry in baseline.entries.items()},
            labels={key: _label(entry.nodeid, entry.metric, entry.batch_size, entry.n_prompt, entry.n_gen)
                    for key, entry in baseline.entries.items()},
            llama_cpp_python=str(baseline.provenance.get("llama_cpp_python", "?")),
            system_info=dict(baseline.provenance.get("llama_cpp_system_info", {})))
    if isinstance(data, dict) and "results" in data:
        try:
            validate_report(data)
        except jsonschema.ValidationError as err:
            raise AxionError(f"report {path} violates the report schema: {err.message[:160]}") from None
        return _report_side(path, data)
    raise AxionError(f"{path} is neither a pytest-axion report nor a baseline file")


def _report_side(path: Path, data: Mapping[str, Any]) -> StoredSide:
    measurements = [Measurement.from_json(row) for row in data["results"]]
    return StoredSide(
        source=str(path), kind="report",
        sides={m.key: Side((m.samples,)) for m in measurements},
        metrics={m.key: m.metric for m in measurements},
        labels={m.key: _label(m.nodeid, m.metric, m.batch_size, m.n_prompt, m.n_gen) for m in measurements},
        llama_cpp_python=str(data["software"]["llama_cpp_python"]),
        system_info=dict(data["software"]["llama_cpp_system_info"]))


def _label(nodeid: str, metric: str, batch: int, n_prompt: int, n_gen: int) -> str:
    test = nodeid.rpartition("::")[2]
    return f"{test} {metric} b{batch} pp{n_prompt} tg{n_gen}"


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    comparison: Comparison


def compare_sides(old: StoredSide, new: StoredSide, *, tolerance: float, estimator: str) -> tuple[list[Row], list[str]]:
    """One row per measurement in both files; and the keys found on one side only."""
    rows = []
    for key in old.sides.keys() & new.sides.keys():
        higher = METRICS[old.metrics[key]].higher_is_better
        rows.append(Row(key=key, label=old.labels[key],
                        comparison=compare(old.sides[key], new.sides[key], higher_is_better=higher,
                                           tolerance=tolerance, estimator=estimator)))
    rows.sort(key=lambda r: r.key)
    unmatched = sorted(old.sides.keys() ^ new.sides.keys())
    return rows, unmatched


def version_lines(old: StoredSide, new: StoredSide) -> list[str]:
    """Both sides' llama-cpp-python and llama.cpp build flags, and which flags changed."""
    lines = [f"old: {old.source} ({old.kind}): llama-cpp-python {old.llama_cpp_python}",
             f"new: {new.source} ({new.kind}): llama-cpp-python {new.llama_cpp_python}"]
    changed = [f"{flag} {old.system_info.get(flag, 'absent')} -> {new.system_info.get(flag, 'absent')}"
               for flag in sorted(old.system_info.keys() | new.system_info.keys())
               if old.system_info.get(flag) != new.system_info.get(flag)]
    lines.append("llama.cpp flags: " + ("; ".join(changed) if changed else "identical on both sides"))
    return lines


def table_rows(rows: list[Row]) -> list[list[str]]:
    return [[r.label, f"{r.comparison.baseline_level:.4g}", f"{r.comparison.current_level:.4g}",
             f"{r.comparison.speedup:.3f}", f"[{r.comparison.low:.3f}-{r.comparison.high:.3f}]",
             f"{r.comparison.band:.0%}", r.comparison.verdict] for r in rows]


TABLE_HEADERS = ["measurement", "old", "new", "speedup", "95% CI", "band", "verdict"]


def any_regressed(rows: list[Row]) -> bool:
    return any(r.comparison.verdict == REGRESSED for r in rows)
