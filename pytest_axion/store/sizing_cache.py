"""Where this machine's prompt speed levels off for a model, and how fast it is, cached per hardware id, model,
build and threads.

The sweep (:mod:`pytest_axion.machine.sizing`) takes seconds on a small model and about a minute on a proxy
of a 70B; a week-old figure of the same machine, model and threads sizes workloads well enough. A sweep
measured while other processes were busy is used for that run only, never stored, as the machine's limits. The
speed (which caps a slow model's workloads, :func:`pytest_axion.machine.sizing.fill_within_budget`) is kept alike,
so that runs of one machine and model measure the same workloads and compare with its baselines.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_axion.files import default_cache_dir, write_json_atomically
from pytest_axion.machine.sizing import fill_from_sweep

CACHE_MAX_AGE_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Sweep:
    """(tokens per call, median prompt tokens/s) per point, and other processes' CPUs while it ran."""

    points: tuple[tuple[int, float], ...]
    other_cpus: float | None


@dataclass(frozen=True)
class Sizing:
    fill_tokens: int
    points: tuple[tuple[int, float], ...]
    source: str   # how the figure was found, for the header
    tokens_per_s: float | None = None   # the prompt speed that a slow model's workloads follow (None: not known)


def sizing_for(hardware_id: str, model_sha256: str, threads: int, *, build: str, busy_cpus: float,
               measure: Callable[[], Sweep], cache_dir: Path | None = None, now: float | None = None) -> Sizing:
    """The prompt sizing of this machine, model, llama.cpp build and thread count: from the cache, or swept now
    (and stored unless other processes used more than ``busy_cpus`` CPUs meanwhile)."""
    path = (cache_dir or default_cache_dir() / "sizing") / f"{_key(hardware_id, model_sha256, build, threads)}.json"
    now = time.time() if now is None else now
    try:
        entry, when = _fresh_entry(path, now)
        points = _points(entry["points"])
        return Sizing(fill_from_sweep(points, threads=threads), points, f"swept {when}, cached in {path}")
    except (OSError, ValueError, KeyError, TypeError):
        pass   # no entry, an old one or a damaged one: sweep again and rewrite it
    sweep = measure()
    fill = fill_from_sweep(sweep.points, threads=threads)
    if sweep.other_cpus is not None and sweep.other_cpus > busy_cpus:
        return Sizing(fill, sweep.points, f"swept in this run while other processes kept {sweep.other_cpus:.1f} "
                                          "CPU(s) busy: not cached")
    _store(path, {"measured_at": now, "hardware_id": hardware_id, "model_sha256": model_sha256, "threads": threads,
                  "points": [list(p) for p in sweep.points]})
    return Sizing(fill, sweep.points, "swept in this run")


def _points(raw: Sequence[Sequence[float]]) -> tuple[tuple[int, float], ...]:
    points = tuple((int(tokens), float(speed)) for tokens, speed in raw)
    if not points or any(tokens <= 0 or speed <= 0 for tokens, speed in points):
        raise ValueError("no usable points")
    return points


def prompt_speed_for(hardware_id: str, model_sha256: str, threads: int, *, build: str, measured_tps: float,
                     other_cpus: float | None, busy_cpus: float, cache_dir: Path | None = None,
                     now: float | None = None) -> tuple[float, str]:
    """This machine's prompt speed for this model, build and thread count, as a session's warm-up measured it:
    the cached figure if there is one (so that every run sizes its workloads alike, a slow spell's or a busy
    one's included), else ``measured_tps``, stored unless other processes used more than ``busy_cpus`` CPUs while
    it was measured. Returns the speed and where it came from."""
    path = ((cache_dir or default_cache_dir() / "sizing")
            / f"{_key(hardware_id, model_sha256, build, threads)}-speed.json")
    now = time.time() if now is None else now
    try:
        entry, when = _fresh_entry(path, now)
        speed = float(entry["tokens_per_s"])
        if speed > 0:
            return speed, f"warm-up of {when}, cached in {path}"
    except (OSError, ValueError, KeyError, TypeError):
        pass   # no entry, an old one or a damaged one: this run's warm-up decides
    if other_cpus is not None and other_cpus > busy_cpus:
        return measured_tps, f"this run's warm-up, while other processes kept {other_cpus:.1f} CPU(s) busy: not cached"
    _store(path, {"measured_at": now, "hardware_id": hardware_id, "model_sha256": model_sha256, "threads": threads,
                  "tokens_per_s": measured_tps})
    return measured_tps, "this run's warm-up"


def _fresh_entry(path: Path, now: float) -> tuple[dict[str, Any], str]:
    """A cache entry and when it was measured; ValueError when it is a week old or from ahead of now (a clock
    that moved back), OSError or ValueError when it is missing or damaged."""
    entry = json.loads(path.read_text())
    measured_at = float(entry["measured_at"])
    if not 0 <= now - measured_at < CACHE_MAX_AGE_S:
        raise ValueError(f"{path} was measured outside the last week")
    return entry, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(measured_at))


def _store(path: Path, entry: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(path, entry)
    except OSError:
        pass   # a read-only home: the figure is still good for this run


def _key(hardware_id: str, model_sha256: str, build: str, threads: int) -> str:
    build_tag = "".join(c if c.isalnum() or c in "._-" else "_" for c in build)
    return f"{hardware_id}-{model_sha256[:16]}-{build_tag}-t{threads}"
