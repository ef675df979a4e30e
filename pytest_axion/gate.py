"""The baseline gate: pick this machine's baseline, judge each measurement, confirm before failing.

It knows nothing of pytest: the caller passes a ``remeasure`` callable (fresh measurements of the
same workloads) and a ``wait`` callable (a pause with progress output), so the whole procedure is
testable with fakes and runs unchanged on the real model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_axion.baselines import Baseline, BaselineEntry, baseline_path, read_baseline
from pytest_axion.hardware import HardwareFingerprint
from pytest_axion.model import ModelFingerprint
from pytest_axion.records import METRICS, Measurement
from pytest_axion.verdicts import (
    NO_BASELINE,
    Attempt,
    BaselineVerdict,
    Side,
    busy_reason,
    compare,
    decide,
    needs_confirmation,
)

Remeasure = Callable[[Sequence[Measurement]], dict[str, Measurement]]


@dataclass(frozen=True)
class GateSettings:
    estimator: str
    confirm: int          # extra attempts before a regression fails
    spacing_s: float      # pause before each extra attempt
    default_tolerance: float


RECORD_COMMAND = "pytest --axion-slo --axion-refresh-baselines"


def no_baseline_message(path: Path | str) -> str:
    """Said once per run when this hardware and model have no baseline: where, and how to record one."""
    return (f"none for this hardware and model at {path}: verdicts are no-baseline; record one with "
            f"`{RECORD_COMMAND}` (or `pytest-axion refresh`)")


def _label(m: Measurement) -> str:
    return f"{m.metric} {m.shape}"


class BaselineGate:
    """The stored baseline of one hardware id and model, and the verdicts against it."""

    def __init__(self, root: Path, *, hardware: HardwareFingerprint, model: ModelFingerprint, threads: int,
                 settings: GateSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.path = baseline_path(root, hardware.hardware_id, model.label)
        self.settings = settings
        self._sleep = sleep
        # A corrupt file is an error (BaselineError), never an empty baseline.
        self.baseline: Baseline | None = read_baseline(self.path) if self.path.exists() else None
        self.differences = tuple(self._differences(hardware, model, threads)) if self.baseline else ()

    @property
    def found(self) -> bool:
        return self.baseline is not None

    def missing_message(self) -> str:
        return no_baseline_message(self.path)

    def _differences(self, hardware: HardwareFingerprint, model: ModelFingerprint, threads: int) -> list[str]:
        assert self.baseline is not None
        provenance = self.baseline.provenance
        found: list[str] = []
        stored_sha = provenance.get("model", {}).get("sha256")
        if stored_sha and stored_sha != model.sha256:
            found.append(f"model sha256 {stored_sha[:12]} -> {model.sha256[:12]}")
        stored_threads = provenance.get("threads")
        if stored_threads is not None and stored_threads != threads:
            found.append(f"threads {stored_threads} -> {threads}")
        try:
            stored = HardwareFingerprint.from_json(provenance["hardware"], source=f"baseline file {self.path}")
        except (KeyError, ValueError):
            return found  # the schema already demands a whole fingerprint; an older file just says less
        found.extend(stored.differences(hardware))
        return found

    def judge(self, measurements: Sequence[Measurement], *, tolerance: float | None, remeasure: Remeasure,
              wait_message: Callable[[str], None] = lambda _: None) -> list[BaselineVerdict]:
        """Verdicts for one test's measurements; regressions are measured again before they stand."""
        tol = self.settings.default_tolerance if tolerance is None else tolerance
        attempts: dict[str, list[Attempt]] = {}
        entries: dict[str, BaselineEntry] = {}
        verdicts: dict[str, BaselineVerdict] = {}
        for m in measurements:
            entry = self.baseline.entries.get(m.key) if self.baseline else None
            if entry is None:
                reason = "not in the stored baseline" if self.baseline else "no baseline file for this hardware"
                verdicts[m.key] = BaselineVerdict(key=m.key, label=_label(m), metric=m.metric, unit=m.unit,
                                                  estimator=self.settings.estimator, tolerance=tol,
                                                  verdict=NO_BASELINE, reason=reason)
                continue
            entries[m.key] = entry
            attempts[m.key] = [self._attempt(entry, m, tol)]

        pending = [m for m in measurements if m.key in attempts
                   and needs_confirmation(attempts[m.key], self.settings.confirm)]
        while pending:
            number = len(attempts[pending[0].key]) + 1
            wait_message(f"{len(pending)} measurement(s) look regressed; attempt {number} of "
                         f"{1 + self.settings.confirm} after a {self.settings.spacing_s:.0f} s pause")
            self._sleep(self.settings.spacing_s)
            fresh = remeasure(pending)
            for m in pending:
                attempts[m.key].append(self._attempt(entries[m.key], fresh[m.key], tol))
            pending = [m for m in pending if needs_confirmation(attempts[m.key], self.settings.confirm)]

        labels = {m.key: _label(m) for m in measurements}
        for key, tried in attempts.items():
            verdict, reason = decide(tried)
            entry = entries[key]
            verdicts[key] = BaselineVerdict(key=key, label=labels[key], metric=entry.metric, unit=entry.unit,
                                            estimator=self.settings.estimator, tolerance=tol, verdict=verdict,
                                            reason=reason, attempts=tuple(tried), baseline_runs=len(entry.runs),
                                            differences=self.differences)
        return [verdicts[m.key] for m in measurements]

    def _attempt(self, entry: BaselineEntry, current: Measurement, tolerance: float) -> Attempt:
        higher = METRICS[current.metric].higher_is_better
        stored = Side(entry.runs)
        comparison = compare(stored, Side((current.samples,)), higher_is_better=higher, tolerance=tolerance,
                             estimator=self.settings.estimator)
        busy = busy_reason(current.samples, higher_is_better=higher, baseline_within_cv=stored.within_run_cv(),
                           per_repetition=current.metric != "itl_ms")
        return Attempt(comparison=comparison, busy=busy, samples=current.samples,
                       other_cpus=current.other_cpus if current.contended else None)
