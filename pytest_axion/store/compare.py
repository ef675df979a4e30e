"""Compare two stored results (reports or baseline files), like llama.cpp's compare-llama-bench, with
intervals and verdicts. Pure: reading files is the only side effect.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from pytest_axion.comparison import (
    CONFIDENCE_Z,
    IMPROVED,
    NOT_SIGNIFICANT,
    OK,
    REGRESSED,
    Comparison,
    Side,
    compare,
)
from pytest_axion.errors import AxionError
from pytest_axion.records import METRICS, Measurement
from pytest_axion.schemas import validate_report
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


def _read_json(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_BASELINE_BYTES:
            raise AxionError(f"{path} is larger than {MAX_BASELINE_BYTES:,} bytes: not a report or baseline")
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise AxionError(f"cannot read {path}: {err.strerror or err}") from None
    except (ValueError, RecursionError) as err:
        raise AxionError(f"{path} is not valid JSON ({str(err)[:120]}): pass a --axion-report file or a "
                         "baseline file") from None


def read_report(path: Path) -> Mapping[str, Any]:
    """A ``--axion-report`` file, schema-checked; anything else is a one-line error naming it."""
    data = _read_json(path)
    if not (isinstance(data, dict) and "results" in data):
        raise AxionError(f"{path} is not a pytest-axion report: pass a --axion-report file")
    return _checked_report(path, data)


def _checked_report(path: Path, data: Mapping[str, Any]) -> Mapping[str, Any]:
    try:
        validate_report(data)
    except jsonschema.ValidationError as err:
        raise AxionError(f"report {path} violates the report schema: {err.message[:160]}") from None
    return data


def load_side(path: Path) -> StoredSide:
    """Read a report or a baseline file; anything else is a one-line error naming it."""
    data = _read_json(path)
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
        return _report_side(path, _checked_report(path, data))
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


FAMILY_ALPHA = 0.05   # the chance that a table of two unchanged builds shows any row changed


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    comparison: Comparison
    verdict: str          # the comparison's verdict as it holds among all the rows (see together())


def p_value(c: Comparison) -> float:
    """Two-sided p-value of "no change", on the scale the comparison's 95% interval was drawn with."""
    if c.log_se <= 0:
        return 1.0 if c.speedup == 1 else 0.0
    z = abs(math.log(c.speedup)) / c.log_se * (CONFIDENCE_Z / c.quantile)
    return math.erfc(z / math.sqrt(2))


def together(comparisons: Sequence[Comparison], alpha: float = FAMILY_ALPHA) -> list[str]:
    """Verdicts that hold for all comparisons at once: Holm's step-down at ``alpha`` familywise.

    Each comparison alone is a 95% test, so a table of 100 measurements of two unchanged builds shows about
    five "regressed" by chance. No second attempt can be measured from files, so the bar rises with the
    table instead: a row beyond the band whose change is not significant among all rows is inconclusive
    (slower) or ok (faster).
    """
    order = sorted(range(len(comparisons)), key=lambda i: p_value(comparisons[i]))
    significant: set[int] = set()
    for rank, i in enumerate(order):
        if p_value(comparisons[i]) > alpha / (len(comparisons) - rank):
            break
        significant.add(i)
    verdicts = []
    for i, c in enumerate(comparisons):
        if c.verdict == REGRESSED and i not in significant:
            verdicts.append(NOT_SIGNIFICANT)
        elif c.verdict == IMPROVED and i not in significant:
            verdicts.append(OK)
        else:
            verdicts.append(c.verdict)
    return verdicts


def compare_sides(old: StoredSide, new: StoredSide, *, tolerance: float, estimator: str) -> tuple[list[Row], list[str]]:
    """One row per measurement in both files, judged together; and the keys found on one side only."""
    keys = sorted(old.sides.keys() & new.sides.keys())
    comparisons = [compare(old.sides[key], new.sides[key], higher_is_better=METRICS[old.metrics[key]].higher_is_better,
                           tolerance=tolerance, estimator=estimator) for key in keys]
    rows = [Row(key=key, label=old.labels[key], comparison=c, verdict=verdict)
            for key, c, verdict in zip(keys, comparisons, together(comparisons), strict=True)]
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
             f"{r.comparison.band:.0%}", r.verdict] for r in rows]


TABLE_HEADERS = ["measurement", "old", "new", "speedup", "95% CI", "band", "verdict"]


def any_regressed(rows: list[Row]) -> bool:
    return any(r.verdict == REGRESSED for r in rows)
