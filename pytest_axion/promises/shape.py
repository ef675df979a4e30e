"""The publication's shape promises: prompt speed that stays steady, generation that scales with batch.

``steady_within=0.15``: every prompt speed a test measured, across its batch and prompt sizes, lies
within 15% of their median (spread = (fastest - slowest) / median); likewise total generation speed
across generation lengths, at each batch size. ``steady_within={"gen_tps": 0.1}`` checks only the
named speeds: a generation test's tiny prompts (8 tokens) run faster as the batch fills the cores,
which is real behaviour, not the steadiness the publication promised for prompt encoding.
``gen_scaling=1.5``: total generation speed at the largest measured batch is at least 1.5x batch 1,
and never lower at a larger batch than at a smaller one beyond the two cells' own noise.

Cells of one test are measured minutes apart at most, so they share most of the machine's drift;
still, a cell caught by a slow spell could fail a check alone, so a miss is confirmed by measuring
every cell of the group again, fresh (the one confirm procedure of :mod:`pytest_axion.promises.confirm`).
Every cell, not just the two extremes: a slow spell often slows several neighbouring cells, and a
cell kept from the slowed attempt would fail the next one. Pure.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from pytest_axion.errors import SettingsError
from pytest_axion.figures import figure
from pytest_axion.machine.sizing import TOKENS_PER_THREAD, levels_off_at, still_rising
from pytest_axion.promises.marker import MarkerKey, PromiseContext, SloSpec, positive, positive_number
from pytest_axion.promises.verdict import MET, MISSED, Judgement, Reading
from pytest_axion.records import Measurement
from pytest_axion.stats import median

STEADY = "steady_within"
SCALING = "gen_scaling"
NOISE_Z = 2.0               # a fall counts when it exceeds this many standard errors of the difference
MEDIAN_SE_FACTOR = 1.2533   # standard error of a median ~ sqrt(pi/2) * sd / sqrt(n)
# A fall must also exceed this share of the smaller batch's speed: a kernel path can dip a few percent where users
# do not cost throughput (SmolLM2-135M at 2 threads on a Zen 5 VM: 154 t/s at batch 1, 143 at 2, 199 at 4,
# interleaved; 189 -> 172 in a CI run).
FALL_TOLERANCE = 0.15
STEADY_METRICS = ("prompt_tps", "gen_tps")


@dataclass(frozen=True)
class SteadyLimits:
    """``steady_within``: one spread for both speeds, or a spread per named speed."""

    prompt_tps: float | None
    gen_tps: float | None
    named: bool = False     # the marker named its speeds: each must then be measured

    @classmethod
    def both(cls, limit: float) -> SteadyLimits:
        return cls(prompt_tps=limit, gen_tps=limit)


@dataclass(frozen=True)
class ShapeCheck:
    """One check of one group of cells, in one attempt."""

    key: str                    # STEADY or SCALING
    group: str                  # which cells, e.g. "prompt_tps", "gen_tps at batch 2", "gen_tps pp8+tg16"
    metric: str
    passed: bool
    observed: float             # the spread (steadiness) or the scaling ratio
    threshold: float
    message: str
    involved: tuple[str, ...]   # the group's measurement keys: what a confirming attempt measures again
    curve: tuple[tuple[str, float], ...] = ()   # every cell: label -> median tokens/s
    levels_off_at: int | None = None            # prompt_tps: fewest tokens per batch reaching 90% of the fastest
    contended: float | None = None              # most CPUs of other work while a contended cell ran, else None
    slowest: str = ""                           # steadiness: the label of the slowest cell

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "group": self.group, "metric": self.metric, "passed": self.passed,
                "observed": self.observed, "threshold": self.threshold, "message": self.message,
                "curve": [{"cell": label, "median": value} for label, value in self.curve],
                "levels_off_at_tokens": self.levels_off_at, "contended_other_cpus": self.contended}


def _label(m: Measurement, varying: Sequence[str]) -> str:
    parts = {"n_prompt": f"pp {m.n_prompt}", "n_gen": f"tg {m.n_gen}", "batch_size": f"batch {m.batch_size}"}
    return " ".join(parts[d] for d in varying) or m.shape


def _varying(cells: Sequence[Measurement]) -> list[str]:
    return [d for d in ("n_prompt", "n_gen", "batch_size") if len({getattr(m, d) for m in cells}) > 1]


def _steady(cells: list[Measurement], limit: float, group: str, metric: str) -> ShapeCheck:
    varying = _varying(cells)
    level = median([m.median for m in cells])
    slow = min(cells, key=lambda m: m.median)
    fast = max(cells, key=lambda m: m.median)
    spread = (fast.median - slow.median) / level
    passed = spread <= limit
    comparison = "<=" if passed else ">"
    # Prompt speed depends on the tokens of one call (prompt x users): where it climbs with them, the
    # machine was not saturated by the small calls; say so, with where it levels off.
    points = [(m.n_prompt * m.batch_size, m.median) for m in cells] if metric == "prompt_tps" else []
    knee = levels_off_at(points)
    if not passed and still_rising(points):
        first, last = min(points), max(points, key=lambda point: point[1])
        message = (f"{metric} not steady: prompt speed still rising with tokens per batch: {figure(first[1])} t/s at "
                   f"{first[0]} -> {figure(last[1])} t/s at {last[0]}; below about {knee} tokens this machine is not "
                   f"saturated (spread {spread:.0%} {comparison} {limit:.0%}; size prompts x users to at least "
                   f"{TOKENS_PER_THREAD} tokens per thread)")
    else:
        message = (f"{metric} {'steady' if passed else 'not steady'}: {figure(slow.median)} t/s at "
                   f"{_label(slow, varying)} vs {figure(fast.median)} t/s at {_label(fast, varying)} "
                   f"(spread {spread:.0%} {comparison} {limit:.0%})")
    return ShapeCheck(key=STEADY, group=group, metric=metric, passed=passed, observed=spread, threshold=limit,
                      message=message, involved=tuple(m.key for m in cells),
                      curve=tuple((_label(m, varying), m.median) for m in cells), levels_off_at=knee,
                      contended=_contention(cells), slowest=_label(slow, varying))


def steadiness_checks(measurements: Sequence[Measurement], limits: SteadyLimits) -> list[ShapeCheck]:
    """Prompt speed across all its cells; generation speed across lengths at each batch size."""
    prompt_checks, gen_checks = [], []
    prompt = [m for m in measurements if m.metric == "prompt_tps"]
    if limits.prompt_tps is not None and len(prompt) >= 2:
        prompt_checks.append(_steady(prompt, limits.prompt_tps, "prompt_tps", "prompt_tps"))
    by_batch: dict[int, list[Measurement]] = {}
    for m in measurements:
        if m.metric == "gen_tps":
            by_batch.setdefault(m.batch_size, []).append(m)
    for batch, cells in sorted(by_batch.items()):
        if limits.gen_tps is not None and len({m.n_gen for m in cells}) >= 2:
            gen_checks.append(_steady(cells, limits.gen_tps, f"gen_tps at batch {batch}", "gen_tps"))
    needs_prompt = "at least two prompt_tps cells (batch or prompt sizes)"
    needs_gen = "gen_tps at two generation lengths for one batch size"
    if limits.named:
        if limits.prompt_tps is not None and not prompt_checks:
            raise SettingsError(f"{STEADY} for prompt_tps needs {needs_prompt}; this test measured fewer")
        if limits.gen_tps is not None and not gen_checks:
            raise SettingsError(f"{STEADY} for gen_tps needs {needs_gen}; this test measured none")
    elif not prompt_checks and not gen_checks:
        raise SettingsError(f"{STEADY} needs {needs_prompt}, or {needs_gen}; this test measured neither")
    return prompt_checks + gen_checks


def _contention(cells: Sequence[Measurement]) -> float | None:
    """The most other work seen while a contended cell ran; None when no cell was contended."""
    seen = [m.other_cpus for m in cells if m.contended and m.other_cpus is not None]
    return max(seen) if seen else None


def _median_se(m: Measurement) -> float:
    spread = m.summary.cv * m.median
    return MEDIAN_SE_FACTOR * spread / math.sqrt(m.summary.n) if m.summary.n > 1 else 0.0


def scaling_checks(measurements: Sequence[Measurement], factor: float) -> list[ShapeCheck]:
    """Per workload (prompt and generation length): largest batch vs batch 1, and no significant fall."""
    groups: dict[tuple[int, int], dict[int, Measurement]] = {}
    for m in measurements:
        if m.metric == "gen_tps":
            groups.setdefault((m.n_prompt, m.n_gen), {})[m.batch_size] = m
    checks = []
    for (n_prompt, n_gen), by_batch in sorted(groups.items()):
        if 1 not in by_batch or len(by_batch) < 2:
            continue
        sizes = sorted(by_batch)
        curve = tuple((f"batch {b}", by_batch[b].median) for b in sizes)
        group = f"gen_tps pp{n_prompt}+tg{n_gen}"
        first, last = by_batch[1], by_batch[sizes[-1]]
        ratio = last.median / first.median
        falls = []
        for smaller, larger in pairwise(sizes):
            a, b = by_batch[smaller], by_batch[larger]
            noise = NOISE_Z * math.hypot(_median_se(a), _median_se(b))
            if a.median - b.median > max(noise, FALL_TOLERANCE * a.median):
                falls.append((a, b, noise))
        passed = ratio >= factor and not falls
        curve_text = ", ".join(f"{figure(v)}" for _, v in curve)
        if ratio < factor:
            message = (f"gen_tps does not scale: {figure(last.median)} t/s at batch {sizes[-1]} is {ratio:.2f}x "
                       f"batch 1 ({figure(first.median)} t/s) < {factor:g}x (batch {', '.join(map(str, sizes))}: "
                       f"{curve_text} t/s)")
        elif falls:
            a, b, noise = falls[0]
            message = (f"gen_tps falls with batch: {figure(a.median)} t/s at batch {a.batch_size} -> "
                       f"{figure(b.median)} t/s at batch {b.batch_size}, beyond its noise ({figure(noise)} t/s) and "
                       f"{FALL_TOLERANCE:.0%}")
        else:
            message = (f"gen_tps scales: {ratio:.2f}x >= {factor:g}x from batch 1 to {sizes[-1]} "
                       f"({curve_text} t/s)")
        checks.append(ShapeCheck(key=SCALING, group=group, metric="gen_tps", passed=passed, observed=ratio,
                                 threshold=factor, message=message, curve=curve,
                                 involved=tuple(by_batch[b].key for b in sizes),
                                 contended=_contention(list(by_batch.values()))))
    if not checks:
        raise SettingsError(f"{SCALING} needs gen_tps at batch 1 and at least one larger batch of the same "
                            "workload; measure with axion.batched(..., batch_sizes=[1, ...])")
    return checks


def evaluate_shape(measurements: Sequence[Measurement], *, steady_within: SteadyLimits | None,
                   gen_scaling: float | None) -> list[ShapeCheck]:
    checks = []
    if steady_within is not None:
        checks += steadiness_checks(measurements, steady_within)
    if gen_scaling is not None:
        checks += scaling_checks(measurements, gen_scaling)
    return checks


def _steady_limits(raw: Any, where: str) -> SteadyLimits:
    """A number for both speeds, or ``{"prompt_tps": x, "gen_tps": y}`` naming the speeds to check."""
    if not isinstance(raw, Mapping):
        return SteadyLimits.both(positive_number(raw, STEADY, where, also="or a dict such as {'gen_tps': 0.15}"))
    unknown = sorted(str(k) for k in raw if k not in STEADY_METRICS)
    if unknown or not raw:
        got = f"got {', '.join(unknown)}" if unknown else "got an empty dict"
        raise SettingsError(f"{where}: {STEADY}'s keys must be {' or '.join(STEADY_METRICS)}, {got}")
    limits = {name: positive_number(value, f"{STEADY}[{name!r}]", where) for name, value in raw.items()}
    return SteadyLimits(prompt_tps=limits.get("prompt_tps"), gen_tps=limits.get("gen_tps"), named=True)


KIND_ORDER = 30   # where its keys appear in the marker's help
MARKER_KEYS = (
    MarkerKey(STEADY, "steady_within=0.15",
              "prompt speed across the test's batch and prompt sizes, and generation speed across generation "
              "lengths at each batch size, stay within this spread of their median; {'gen_tps': 0.15} checks "
              "only the named speeds", _steady_limits),
    MarkerKey(SCALING, "gen_scaling=1.5",
              "total generation speed at the largest batch is at least this many times batch 1, and never falls "
              "with batch size by more than its noise and 15%", positive(SCALING)),
)


def _reading(check: ShapeCheck) -> Reading:
    if check.key == SCALING:
        shown, shortfall = f"{check.observed:.2f}x", (check.threshold - check.observed) / check.threshold
    else:
        shown, shortfall = f"spread {check.observed:.0%}", (check.observed - check.threshold) / check.threshold
    return Reading(status=MET if check.passed else MISSED, figure=shown, message=check.message, shortfall=shortfall,
                   other_cpus=check.contended, detail=check.to_json())


@dataclass
class ShapePromise:
    """The shape promises of one test: each checked group of cells is one promise.

    It keeps the slowest cell of each steadiness miss, attempt by attempt: a build's slow cell is slow in every
    attempt, so misses whose slowest cell changes from attempt to attempt are the machine's noise, which the
    attempts cannot settle (``Reading.unsettled``: inconclusive, never a fail).
    """

    steady_within: SteadyLimits | None
    gen_scaling: float | None
    _missed: dict[str, list[ShapeCheck]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def judge(self, measurements: Sequence[Measurement]) -> list[Judgement]:
        checks = evaluate_shape(measurements, steady_within=self.steady_within, gen_scaling=self.gen_scaling)
        judgements = []
        for check in checks:
            name = f"{check.key}.{check.group.replace(' ', '_')}"
            reading = _reading(check)
            if check.key == STEADY and not check.passed:
                missed = self._missed.setdefault(name, [])
                missed.append(check)
                why = _noise_only(missed)
                if why:
                    reading = dataclasses.replace(reading, unsettled=why)
            judgements.append(Judgement(name=name, kind="steady" if check.key == STEADY else "scaling",
                                        label=check.group, involved=check.involved, reading=reading))
        return judgements


def _noise_only(missed: Sequence[ShapeCheck]) -> str | None:
    """Why steadiness misses in several attempts are the machine's noise, or None: another cell was slowest each
    time, and each cell's median over the attempts is steady within the limit (a slow cell of the build would be
    slow every time, and stay slow pooled)."""
    slowest = [check.slowest for check in missed]
    if len(set(slowest)) < 2:
        return None
    by_cell: dict[str, list[float]] = {}
    for check in missed:
        for label, value in check.curve:
            by_cell.setdefault(label, []).append(value)
    pooled = [median(values) for values in by_cell.values()]
    spread = (max(pooled) - min(pooled)) / median(pooled)
    if spread > missed[-1].threshold:
        return None
    return (f"the slowest cell changed from attempt to attempt ({', then '.join(slowest)}), and each cell's median "
            f"over the attempts spreads {spread:.0%}, within {missed[-1].threshold:.0%}")


def promises(spec: SloSpec | None, context: PromiseContext) -> list[Any]:
    if spec is None or (spec.steady_within is None and spec.gen_scaling is None):
        return []
    return [ShapePromise(spec.steady_within, spec.gen_scaling)]
