"""Stored per-hardware baselines: layout, schema-checked reads, and locked, atomic writes.

One JSON file per hardware id and model, ``<root>/<hardware-id>/<model-label>.json``, sorted keys so
that diffs read well. Every entry keeps each run's raw samples. A file that cannot be read, parsed
or validated is an error naming the file and the fix; it is never skipped and never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import stat
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pytest_axion.errors import BaselineError, HardwareIdError
from pytest_axion.files import TEMP_PREFIX, write_json_atomically
from pytest_axion.machine.hardware import validate_hardware_id
from pytest_axion.schemas import baseline_errors
from pytest_axion.stats import cv, median
from pytest_axion.store.private import LockTimeout, file_lock, private_dir

BASELINE_SCHEMA_VERSION = 3
# 1: no per-entry recording stamp (each entry takes the file's); 2: no capacity searches
READABLE_SCHEMA_VERSIONS = (1, 2, 3)
MAX_BASELINE_BYTES = 32 * 2**20  # far above any real baseline; caps what a corrupt file can cost
MAX_JSON_DEPTH = 16
LOCK_TIMEOUT_S = 60.0
_FIX = "restore it from version control, or delete it and record it again"


@dataclass(frozen=True)
class BaselineEntry:
    """One measurement's baseline: every run's samples, from separate model loads."""

    nodeid: str
    metric: str
    batch_size: int
    n_prompt: int
    n_gen: int
    threads: int
    unit: str
    runs: tuple[tuple[float, ...], ...]
    # When and from which commit this entry was recorded: a partial refresh keeps older entries, whose stamp
    # is not the file's provenance.
    recorded_at: str | None = None
    git_commit: str | None = None

    @cached_property
    def run_medians(self) -> tuple[float, ...]:
        return tuple(median(run) for run in self.runs)

    @property
    def level(self) -> float:
        """The reference level: median over runs of each run's median."""
        return median(self.run_medians)

    @property
    def between_run_cv(self) -> float:
        """How much whole runs disagree (0 with a single run: unknown, not zero noise)."""
        return cv(self.run_medians)

    def to_json(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "metric": self.metric, "batch_size": self.batch_size,
                "n_prompt": self.n_prompt, "n_gen": self.n_gen, "threads": self.threads, "unit": self.unit,
                "runs": [{"samples": list(run)} for run in self.runs],
                "summary": {"level": self.level, "between_run_cv": self.between_run_cv,
                            "run_medians": list(self.run_medians)},
                "recorded_at": self.recorded_at, "git_commit": self.git_commit}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, stamp: Mapping[str, Any] | None = None) -> BaselineEntry:
        """``stamp``: the file's provenance, whose recording time an entry of a version-1 file takes."""
        stamp = stamp or {}
        return cls(nodeid=data["nodeid"], metric=data["metric"], batch_size=data["batch_size"],
                   n_prompt=data["n_prompt"], n_gen=data["n_gen"], threads=data["threads"], unit=data["unit"],
                   runs=tuple(tuple(float(v) for v in run["samples"]) for run in data["runs"]),
                   recorded_at=data.get("recorded_at", stamp.get("recorded_at")),
                   git_commit=data.get("git_commit", stamp.get("git_commit")))


def capacity_key(nodeid: str, *, by: str, n_prompt: int, n_gen: int, threads: int) -> str:
    """Identity of a capacity search across runs (what a capacity entry is keyed by), like ``Measurement.key``."""
    return f"{nodeid}::capacity_{by}::pp{n_prompt}::tg{n_gen}::t{threads}"


@dataclass(frozen=True)
class CapacityEntry:
    """One capacity search's baseline (``axion.capacity()``): every run's bracket, from separate model loads: the
    most load it met (users, or requests/s ``by="rate"``), and the least it did not (None: every level held)."""

    nodeid: str
    by: str
    n_prompt: int
    n_gen: int
    threads: int
    service_level: str       # the promises the search kept, as its summary names them
    attainment: float
    runs: tuple[tuple[float, float | None], ...]
    recorded_at: str | None = None
    git_commit: str | None = None

    @property
    def key(self) -> str:
        return capacity_key(self.nodeid, by=self.by, n_prompt=self.n_prompt, n_gen=self.n_gen, threads=self.threads)

    @property
    def floor(self) -> float:
        """The most load that every run met: what this deployment is known to serve."""
        return min(low for low, _ in self.runs)

    def runs_text(self) -> str:
        """``8/9, 9/10, 9/+``: each run's most met / least not met (``+``: every level met)."""
        return ", ".join(f"{low:g}/{'+' if high is None else f'{high:g}'}" for low, high in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "by": self.by, "n_prompt": self.n_prompt, "n_gen": self.n_gen,
                "threads": self.threads, "service_level": self.service_level, "attainment": self.attainment,
                "runs": [{"most_passing": low, "fewest_failing": high} for low, high in self.runs],
                "summary": {"floor": self.floor}, "recorded_at": self.recorded_at, "git_commit": self.git_commit}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CapacityEntry:
        return cls(nodeid=data["nodeid"], by=data["by"], n_prompt=data["n_prompt"], n_gen=data["n_gen"],
                   threads=data["threads"], service_level=data["service_level"],
                   attainment=float(data["attainment"]),
                   runs=tuple((float(run["most_passing"]),
                               None if run["fewest_failing"] is None else float(run["fewest_failing"]))
                              for run in data["runs"]),
                   recorded_at=data.get("recorded_at"), git_commit=data.get("git_commit"))


@dataclass(frozen=True)
class Baseline:
    """A whole baseline file: provenance plus entries keyed like ``Measurement.key``, and capacity searches keyed
    by :func:`capacity_key`."""

    hardware_id: str
    model_label: str
    provenance: dict[str, Any]
    entries: dict[str, BaselineEntry]
    capacities: dict[str, CapacityEntry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {"schema_version": BASELINE_SCHEMA_VERSION, "hardware_id": self.hardware_id,
                "model_label": self.model_label, "provenance": self.provenance,
                "entries": {key: entry.to_json() for key, entry in sorted(self.entries.items())}}
        if self.capacities:
            data["capacities"] = {key: entry.to_json() for key, entry in sorted(self.capacities.items())}
        return data


def baseline_path(root: Path, hardware_id: str, model_label: str) -> Path:
    """``<root>/<hardware-id>/<model-label>.json``; both parts are checked to be file-system safe."""
    validate_hardware_id(hardware_id, source="the hardware id")
    validate_hardware_id(model_label, source="the model label")
    return root / hardware_id / f"{model_label}.json"


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def read_baseline(path: Path) -> Baseline:
    """Read and validate one baseline file; any problem is a one-line BaselineError naming it."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block, /dev/zero never ends
            raise BaselineError(f"baseline file {path} is not a regular file: {_FIX}")
        with path.open("rb") as handle:  # capped read, whatever size it reports
            raw = handle.read(MAX_BASELINE_BYTES + 1)
        if len(raw) > MAX_BASELINE_BYTES:
            raise BaselineError(f"baseline file {path} is over the {MAX_BASELINE_BYTES:,}-byte cap: it is not a "
                                f"baseline; {_FIX}")
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BaselineError(f"baseline file {path} is not UTF-8 text: {_FIX}") from None
    except OSError as err:
        raise BaselineError(f"cannot read baseline file {path}: {err.strerror or err}: check that it is a "
                            "readable file, or point --axion-baselines elsewhere") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BaselineError(f"baseline file {path} is nested too deeply to be a baseline: {_FIX}") from None
    except ValueError as err:
        raise BaselineError(f"baseline file {path} is not valid JSON ({err}): {_FIX}") from None
    return baseline_from_json(data, source=str(path))


def _versions_text() -> str:
    *earlier, last = map(str, READABLE_SCHEMA_VERSIONS)
    return f"{', '.join(earlier)} and {last}" if earlier else last


def baseline_from_json(data: Any, *, source: str) -> Baseline:
    """Validate parsed JSON against the shipped schema and build a :class:`Baseline`."""
    if _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise BaselineError(f"baseline file {source} is nested too deeply to be a baseline: {_FIX}")
    if isinstance(data, dict) and data.get("schema_version") not in (None, *READABLE_SCHEMA_VERSIONS):
        raise BaselineError(f"baseline file {source} has schema_version {data.get('schema_version')!r}, this "
                            f"pytest-axion reads {_versions_text()}: upgrade "
                            f"pytest-axion, or {_FIX}")
    errors = baseline_errors(data)
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "top level"
        raise BaselineError(f"baseline file {source} violates the baseline schema at {where}: "
                            f"{first.message[:200]}: {_FIX}")
    recorded_on = data["provenance"].get("hardware", {}).get("hardware_id", data["hardware_id"])
    try:
        for hardware_id in (data["hardware_id"], recorded_on):
            validate_hardware_id(str(hardware_id), source=f"baseline file {source}")
    except HardwareIdError as err:
        raise BaselineError(str(err)) from None
    return Baseline(hardware_id=data["hardware_id"], model_label=data["model_label"],
                    provenance=data["provenance"],
                    entries={key: BaselineEntry.from_json(entry, stamp=data["provenance"])
                             for key, entry in data["entries"].items()},
                    capacities={key: CapacityEntry.from_json(entry)
                                for key, entry in data.get("capacities", {}).items()})


def write_baseline(path: Path, baseline: Baseline, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
    """Validate, then replace the file atomically under a lock; on any failure the old file is whole."""
    update_baseline(path, lambda _current: baseline, lock_timeout_s=lock_timeout_s)


def update_baseline(path: Path, update: Callable[[Baseline | None], Baseline], *,
                    lock_timeout_s: float = LOCK_TIMEOUT_S) -> Baseline:
    """Read, change and write one baseline file as one step under its lock.

    Two refreshes at once each merge into what the other wrote, instead of the last one dropping the
    first one's entries. Leftover temp files of a writer that was killed (kill -9 leaves them) are
    removed here, where the lock guarantees that no live writer owns them.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(lock_path(path), timeout_s=lock_timeout_s):
            _remove_stale_temp_files(path)
            current = read_baseline(path) if path.exists() else None
            baseline = update(current)
            data = baseline.to_json()
            baseline_from_json(json.loads(json.dumps(data)), source=str(path))  # never write what we cannot read
            write_json_atomically(path, data)
            return baseline
    except LockTimeout:
        raise BaselineError(f"baseline file {path} is locked by another writer for over {lock_timeout_s:.0f} s: "
                            "wait for it to finish") from None
    except OSError as err:
        raise BaselineError(f"cannot write baseline file {path}: {err.strerror or err}: make the baselines "
                            "folder writable, or point --axion-baselines elsewhere") from None


def check_writable(path: Path) -> None:
    """Fail now, not after minutes of measuring, when the baseline file or its lock could not be written."""
    lock_path(path)   # the private lock folder is checked (owner, mode, writable) as it is found
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as err:
        raise BaselineError(f"cannot write baseline file {path}: {err.strerror or err}: make the baselines "
                            "folder writable, or point --axion-baselines elsewhere") from None


def check_folder_writable(root: Path) -> None:
    """At start-up, before any measuring: the baselines folder (or the folder it will be made in) can take a new
    file, and this user's private lock folder is safe (a refresh would otherwise fail only at its last step, after
    all its runs). Nothing is created."""
    private_dir()
    if root.exists() and not root.is_dir():
        raise BaselineError(f"baselines folder {root} is not a folder: point --axion-baselines at a folder")
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise BaselineError(f"baselines folder {root} is not writable ({err.strerror or err}): fix the permissions "
                            f"of {existing}, or point --axion-baselines at a writable folder") from None


def _remove_stale_temp_files(path: Path) -> None:
    for leftover in path.parent.glob(f"{TEMP_PREFIX.format(name=path.name)}*.tmp"):
        leftover.unlink(missing_ok=True)


def lock_path(path: Path) -> Path:
    """The lock guarding one baseline file, kept out of the baselines folder (and out of version control), in
    this user's private folder (:mod:`pytest_axion.store.private`).

    Named by the file's absolute path, so every process of this user agrees on it; flock locks are per
    machine anyway (not reliable on NFS), and the OS releases them when the holder dies.
    """
    digest = hashlib.sha256(str(path.resolve()).encode("utf-8")).hexdigest()[:24]
    return private_dir() / f"baseline-{digest}.lock"


def baseline_files(root: Path) -> list[Path]:
    """Every baseline file under ``root``, sorted (temp files of interrupted writes excluded)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("*/*.json") if not p.name.startswith("."))


def summarise_entries(baseline: Baseline) -> list[dict[str, Any]]:
    """One row per entry for ``pytest-axion show``: level, runs, between-run spread."""
    return [{"key": key, "level": entry.level, "unit": entry.unit, "runs": len(entry.runs),
             "between_run_cv": entry.between_run_cv,
             "samples": sum(len(run) for run in entry.runs)}
            for key, entry in sorted(baseline.entries.items())]
