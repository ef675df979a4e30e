"""Render a run for people (header, table) and for machines (the JSON report, schema-checked)."""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import jsonschema
from tabulate import tabulate

from pytest_axion import __version__
from pytest_axion.atomic import write_json_atomically
from pytest_axion.errors import AxionError
from pytest_axion.hardware import HardwareFingerprint
from pytest_axion.model import ModelFingerprint
from pytest_axion.reading import ReadingSpeed
from pytest_axion.records import Measurement
from pytest_axion.slo import SloOutcome, SloVerdict

REPORT_SCHEMA_VERSION = 1
_FLAGS_SHOWN = ("KLEIDIAI", "REPACK", "OPENMP", "LLAMAFILE", "AVX512", "AVX2", "SVE", "DOTPROD", "MATMUL_INT8")


@dataclass(frozen=True)
class RunRecord:
    """Everything one run produced: the input of every report."""

    model: ModelFingerprint
    hardware: HardwareFingerprint
    threads: int
    repetitions: int
    load_seconds: float
    reading: ReadingSpeed
    measurements: Sequence[Measurement]
    outcomes: Mapping[str, SloOutcome]


def header_lines(run: RunRecord) -> list[str]:
    """What was measured, on what, with what: the lines above the table."""
    model, hardware = run.model, run.hardware
    flags = hardware.llama_cpp_system_info
    shown = " ".join(f"{name}={flags[name]}" for name in _FLAGS_SHOWN if name in flags)
    return [
        f"model: {model.file_name} ({model.architecture}, {model.quantization}, "
        f"{model.n_params / 1e6:.0f}M params, {model.size_bytes / 2**20:.0f} MiB, sha256 {model.sha256[:12]}) "
        f"loaded in {run.load_seconds:.2f} s",
        f"hardware: {hardware.hardware_id} ({hardware.hardware_id_source}): {hardware.cpu_model}, "
        f"{hardware.microarch}, {hardware.logical_cores} logical / {hardware.physical_cores} physical cores",
        f"llama-cpp-python {hardware.llama_cpp_python}, threads {run.threads}, llama.cpp: "
        f"{shown or 'no flags reported'}",
        f"statistic: median of {run.repetitions} repetitions (IQR, CV); {run.reading.label}",
    ]


def _fmt(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _short(nodeid: str) -> str:
    path, _, name = nodeid.partition("::")
    return f"{os.path.basename(path)}::{name}" if name else nodeid


def _verdicts_for(m: Measurement, outcomes: Mapping[str, SloOutcome]) -> list[SloVerdict]:
    outcome = outcomes.get(m.nodeid)
    if outcome is None:
        return []
    return [v for v in outcome.verdicts
            if (v.metric, v.batch_size, v.n_prompt, v.n_gen) == (m.metric, m.batch_size, m.n_prompt, m.n_gen)]


def _slo_cell(verdicts: Sequence[SloVerdict]) -> tuple[str, str]:
    if not verdicts:
        return "", ""
    v = verdicts[0]
    bound = ">=" if v.metric != "ttft_ms" else "<="
    unit = "t/s" if v.unit == "tokens/s" else v.unit
    label = " (reading)" if v.threshold_label.startswith("reading") else ""
    statistic = "" if v.statistic == "median" else f" {v.statistic}"
    return f"{bound} {_fmt(v.threshold)} {unit}{label}{statistic}", v.verdict


def measurement_table(measurements: Iterable[Measurement], outcomes: Mapping[str, SloOutcome]) -> str:
    """One row per measurement: workload, median with dispersion, the SLO and its verdict."""
    rows = []
    for m in measurements:
        s = m.summary
        slo, verdict = _slo_cell(_verdicts_for(m, outcomes))
        rows.append([_short(m.nodeid), m.metric, m.batch_size, m.n_prompt, m.n_gen,
                     f"{_fmt(s.median)} {m.unit}", _fmt(s.iqr), f"{s.cv * 100:.1f}%", s.n, slo, verdict])
    table: str = tabulate(
        rows,
        headers=["test", "metric", "batch", "prompt", "gen", "median", "IQR", "CV", "n", "SLO", "verdict"],
        tablefmt="simple",
        disable_numparse=True,
    )
    return table


def capacity_lines(outcomes: Mapping[str, SloOutcome]) -> list[str]:
    """Per test with a per-user SLO: the largest batch at which every user still gets it."""
    lines = []
    for nodeid, outcome in outcomes.items():
        if outcome.capacity is None:
            continue
        per_user = [v for v in outcome.verdicts if v.key == "per_user_tps"]
        label = per_user[0].threshold_label or f"{_fmt(per_user[0].threshold)} t/s"
        measured = sorted({v.batch_size for v in per_user})
        # Every measured size passed: the true capacity lies beyond what was measured.
        bound = "at least " if outcome.capacity == measured[-1] else ""
        lines.append(f"capacity {_short(nodeid)}: {bound}{outcome.capacity} concurrent user(s) at "
                     f"{label} (measured batch sizes {', '.join(map(str, measured))})")
    return lines


# -- JSON report ---------------------------------------------------------------------------------

def _schema(name: str) -> dict[str, Any]:
    text = (resources.files("pytest_axion") / "schemas" / name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def build_report(run: RunRecord) -> dict[str, Any]:
    """The JSON report: fingerprints, settings, every measurement with samples and verdicts."""
    results = []
    for m in run.measurements:
        row = m.to_json()
        row["median"] = m.summary.median
        row["slo"] = [v.to_json() for v in _verdicts_for(m, run.outcomes)]
        results.append(row)
    tests = [{"nodeid": nodeid, "capacity": outcome.capacity,
              "slo_passed": not outcome.failures} for nodeid, outcome in run.outcomes.items()]
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool": {"name": "pytest-axion", "version": __version__},
        "settings": {"threads": run.threads, "repetitions": run.repetitions,
                     "reading_speed_tokens_per_s": run.reading.tokens_per_s, "reading_speed": run.reading.label},
        "model": run.model.to_json(),
        "hardware": run.hardware.to_json(),
        "software": {"python": platform.python_version(), "pytest": _version("pytest"),
                     "llama_cpp_python": run.hardware.llama_cpp_python,
                     "llama_cpp_system_info": dict(sorted(run.hardware.llama_cpp_system_info.items()))},
        "results": results,
        "tests": tests,
    }


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def validate_report(report: Mapping[str, Any]) -> None:
    """Raise jsonschema.ValidationError if the report does not match the shipped schema."""
    jsonschema.validate(report, _schema("report.schema.json"))


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
