"""The machine's limits, cached per hardware id, thread count and working set, with when they were measured.

Measuring them takes a few seconds (:mod:`pytest_axion.machine.limits`); a week-old figure of the same
machine is good enough to read efficiency against, and a figure measured while other processes were busy is
used for that run only, never stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from pytest_axion.files import default_cache_dir, write_json_atomically
from pytest_axion.machine.limits import MIB, MachineLimits, measure_in_subprocess

CACHE_MAX_AGE_S = 7 * 24 * 3600


def limits_for(hardware_id: str, threads: int, model_bytes: int, *, mode: str = "cached",
               cache_dir: Path | None = None, now: float | None = None,
               measure_now: Callable[[int, int], MachineLimits] = measure_in_subprocess) -> tuple[MachineLimits, str]:
    """The limits and where they come from: measured now (``fresh``, or no cache entry younger than a week)
    or read from the cache of this hardware id, thread count and working set (``cached``)."""
    folder = cache_dir or default_cache_dir() / "limits"
    path = folder / f"{hardware_id}-t{threads}-{max(model_bytes // MIB, 1)}mib.json"
    now = time.time() if now is None else now
    if mode == "cached":
        try:
            entry = json.loads(path.read_text())
            if now - float(entry["measured_at"]) < CACHE_MAX_AGE_S:
                when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(entry["measured_at"])))
                return MachineLimits.from_json(entry["limits"]), f"cached, measured {when} ({path})"
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no entry, an old one or a damaged one: measure again and rewrite it
    limits = measure_now(threads, model_bytes)
    if limits.contended:
        # Figures from a busy moment would stand for a week: use them for this run only.
        return limits, (f"measured in this run while other processes kept {limits.other_cpus:.1f} CPU(s) busy: low, "
                        "not cached")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomically(path, {"measured_at": now, "hardware_id": hardware_id, "limits": limits.to_json()})
    except OSError:
        pass  # a read-only home: the figures are still good for this run
    return limits, "measured in this run"
