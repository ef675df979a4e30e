"""This machine's stored baseline: the file of this hardware id and model, read once, and how it differs from
this run (model, threads, the machine's fingerprint)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_axion.machine.hardware import HardwareFingerprint
from pytest_axion.store.baselines import Baseline, baseline_path, read_baseline

if TYPE_CHECKING:
    from pytest_axion.machine.model import ModelFingerprint


@dataclass(frozen=True)
class GateSettings:
    estimator: str
    default_tolerance: float


RECORD_COMMAND = "pytest --axion-slo --axion-refresh-baselines"


def no_baseline_message(path: Path | str) -> str:
    """Said once per run when this hardware and model have no baseline: where, and how to record one."""
    return (f"none for this hardware and model at {path}: verdicts are no-baseline; record one with "
            f"`{RECORD_COMMAND}` (or `pytest-axion refresh`)")


class BaselineGate:
    """The stored baseline of one hardware id and model, and the verdicts against it."""

    def __init__(self, root: Path, *, hardware: HardwareFingerprint, model: ModelFingerprint, threads: int,
                 settings: GateSettings) -> None:
        self.path = baseline_path(root, hardware.hardware_id, model.label)
        self.settings = settings
        self.threads = threads   # a capacity search's key holds them, as a measurement's does
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
