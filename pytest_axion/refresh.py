"""Baseline refresh: K separate runs merged into one baseline, with a noise check and an old -> new diff.

Run 1 is the pytest session that asked for the refresh; runs 2..K are fresh pytest processes (so
each has its own model load), spaced in time so that they see different moments of the machine.
Only measurements of tests that passed in every run are recorded. Nothing here imports pytest.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_axion import __version__
from pytest_axion.baselines import Baseline, BaselineEntry
from pytest_axion.errors import AxionError
from pytest_axion.hardware import HardwareFingerprint
from pytest_axion.records import Measurement
from pytest_axion.stats import cv

REFRESH_MAX_BETWEEN_RUN_CV = 0.15   # these machines drift 9-12% between runs; beyond 15% something was off
REFRESH_MAX_WITHIN_RUN_CV = 0.25    # single-step figures (tg1) spread ~20% normally; beyond 25%: contention
# Options of the parent run that a child run must not repeat (value-taking ones consume their value).
_PARENT_ONLY_FLAGS = ("--axion-refresh-baselines", "--axion-force")
_PARENT_ONLY_VALUED = ("--axion-runs", "--axion-run-spacing", "--axion-report", "--axion-plots", "-n",
                       "--numprocesses", "--junitxml", "--junit-xml")


@dataclass(frozen=True)
class RunData:
    """What one run contributes: its measurements and which tests passed."""

    measurements: tuple[Measurement, ...]
    passed: frozenset[str]


@dataclass
class RefreshResult:
    """What a baseline refresh did, for the terminal summary."""

    path: Path
    runs: int
    rows: list[list[str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    written: bool = False


def run_from_report(report: Mapping[str, Any], *, source: str) -> RunData:
    """A run's data from its JSON report (schema version 2 or later)."""
    try:
        measurements = tuple(Measurement.from_json(row) for row in report["results"])
        passed = frozenset(t["nodeid"] for t in report["tests"] if t.get("outcome") == "passed")
    except (KeyError, TypeError, ValueError) as err:
        raise AxionError(f"report {source} lacks measurements or test outcomes ({err}): it was not written by "
                         "this pytest-axion") from None
    return RunData(measurements=measurements, passed=passed)


def child_arguments(parent_args: Sequence[str], report_path: Path) -> list[str]:
    """The parent's pytest arguments for a child run: no refresh, no xdist, its own report."""
    args: list[str] = []
    skip_next = False
    for arg in parent_args:
        if skip_next:
            skip_next = False
            continue
        name = arg.split("=", 1)[0]
        if name in _PARENT_ONLY_FLAGS or re.fullmatch(r"-n\S+", arg):  # -n2, -nauto
            continue
        if name in _PARENT_ONLY_VALUED:
            skip_next = "=" not in arg
            continue
        args.append(arg)
    if "--axion-slo" not in args:
        args.append("--axion-slo")
    return [*args, "--axion-no-baselines", "-p", "no:cacheprovider", "--axion-report", str(report_path)]


def run_children(parent_args: Sequence[str], *, runs: int, spacing_s: float, workdir: Path, cwd: Path,
                 progress: Callable[[str], None], sleep: Callable[[float], None] = time.sleep) -> list[RunData]:
    """Runs 2..K as separate pytest processes; a child that errors (not just fails tests) stops the refresh."""
    results = []
    for number in range(2, runs + 1):
        progress(f"axion refresh: pausing {spacing_s:.0f} s, then run {number} of {runs} (a fresh process)")
        sleep(spacing_s)
        report = workdir / f"run-{number}.json"
        log = workdir / f"run-{number}.log"
        command = [sys.executable, "-m", "pytest", *child_arguments(parent_args, report)]
        start = time.perf_counter()
        with log.open("w", encoding="utf-8") as out:
            code = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
        progress(f"axion refresh: run {number} of {runs} finished in {time.perf_counter() - start:.0f} s "
                 f"(exit {code})")
        if code not in (0, 1) or not report.exists():
            raise AxionError(f"refresh run {number} of {runs} ended with exit code {code} and no report; its "
                             f"output is in {log}: fix what it says, then refresh again (nothing was written)")
        results.append(run_from_report(json.loads(report.read_text(encoding="utf-8")), source=str(report)))
    return results


def merge_runs(runs: Sequence[RunData]) -> tuple[dict[str, BaselineEntry], list[str]]:
    """Entries for measurements of tests that passed in every run; and what was left out, and why."""
    by_key: dict[str, list[Measurement]] = {}
    for run in runs:
        for m in run.measurements:
            if m.nodeid in run.passed:
                by_key.setdefault(m.key, []).append(m)
    entries, skipped = {}, []
    every_key = sorted({m.key for run in runs for m in run.measurements})
    for key in every_key:
        found = by_key.get(key, [])
        if len(found) < len(runs):
            skipped.append(f"{key}: its test passed in {len(found)} of {len(runs)} runs")
            continue
        first = found[0]
        entries[key] = BaselineEntry(nodeid=first.nodeid, metric=first.metric, batch_size=first.batch_size,
                                     n_prompt=first.n_prompt, n_gen=first.n_gen, threads=first.threads,
                                     unit=first.unit, runs=tuple(m.samples for m in found))
    return entries, skipped


def noise_problems(entries: Mapping[str, BaselineEntry]) -> list[str]:
    """Entries too noisy to be a reference, worst first: a refresh refuses them unless forced."""
    problems: list[tuple[float, str]] = []
    for key, entry in entries.items():
        if entry.between_run_cv > REFRESH_MAX_BETWEEN_RUN_CV:
            problems.append((entry.between_run_cv, f"{key}: runs disagree by {entry.between_run_cv:.0%} (limit "
                                                   f"{REFRESH_MAX_BETWEEN_RUN_CV:.0%})"))
        if entry.metric != "itl_ms":
            worst = max(cv(run) for run in entry.runs)
            if worst > REFRESH_MAX_WITHIN_RUN_CV:
                problems.append((worst, f"{key}: a run's repetitions spread {worst:.0%} (limit "
                                        f"{REFRESH_MAX_WITHIN_RUN_CV:.0%})"))
    return [text for _, text in sorted(problems, reverse=True)]


def combine(old: Baseline | None, new_entries: Mapping[str, BaselineEntry], *, hardware_id: str, model_label: str,
            provenance: dict[str, Any]) -> Baseline:
    """The new file: every new entry, plus old entries this refresh did not measure (kept as they were)."""
    entries = dict(old.entries) if old else {}
    entries.update(new_entries)
    return Baseline(hardware_id=hardware_id, model_label=model_label, provenance=provenance, entries=entries)


def diff_rows(old: Baseline | None, new_entries: Mapping[str, BaselineEntry]) -> list[list[str]]:
    """One row per recorded entry: old level -> new level, change, runs, between-run spread."""
    rows = []
    for key, entry in sorted(new_entries.items()):
        before = old.entries.get(key) if old else None
        change = f"{entry.level / before.level:.2f}x" if before else "new"
        rows.append([_short_key(key), f"{before.level:.4g}" if before else "-", f"{entry.level:.4g} {entry.unit}",
                     change, str(len(entry.runs)), f"{entry.between_run_cv:.1%}"])
    return rows


DIFF_HEADERS = ["measurement", "old", "new (median of runs)", "new/old", "runs", "between-run CV"]


def _short_key(key: str) -> str:
    path, _, rest = key.partition("::")
    return f"{Path(path).name}::{rest}"


def git_commit(root: Path) -> str | None:
    """The repository's commit, with '-dirty' if it has uncommitted changes; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10,
                              check=False)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def provenance(*, hardware: HardwareFingerprint, model: Mapping[str, Any], threads: int, repetitions: int,
               runs: int, spacing_s: float, git: str | None) -> dict[str, Any]:
    return {
        "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git,
        "pytest_axion": __version__,
        "llama_cpp_python": hardware.llama_cpp_python,
        "llama_cpp_system_info": dict(sorted(hardware.llama_cpp_system_info.items())),
        "model": dict(model),
        "hardware": hardware.to_json(),
        "threads": threads,
        "repetitions": repetitions,
        "runs": runs,
        "run_spacing_s": spacing_s,
    }


def passed_nodeids(outcomes: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Tests whose every phase passed (a failure in setup, call or teardown excludes it)."""
    listed = list(outcomes)
    failed = {nodeid for nodeid, outcome in listed if outcome != "passed"}
    return frozenset(nodeid for nodeid, _ in listed if nodeid not in failed)
