"""The refresh of this machine's baseline from a run: this run plus K-1 fresh runs of the same tests, merged under
the lock into what is stored now (:mod:`pytest_axion.store.refresh` has the pure steps)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from pytest_axion.errors import AxionError
from pytest_axion.promises.confirm import pause_before
from pytest_axion.report.record import RunRecord
from pytest_axion.settings import Settings
from pytest_axion.store import refresh as refreshing
from pytest_axion.store.baselines import Baseline, baseline_path, check_writable, read_baseline, update_baseline


def refresh_baselines(record: RunRecord | None, *, settings: Settings, baselines_root: Path, passed: frozenset[str],
                      first_run_s: float, paused_s: float, free_model: Callable[[], None],
                      parent_args: Sequence[str], cwd: Path, repo_root: Path, progress: Callable[[str], None],
                      sleep: Callable[[float], None] | None = None) -> refreshing.RefreshResult:
    """Record ``record`` (run 1, ``first_run_s`` long, of which ``paused_s`` confirmation pauses) plus K-1 fresh runs
    as the baseline, noisy entries with the wide band their spread gives them (refused under --axion-strict).

    The old file is read first: a corrupt one stops the refresh (it is never silently replaced).
    """
    if record is None:
        raise AxionError("--axion-refresh-baselines: no test measured anything, so there is nothing to record")
    path = baseline_path(baselines_root, record.hardware.hardware_id, record.model.label)
    old: Baseline | None = read_baseline(path) if path.exists() else None
    check_writable(path)  # before minutes of measuring, not after
    runs = [refreshing.RunData(measurements=tuple(record.measurements), passed=passed,
                               capacities=tuple(refreshing.capacity_of(nodeid, search.to_json(), threads=record.threads)
                                                for nodeid, search in record.capacity_searches.items()))]
    if not passed & {m.nodeid for m in record.measurements}:
        raise AxionError("--axion-refresh-baselines: no measuring test passed, so nothing would be recorded; "
                         "fix the failures (or the SLOs) first")
    free_model()   # the next runs get the machine alone
    measuring_s = max(first_run_s - paused_s, 0.0)
    pauses = [pause_before(attempt, settings.confirm_spacing_s.value)
              for attempt in range(2, settings.confirm.value + 3)]   # + the unsure first attempt's extra one
    allowance = refreshing.confirm_allowance_s(pauses_s=pauses, first_run_measuring_s=measuring_s)
    timeout_s = refreshing.child_timeout_s(first_run_s, paused_s=paused_s, confirm_allowance_s=allowance)
    if settings.runs.value > 1:
        progress(refreshing.plan_line(runs=settings.runs.value, first_run_s=first_run_s,
                                      spacing_s=settings.run_spacing_s.value, timeout_s=timeout_s))
    with tempfile.TemporaryDirectory(prefix="axion-refresh-") as workdir:
        runs += refreshing.run_children(parent_args, runs=settings.runs.value, spacing_s=settings.run_spacing_s.value,
                                        timeout_s=timeout_s, workdir=Path(workdir), cwd=cwd, progress=progress,
                                        **({} if sleep is None else {"sleep": sleep}))
    entries, skipped = refreshing.merge_runs(runs)
    capacities, skipped_searches = refreshing.merge_capacities(runs)
    result = refreshing.RefreshResult(path=path, runs=len(runs), rows=refreshing.diff_rows(old, entries, capacities),
                                      skipped=skipped + skipped_searches, noisy=refreshing.noisy_entries(entries),
                                      strict=settings.strict)
    if not entries:
        raise AxionError("--axion-refresh-baselines: no test passed in every run, so nothing was recorded; "
                         f"{skipped[0] if skipped else ''}")
    if result.noisy and settings.strict:
        return result
    provenance = refreshing.provenance(hardware=record.hardware, model=record.model.to_json(), threads=record.threads,
                                       repetitions=settings.repetitions.value, runs=len(runs),
                                       spacing_s=settings.run_spacing_s.value, git=refreshing.git_commit(repo_root))

    # Merged into what is there *now*, under the lock: a refresh that ran meanwhile keeps its entries.
    def merged(current: Baseline | None) -> Baseline:
        baseline, result.dropped = refreshing.combine(current, entries, hardware_id=record.hardware.hardware_id,
                                                      model_label=record.model.label, provenance=provenance,
                                                      new_capacities=capacities)
        return baseline

    update_baseline(path, merged)
    result.written = True
    return result
