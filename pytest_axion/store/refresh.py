"""Baseline refresh: K separate runs merged into one baseline, with a noise report and an old -> new diff.

Run 1 is the pytest session that asked for the refresh; runs 2..K are fresh pytest processes (so
each has its own model load), spaced in time so that they see different moments of the machine.
Only measurements of tests that passed in every run are recorded. What the runs show is recorded as
it is: entries whose runs disagree get a wide band from their own spread (the gate's design), and the
summary names them; ``--axion-strict`` refuses them instead. Each later run may take at most a few
times as long as run 1, so a refresh on a machine that turned busy ends early with the reason rather
than after many minutes. Nothing here imports pytest.
"""

from __future__ import annotations

import dataclasses
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
from pytest_axion.children import die_with_parent, stop_group
from pytest_axion.comparison import DEFAULT_ESTIMATOR, DEFAULT_TOLERANCE, Side, band_of
from pytest_axion.errors import AxionError
from pytest_axion.machine.hardware import HardwareFingerprint
from pytest_axion.records import METRICS, Measurement
from pytest_axion.stats import cv
from pytest_axion.store.baselines import Baseline, BaselineEntry, CapacityEntry

REFRESH_MAX_BETWEEN_RUN_CV = 0.15   # these machines drift 9-12% between runs; beyond 15% something was off
REFRESH_MAX_WITHIN_RUN_CV = 0.25    # single-step figures (tg1) spread ~20% normally; beyond 25%: contention
CHILD_RUN_TIME_FACTOR = 3.0         # a later run may take this many times as long as run 1 ...
CHILD_RUN_MIN_TIMEOUT_S = 120.0     # ... and never less than this
# Options of the parent run that a child run must not repeat (value-taking ones consume their value).
_PARENT_ONLY_FLAGS = ("--axion-refresh-baselines", "--axion-force")
_PARENT_ONLY_VALUED = ("--axion-runs", "--axion-run-spacing", "--axion-report", "--axion-plots", "-n",
                       "--numprocesses", "--junitxml", "--junit-xml")


@dataclass(frozen=True)
class RunData:
    """What one run contributes: its measurements, its capacity searches' brackets (one run each) and which tests
    passed."""

    measurements: tuple[Measurement, ...]
    passed: frozenset[str]
    capacities: tuple[CapacityEntry, ...] = ()


def capacity_of(nodeid: str, search: Mapping[str, Any], *, threads: int) -> CapacityEntry:
    """One run's bracket of one capacity search, from its JSON form (``CapacitySearch.to_json``, as reports hold
    it)."""
    high = search["fewest_failing"]
    return CapacityEntry(nodeid=nodeid, by=search.get("by", "users"), n_prompt=int(search["n_prompt"]),
                         n_gen=int(search["n_gen"]), threads=threads, service_level=str(search["service_level"]),
                         attainment=float(search["attainment"]),
                         runs=((float(search["most_passing"]), None if high is None else float(high)),))


@dataclass
class RefreshResult:
    """What a baseline refresh did, for the terminal summary."""

    path: Path
    runs: int
    rows: list[list[str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    noisy: list[str] = field(default_factory=list)   # entries recorded with a wide band (or refused: strict)
    dropped: list[str] = field(default_factory=list)  # older entries not kept: recorded under another provenance
    strict: bool = False
    written: bool = False


def run_from_report(report: Mapping[str, Any], *, source: str) -> RunData:
    """A run's data from its JSON report (schema version 2 or later)."""
    try:
        measurements = tuple(Measurement.from_json(row) for row in report["results"])
        passed = frozenset(t["nodeid"] for t in report["tests"] if t.get("outcome") == "passed")
        capacities = tuple(capacity_of(t["nodeid"], t["capacity_search"], threads=int(report["settings"]["threads"]))
                           for t in report["tests"] if t.get("capacity_search"))
    except (KeyError, TypeError, ValueError) as err:
        raise AxionError(f"report {source} lacks measurements or test outcomes ({err}): it was not written by "
                         "this pytest-axion") from None
    return RunData(measurements=measurements, passed=passed, capacities=capacities)


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


def child_timeout_s(first_run_s: float, *, paused_s: float = 0.0, confirm_allowance_s: float = 0.0) -> float:
    """How long a later run may take, by the work it was given: a few times run 1's measuring (its time less
    the confirmation pauses it slept), plus what confirming a miss may take (``confirm_allowance_s``), so that
    a run that confirms a miss fits and a machine that turned slow or busy ends the refresh."""
    measuring_s = max(first_run_s - paused_s, 0.0)
    return max(CHILD_RUN_MIN_TIMEOUT_S, CHILD_RUN_TIME_FACTOR * measuring_s + confirm_allowance_s)


def confirm_allowance_s(*, pauses_s: Sequence[float], first_run_measuring_s: float) -> float:
    """What confirming one test's misses may add to a later run: its pauses before each attempt, and each attempt
    measuring at most the whole run again. A run that confirms more than that and overruns is named as
    confirming (see :func:`_overrun_message`), not as a busy machine."""
    return sum(pauses_s) + len(pauses_s) * first_run_measuring_s


def plan_line(*, runs: int, first_run_s: float, spacing_s: float, timeout_s: float | None = None) -> str:
    """What is left of a refresh after run 1, and its bound, said before the wait begins."""
    left = runs - 1
    expected_s = left * (first_run_s + spacing_s)
    finish = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=expected_s)
    return (f"axion refresh: run 1 of {runs} took {first_run_s:.0f} s; {left} more run(s), each after a "
            f"{spacing_s:.0f} s pause: about {_duration(expected_s)} (until ~{finish:%H:%M} UTC); a run that takes "
            f"over {timeout_s if timeout_s is not None else child_timeout_s(first_run_s):.0f} s stops the refresh")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def run_children(parent_args: Sequence[str], *, runs: int, spacing_s: float, timeout_s: float, workdir: Path,
                 cwd: Path, progress: Callable[[str], None],
                 sleep: Callable[[float], None] = time.sleep) -> list[RunData]:
    """Runs 2..K as separate pytest processes; a child that errors or overruns ``timeout_s`` stops the refresh."""
    results = []
    for number in range(2, runs + 1):
        progress(f"axion refresh: pausing {spacing_s:.0f} s, then run {number} of {runs} (a fresh process)")
        sleep(spacing_s)
        report = workdir / f"run-{number}.json"
        log = workdir / f"run-{number}.log"
        command = [sys.executable, "-m", "pytest", *child_arguments(parent_args, report)]
        start = time.perf_counter()
        with log.open("w", encoding="utf-8") as out:
            child = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=die_with_parent)
            try:
                code = child.wait(timeout=timeout_s)
            except BaseException as err:   # Ctrl-C or a crash of this process included: the run must not go on
                stop_group(child)
                if not isinstance(err, subprocess.TimeoutExpired):
                    raise
                raise AxionError(_overrun_message(number, runs, timeout_s, log)) from None
        progress(f"axion refresh: run {number} of {runs} finished in {time.perf_counter() - start:.0f} s "
                 f"(exit {code})")
        if code not in (0, 1) or not report.exists():
            raise AxionError(f"refresh run {number} of {runs} ended with exit code {code} and no report; its "
                             f"output is in {log}: fix what it says, then refresh again (nothing was written)")
        results.append(run_from_report(json.loads(report.read_text(encoding="utf-8")), source=str(report)))
    return results


def _overrun_message(number: int, runs: int, timeout_s: float, log: Path) -> str:
    """Why a later run overran: still confirming misses (its own verdicts made it long), or a slower machine."""
    try:
        confirming = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
                      if "; attempt " in line and " pause" in line]
    except OSError:
        confirming = []
    if confirming:
        return (f"refresh run {number} of {runs} took over {timeout_s:.0f} s while confirming misses "
                f"({len(confirming)} confirming attempt(s), the last: {confirming[-1][:160]}): its own verdicts made "
                "it long, not the "
                f"machine; read them in {log}, fix the misses or the promises, then refresh again (nothing was "
                "written)")
    return (f"refresh run {number} of {runs} took over {timeout_s:.0f} s, {CHILD_RUN_TIME_FACTOR:g}x run 1's "
            f"measuring: the machine is much slower or busier than when the refresh began (its output: {log}); "
            "nothing was written: refresh again when nothing else runs on it")


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
            measured = sum(any(m.key == key for m in run.measurements) for run in runs)
            why = (f"its test passed in {len(found)} of {len(runs)} runs" if measured == len(runs) else
                   f"measured in {measured} of {len(runs)} runs (a search that stopped at other sizes)")
            skipped.append(f"{key}: {why}")
            continue
        first = found[0]
        entries[key] = BaselineEntry(nodeid=first.nodeid, metric=first.metric, batch_size=first.batch_size,
                                     n_prompt=first.n_prompt, n_gen=first.n_gen, threads=first.threads,
                                     unit=first.unit, runs=tuple(m.samples for m in found))
    return entries, skipped


def merge_capacities(runs: Sequence[RunData]) -> tuple[dict[str, CapacityEntry], list[str]]:
    """Capacity entries of tests that passed in every run, each run's bracket in run order; and what was left out,
    and why (a search of other promises in some run is not the same figure)."""
    found: dict[str, list[CapacityEntry]] = {}
    for run in runs:
        for entry in run.capacities:
            if entry.nodeid in run.passed:
                found.setdefault(entry.key, []).append(entry)
    every_key = sorted({entry.key for run in runs for entry in run.capacities})
    entries, skipped = {}, []
    for key in every_key:
        searches = found.get(key, [])
        if len(searches) < len(runs):
            skipped.append(f"{key}: its test passed with this search in {len(searches)} of {len(runs)} runs")
            continue
        first = searches[0]
        if any((s.service_level, s.attainment) != (first.service_level, first.attainment) for s in searches):
            skipped.append(f"{key}: its promises differ between runs")
            continue
        entries[key] = dataclasses.replace(first, runs=tuple(run for s in searches for run in s.runs))
    return entries, skipped


def noisy_entries(entries: Mapping[str, BaselineEntry]) -> list[str]:
    """Entries whose runs disagree or spread beyond what a quiet machine shows, worst first, with the band
    their own spread gives them (regressions smaller than that cannot be told from this machine's noise)."""
    problems: list[tuple[float, str]] = []
    for key, entry in entries.items():
        if entry.between_run_cv > REFRESH_MAX_BETWEEN_RUN_CV:
            problems.append((entry.between_run_cv, f"{_short_key(key)}: runs disagree by {entry.between_run_cv:.0%} "
                                                   f"(quiet: <= {REFRESH_MAX_BETWEEN_RUN_CV:.0%}), so its band is "
                                                   f"{_band(entry):.0%}"))
        if not METRICS[entry.metric].per_step:
            worst = max(cv(run) for run in entry.runs)
            if worst > REFRESH_MAX_WITHIN_RUN_CV:
                problems.append((worst, f"{_short_key(key)}: a run's repetitions spread {worst:.0%} (quiet: <= "
                                        f"{REFRESH_MAX_WITHIN_RUN_CV:.0%})"))
    return [text for _, text in sorted(problems, reverse=True)]


def _band(entry: BaselineEntry) -> float:
    """The gate's band for this entry at the default settings: twice its between-run spread (log scale)."""
    sd = Side(entry.runs).between_run_sd(DEFAULT_ESTIMATOR, METRICS[entry.metric].higher_is_better)
    return band_of(DEFAULT_TOLERANCE, sd or 0.0)   # one run: no spread of its own, the floor applies


# What shapes a figure: an entry recorded under other values of these is not this file's provenance's to claim.
FIGURE_PROVENANCE = ("model.sha256", "llama_cpp_python", "llama_cpp_system_info", "threads", "hardware.hardware_id")


def _figure_provenance(provenance: Mapping[str, Any]) -> dict[str, Any]:
    found = {}
    for dotted in FIGURE_PROVENANCE:
        value: Any = provenance
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        found[dotted] = value
    return found


def combine(old: Baseline | None, new_entries: Mapping[str, BaselineEntry], *, hardware_id: str, model_label: str,
            provenance: dict[str, Any],
            new_capacities: Mapping[str, CapacityEntry] | None = None) -> tuple[Baseline, list[str]]:
    """The new file: every new entry and capacity search, stamped with this refresh's time and commit, plus the old
    ones this refresh did not measure, kept with their own stamps where they were recorded under the same model,
    library, build and threads (else dropped: the file's provenance would misdescribe them). And a line per
    group of dropped entries."""
    recorded_at, commit = provenance.get("recorded_at"), provenance.get("git_commit")
    new_capacities = new_capacities or {}
    entries: dict[str, BaselineEntry] = {}
    capacities: dict[str, CapacityEntry] = {}
    dropped: list[str] = []
    if old is not None:
        before, now = _figure_provenance(old.provenance), _figure_provenance(provenance)
        differs = [name for name in FIGURE_PROVENANCE if before[name] != now[name]]
        untouched = {key: entry for key, entry in old.entries.items() if key not in new_entries}
        untouched_capacities = {key: entry for key, entry in old.capacities.items() if key not in new_capacities}
        if differs and (untouched or untouched_capacities):
            dropped.append(f"{len(untouched) + len(untouched_capacities)} older entr(ies) not measured by this "
                           f"refresh were dropped: they were recorded with another {', '.join(differs)}; refresh "
                           "their tests too to record them again")
        else:
            entries.update(untouched)
            capacities.update(untouched_capacities)
    entries.update({key: dataclasses.replace(entry, recorded_at=recorded_at, git_commit=commit)
                    for key, entry in new_entries.items()})
    capacities.update({key: dataclasses.replace(entry, recorded_at=recorded_at, git_commit=commit)
                       for key, entry in new_capacities.items()})
    return Baseline(hardware_id=hardware_id, model_label=model_label, provenance=provenance, entries=entries,
                    capacities=capacities), dropped


def diff_rows(old: Baseline | None, new_entries: Mapping[str, BaselineEntry],
              new_capacities: Mapping[str, CapacityEntry] | None = None) -> list[list[str]]:
    """One row per recorded entry: old level -> new level, change, runs, between-run spread; and one per capacity
    search: the most load every run met, before and now, each run's bracket."""
    rows = []
    for key, entry in sorted(new_entries.items()):
        before = old.entries.get(key) if old else None
        change = f"{entry.level / before.level:.2f}x" if before else "new"
        rows.append([_short_key(key), f"{before.level:.4g}" if before else "-", f"{entry.level:.4g} {entry.unit}",
                     change, str(len(entry.runs)), f"{entry.between_run_cv:.1%}"])
    for key, capacity in sorted((new_capacities or {}).items()):
        earlier = old.capacities.get(key) if old else None
        change = (f"{capacity.floor / earlier.floor:.2f}x" if earlier and earlier.floor > 0
                  else "new" if earlier is None else "-")
        rows.append([_short_key(key), f"{earlier.floor:g}" if earlier else "-",
                     f"{capacity.floor:g} {capacity.by} (every run; {capacity.runs_text()})", change,
                     str(len(capacity.runs)), "-"])
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
        # no path: it is one machine's, and the file is committed
        "model": {name: value for name, value in model.items() if name != "path"},
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
