"""Render a run for people (header, table) and for machines (the JSON report, schema-checked)."""

from __future__ import annotations

import dataclasses
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
from pytest_axion.ab import PairedComparison
from pytest_axion.atomic import write_json_atomically
from pytest_axion.cpu import parse_system_info
from pytest_axion.engine import ModelFacts, WarmUpRun
from pytest_axion.errors import AxionError
from pytest_axion.gate import no_baseline_message
from pytest_axion.hardware import HardwareFingerprint
from pytest_axion.harness import CapacitySearch
from pytest_axion.model import ModelFingerprint
from pytest_axion.reading import ReadingSpeed
from pytest_axion.records import Measurement
from pytest_axion.refresh import DIFF_HEADERS, RefreshResult
from pytest_axion.shape import ShapeVerdict
from pytest_axion.slo import SloOutcome, SloVerdict
from pytest_axion.verdicts import BaselineVerdict

REPORT_SCHEMA_VERSION = 4
READABLE_REPORT_VERSIONS = (1, 2, 3, 4)
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
    baseline: BaselineStatus | None = None          # None: not compared (off, or refreshing)
    baseline_verdicts: Mapping[str, BaselineVerdict] = dataclasses.field(default_factory=dict)
    test_outcomes: Mapping[str, str] = dataclasses.field(default_factory=dict)  # nodeid -> passed/failed/skipped
    shape_verdicts: Mapping[str, Sequence[ShapeVerdict]] = dataclasses.field(default_factory=dict)
    ab: AbSession | None = None                       # None: not an A/B session
    environment: tuple[str, ...] = ()                 # warnings about the machine when measuring started
    capacity_searches: Mapping[str, CapacitySearch] = dataclasses.field(default_factory=dict)
    warm_up: WarmUpRun | None = None


@dataclass(frozen=True)
class AbSide:
    """One side of an A/B session: which interpreter, and the llama.cpp build it loaded."""

    python: str
    facts: ModelFacts

    @property
    def description(self) -> str:
        f = self.facts
        return (f"llama-cpp-python {f.llama_cpp_python_version}, llama.cpp {f.ggml_commit} (ggml {f.ggml_version}), "
                f"{shown_flags(parse_system_info(f.system_info))} [{self.python}]")

    def to_json(self) -> dict[str, Any]:
        return {"python": self.python, **dataclasses.asdict(self.facts)}


@dataclass(frozen=True)
class AbSession:
    baseline: AbSide
    current: AbSide
    rounds: int
    tolerance: float
    verdicts: Mapping[str, PairedComparison]   # by measurement key

    def header_lines(self) -> list[str]:
        return [f"A/B baseline (A): {self.baseline.description}",
                f"A/B current  (B): {self.current.description}",
                f"A/B: {self.rounds} rounds in ABBA order, one repetition per side each; paired ratio B/A "
                f"(Hodges-Lehmann, 95% Wilcoxon interval), tolerance {self.tolerance:.0%}"]

    def to_json(self) -> dict[str, Any]:
        return {"baseline": self.baseline.to_json(), "current": self.current.to_json(), "rounds": self.rounds,
                "tolerance": self.tolerance}


def ab_table(session: AbSession) -> str:
    """One row per measurement: both sides' medians, the paired ratio and its interval, the verdict."""
    rows = []
    for v in session.verdicts.values():
        lo, hi = v.interval
        rows.append([_short(v.nodeid), v.metric, v.workload,
                     f"{_fmt(v.baseline_median)}", f"{_fmt(v.current_median)}", v.unit, f"{v.ratio:.3f}x",
                     f"[{lo:.3f}-{hi:.3f}]" + ("" if v.exact_interval else "*"), len(v.ratios), v.verdict])
    if not rows:
        return ""
    table: str = tabulate(rows, headers=["test", "metric", "workload", "A median", "B median", "unit", "B/A",
                                         "95% CI", "pairs", "verdict"], tablefmt="simple", disable_numparse=True)
    return table


@dataclass(frozen=True)
class BaselineStatus:
    """Which stored baseline the run was judged against, and how it differs from this run's setup."""

    path: str
    found: bool
    estimator: str
    tolerance: float
    confirm: int
    runs: int = 0
    recorded_at: str | None = None
    llama_cpp_python: str | None = None
    git_commit: str | None = None
    differences: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "differences": list(self.differences)}


def shown_flags(flags: Mapping[str, str]) -> str:
    """The llama.cpp build flags that matter for speed, as ``REPACK=1 OPENMP=1 ...``."""
    return " ".join(f"{name}={flags[name]}" for name in _FLAGS_SHOWN if name in flags) or "no flags reported"


def header_lines(run: RunRecord) -> list[str]:
    """What was measured, on what, with what: the lines above the table."""
    model, hardware = run.model, run.hardware
    flags = hardware.llama_cpp_system_info
    shown = shown_flags(flags)
    return [
        f"model: {model.file_name} ({model.architecture}, {model.quantization}, "
        f"{model.n_params / 1e6:.0f}M params, {model.size_bytes / 2**20:.0f} MiB, sha256 {model.sha256[:12]}) "
        f"loaded in {run.load_seconds:.2f} s",
        f"hardware: {hardware.hardware_id} ({hardware.hardware_id_source}): {hardware.cpu_description}, "
        f"{hardware.logical_cores} logical / {hardware.physical_cores} physical cores",
        f"llama-cpp-python {hardware.llama_cpp_python}, threads {run.threads}, llama.cpp: "
        f"{shown}",
        f"statistic: median of {run.ab.rounds if run.ab else run.repetitions} repetitions (IQR, CV); "
        f"{run.reading.label}",
        *warm_up_lines(run.warm_up),
        *baseline_lines(run.baseline),
        *(run.ab.header_lines() if run.ab else []),
        *(f"environment: {warning}" for warning in run.environment),
    ]


def warm_up_lines(warm_up: WarmUpRun | None) -> list[str]:
    """How long the session warmed up before its first measurement, and whether the speed settled."""
    if warm_up is None or not warm_up.seconds:
        return []
    first, last = (warm_up.n_prompt / s for s in (warm_up.seconds[0], warm_up.seconds[-1]))
    how = "until the speed settled" if warm_up.settled else "and the speed had not settled (a busy machine?)"
    return [f"warm-up: {len(warm_up.seconds)} prompt(s) of {warm_up.n_prompt} tokens in {sum(warm_up.seconds):.1f} s "
            f"{how} (first {_fmt(first)} t/s, last {_fmt(last)} t/s)"]


def baseline_lines(status: BaselineStatus | None) -> list[str]:
    if status is None:
        return []
    rule = (f"estimator {status.estimator} per run, tolerance {status.tolerance:.0%} (or 2x the baseline's "
            f"between-run spread), {status.confirm} confirming attempt(s) before a regression fails")
    if not status.found:
        return [f"baseline: {no_baseline_message(status.path)}"]
    lines = [f"baseline: {status.path} ({status.runs} run(s) per entry, recorded {status.recorded_at} with "
             f"llama-cpp-python {status.llama_cpp_python}, git {(status.git_commit or 'none')[:12]}); {rule}"]
    if status.differences:
        lines.append(f"baseline differs from this run: {'; '.join(status.differences)}")
    return lines


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


def _baseline_cells(verdict: BaselineVerdict | None) -> list[str]:
    if verdict is None:
        return ["", "", "", ""]
    c = verdict.first
    if c is None:
        return ["-", "-", "0", verdict.verdict]
    return [_fmt(c.baseline_level), f"{c.speedup:.2f}x [{c.low:.2f}-{c.high:.2f}]", str(len(verdict.attempts)),
            verdict.verdict]


def measurement_table(measurements: Iterable[Measurement], outcomes: Mapping[str, SloOutcome],
                      baseline_verdicts: Mapping[str, BaselineVerdict] | None = None) -> str:
    """One row per measurement: workload, median with dispersion, SLO verdict and baseline verdict.

    ``speedup`` is the current run's estimator over the baseline's (above 1 is faster, latency included),
    with its 95% interval; ``tries`` counts the attempts, confirmations included.
    """
    rows = []
    verdicts = baseline_verdicts or {}
    with_baseline = bool(verdicts)
    for m in measurements:
        s = m.summary
        slo, verdict = _slo_cell(_verdicts_for(m, outcomes))
        row = [_short(m.nodeid), m.metric, m.batch_size, m.n_prompt, m.n_gen,
               f"{_fmt(s.median)} {m.unit}", _fmt(s.iqr), f"{s.cv * 100:.1f}%", s.n, slo, verdict]
        if with_baseline:
            row += _baseline_cells(verdicts.get(m.key))
        rows.append(row)
    headers = ["test", "metric", "batch", "prompt", "gen", "median", "IQR", "CV", "n", "SLO", "verdict"]
    if with_baseline:
        headers += ["baseline", "speedup [95% CI]", "tries", "vs baseline"]
    table: str = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    return table


def shape_table(shape_verdicts: Mapping[str, Sequence[ShapeVerdict]]) -> str:
    """Steadiness and scaling promises: one row per checked group of cells, with its figures.

    For prompt speed, "levels off" is the fewest tokens per batch (prompt x users) that reached 90% of
    the fastest cell: below it the machine's threads were not all busy.
    """
    rows = []
    for nodeid, verdicts in shape_verdicts.items():
        for v in verdicts:
            check = v.first
            promise = (f"steady within {check.threshold:.0%}" if check.key == "steady_within"
                       else f"scales >= {check.threshold:g}x")
            observed = (f"spread {check.observed:.0%}" if check.key == "steady_within"
                        else f"{check.observed:.2f}x")
            curve = ", ".join(f"{label}: {_fmt(value)}" for label, value in check.curve)
            knee = f"{check.levels_off_at} tokens" if check.levels_off_at is not None else ""
            rows.append([_short(nodeid), check.group, promise, observed, len(v.attempts), v.verdict, knee, curve])
    if not rows:
        return ""
    table: str = tabulate(rows, headers=["test", "cells", "promise", "observed", "tries", "verdict", "levels off at",
                                         "median t/s per cell"], tablefmt="simple", disable_numparse=True)
    return table


def capacity_lines(outcomes: Mapping[str, SloOutcome],
                   searches: Mapping[str, CapacitySearch] | None = None) -> list[str]:
    """Per test with a per-user SLO: how many concurrent users get it, as a bracket when a search found the end."""
    lines = []
    for nodeid, outcome in outcomes.items():
        if outcome.capacity is None:
            continue
        per_user = [v for v in outcome.verdicts if v.key == "per_user_tps"]
        label = per_user[0].threshold_label or f"{_fmt(per_user[0].threshold)} t/s"
        measured = sorted({v.batch_size for v in per_user})
        sizes = f"measured batch sizes {', '.join(map(str, measured))}"
        search = (searches or {}).get(nodeid)
        if search is not None and search.fewest_failing is not None:
            speed = dict(search.per_user_tps)[search.fewest_failing]
            lines.append(f"capacity {_short(nodeid)}: {outcome.capacity} concurrent user(s) at {label}; "
                         f"{search.fewest_failing} did not ({_fmt(speed)} t/s each) ({sizes})")
        elif search is not None:
            lines.append(f"capacity {_short(nodeid)}: at least {outcome.capacity} concurrent user(s) at {label} "
                         f"({sizes}; no larger size measured: {search.stopped})")
        else:
            # Every measured size passed: the true capacity lies beyond what was measured.
            bound = "at least " if outcome.capacity == measured[-1] else ""
            lines.append(f"capacity {_short(nodeid)}: {bound}{outcome.capacity} concurrent user(s) at "
                         f"{label} ({sizes})")
    return lines


def refresh_lines(result: RefreshResult | None) -> list[str]:
    """The refresh's old -> new table, what it left out, and whether it wrote."""
    if result is None:
        return []
    lines = ["", f"baseline refresh: {result.runs} run(s) -> {result.path}",
             tabulate(result.rows, headers=DIFF_HEADERS, tablefmt="simple", disable_numparse=True)]
    lines += [f"not recorded: {text}" for text in result.skipped]
    if result.noisy and not result.written:
        lines.append(f"REFUSED (--axion-strict): {len(result.noisy)} entr(ies) too noisy to be a tight reference, "
                     f"worst: {result.noisy[0]}; nothing was written: refresh again when the machine is quiet, or "
                     "without --axion-strict to record them with the wide band their spread gives them")
    elif result.noisy:
        lines.append(f"noisy: {len(result.noisy)} entr(ies) recorded with a wide band from their own spread "
                     "(regressions smaller than the band cannot be seen there; refresh on a quiet machine to "
                     "tighten it):")
        lines += [f"  {text}" for text in result.noisy[:10]]
        if len(result.noisy) > 10:
            lines.append(f"  ... and {len(result.noisy) - 10} more")
    if result.written:
        lines.append(f"written: {result.path} ({len(result.rows)} entries recorded)")
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
        judged = run.baseline_verdicts.get(m.key)
        row["baseline"] = judged.to_json() if judged is not None else None
        paired = run.ab.verdicts.get(m.key) if run.ab else None
        row["ab"] = paired.to_json() if paired is not None else None
        results.append(row)
    nodeids = list(dict.fromkeys([*(m.nodeid for m in run.measurements), *run.outcomes]))
    tests = []
    for nodeid in nodeids:
        outcome = run.outcomes.get(nodeid)
        search = run.capacity_searches.get(nodeid)
        tests.append({"nodeid": nodeid, "outcome": run.test_outcomes.get(nodeid, "unknown"),
                      "capacity": outcome.capacity if outcome else None,
                      "capacity_search": search.to_json() if search else None,
                      "slo_passed": not outcome.failures if outcome else None,
                      "shape": [v.to_json() for v in run.shape_verdicts.get(nodeid, [])]})
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
        "baseline": run.baseline.to_json() if run.baseline is not None else None,
        "ab": run.ab.to_json() if run.ab is not None else None,
        "environment_warnings": list(run.environment),
        "warm_up": ({"n_prompt": run.warm_up.n_prompt, "seconds": list(run.warm_up.seconds),
                     "settled": run.warm_up.settled} if run.warm_up else None),
        "results": results,
        "tests": tests,
    }


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def validate_report(report: Mapping[str, Any]) -> None:
    """Raise jsonschema.ValidationError if the report does not match the shipped schema.

    Reports of every readable version validate: version 1 lacks only the baseline parts.
    """
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
