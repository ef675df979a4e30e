"""Efficiency against the machine's own limits: how much of its bandwidth generation uses, how much of
its compute prompt encoding uses.

Figures (:func:`efficiency_figures`), one per measured cell:

- generation (``gen_tps``): effective bandwidth = steps per second x bytes per step (the weights once,
  each user's KV cache at the cell's mean context length, see :mod:`pytest_axion.machine.costs`),
  as GB/s and as a fraction of the machine's read bandwidth over a working set of the model's size;
- prompt encoding (``prompt_tps``): effective compute = prompts per second x operations per prompt,
  as GFLOP/s and as a fraction of the float32 matmul reference.

Promise: ``efficiency={"gen_bandwidth": 0.5, "prompt_compute": 0.2}``: at least these fractions at the
median, in every measured cell that this roof bounds (generation at batch 1, and at larger batches
below the ridge intensity where compute / bandwidth meet; prompts above it; the other cells are shown
as ``info``); a miss is confirmed like every other kind's. It serves the gate on a
machine that has no baseline yet: a build without its SIMD kernels uses the machine poorly whatever
the machine's speed. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pytest_axion.errors import SettingsError
from pytest_axion.figures import figure
from pytest_axion.machine.costs import ModelCosts
from pytest_axion.machine.limits import MachineLimits
from pytest_axion.promises.marker import MarkerKey, PromiseContext, SloSpec, positive_number
from pytest_axion.promises.verdict import INFO, MET, MISSED, Judgement, Reading
from pytest_axion.records import Measurement

GEN_BANDWIDTH, PROMPT_COMPUTE = "gen_bandwidth", "prompt_compute"
EFFICIENCY_METRIC = {GEN_BANDWIDTH: "gen_tps", PROMPT_COMPUTE: "prompt_tps"}


@dataclass(frozen=True)
class Roofs:
    """What efficiency is read against: the model's costs, the machine's limits, llama.cpp's micro-batch."""

    costs: ModelCosts
    limits: MachineLimits
    n_ubatch: int = 512


@dataclass(frozen=True)
class EfficiencyFigure:
    """One cell's use of the machine: achieved and roof in one unit (GB/s or GFLOP/s), and the roofline point."""

    nodeid: str
    kind: str              # GEN_BANDWIDTH or PROMPT_COMPUTE
    batch_size: int
    n_prompt: int
    n_gen: int
    achieved: float        # GB/s (generation) or GFLOP/s (prompt), at the median speed
    roof: float            # the machine's read GB/s or float32 GFLOP/s
    unit: str
    intensity: float       # operations per byte moved (the roofline's x)
    gflops: float          # operations per second achieved, GFLOP/s (the roofline's y)
    basis: str             # the arithmetic, in words

    @property
    def fraction(self) -> float:
        return self.achieved / self.roof

    @property
    def cell(self) -> str:
        if self.kind == PROMPT_COMPUTE:
            return f"pp{self.n_prompt}" + (f" x{self.batch_size}" if self.batch_size > 1 else "")
        return (f"tg{self.n_gen}" if self.n_prompt == 0 else f"pp{self.n_prompt}+tg{self.n_gen}") + \
            f" x{self.batch_size}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "fraction": self.fraction}


def figure_of(m: Measurement, roofs: Roofs, value: float | None = None) -> EfficiencyFigure | None:
    """The efficiency of one measurement (at ``value`` tokens/s, default its median); None for other metrics."""
    costs, limits = roofs.costs, roofs.limits
    speed = m.median if value is None else value
    b = m.batch_size
    if m.metric == "gen_tps":
        context = m.n_prompt + m.n_gen / 2          # mean cached positions per user over the generation
        steps_per_s = speed / b
        step_bytes, step_ops = costs.gen_step_bytes(b, context), costs.gen_step_ops(b, context)
        return EfficiencyFigure(
            nodeid=m.nodeid, kind=GEN_BANDWIDTH, batch_size=b, n_prompt=m.n_prompt, n_gen=m.n_gen,
            achieved=steps_per_s * step_bytes / 1e9, roof=limits.read_gbs, unit="GB/s",
            intensity=step_ops / step_bytes, gflops=steps_per_s * step_ops / 1e9,
            basis=f"{steps_per_s:.1f} steps/s x {step_bytes / 1e6:.1f} MB per step (weights "
                  f"{costs.step_weight_bytes / 1e6:.1f} MB + KV {b} x {context:.0f} positions)")
    if m.metric == "prompt_tps":
        prompts_per_s = speed / (b * m.n_prompt)
        ops = b * costs.prompt_ops(m.n_prompt)
        moved = costs.prompt_bytes(m.n_prompt, b, roofs.n_ubatch)
        return EfficiencyFigure(
            nodeid=m.nodeid, kind=PROMPT_COMPUTE, batch_size=b, n_prompt=m.n_prompt, n_gen=m.n_gen,
            achieved=prompts_per_s * ops / 1e9, roof=limits.compute_gflops, unit="GFLOP/s",
            intensity=ops / moved, gflops=prompts_per_s * ops / 1e9,
            basis=f"{speed:.1f} tokens/s x {ops / (b * m.n_prompt) / 1e6:.0f} MFLOP per token")
    return None


def efficiency_figures(measurements: Sequence[Measurement], roofs: Roofs) -> list[EfficiencyFigure]:
    return [f for f in (figure_of(m, roofs) for m in measurements) if f is not None]


def _fractions(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise SettingsError(f"{where}: efficiency must be a dict such as {{'gen_bandwidth': 0.5}}, got {value!r}")
    unknown = sorted(set(value) - set(EFFICIENCY_METRIC))
    if unknown:
        raise SettingsError(f"{where}: unknown efficiency key(s) {', '.join(map(str, unknown))}; known: "
                            f"{', '.join(EFFICIENCY_METRIC)}")
    fractions = {key: positive_number(raw, f"efficiency[{key!r}]", where) for key, raw in value.items()}
    too_large = [key for key, fraction in fractions.items() if fraction > 1]
    if too_large:
        raise SettingsError(f"{where}: efficiency[{too_large[0]!r}] is a fraction of the machine's limit, at most 1 "
                            f"(0.5 means half), got {fractions[too_large[0]]!r}")
    return fractions


MARKER_KEYS = (
    MarkerKey("efficiency", "efficiency={'gen_bandwidth': 0.5}",
              "minimum fraction of the machine's own limits: gen_bandwidth (generation's effective bandwidth / "
              "measured read bandwidth), prompt_compute (prompt encoding's FLOP/s / float32 matmul FLOP/s)",
              _fractions),
)


@dataclass(frozen=True)
class EfficiencyPromise:
    """At least ``fraction`` of the roof for ``key``'s metric, at the median, in every measured cell."""

    key: str
    fraction: float
    roofs: Callable[[], Roofs]
    nodeid: str

    def judge(self, measurements: Sequence[Measurement]) -> list[Judgement]:
        metric = EFFICIENCY_METRIC[self.key]
        relevant = [m for m in measurements if m.metric == metric]
        if not relevant:
            how = "axion.generate(...) or axion.batched(...)" if metric == "gen_tps" else "axion.prompt(...)"
            raise SettingsError(f"{self.nodeid}: axion_slo(efficiency={{'{self.key}': ...}}) but the test measured "
                                f"no {metric}: call {how}")
        roofs = self.roofs()
        return [self._judgement(m, roofs) for m in relevant]

    def _judgement(self, m: Measurement, roofs: Roofs) -> Judgement:
        cell = figure_of(m, roofs)
        assert cell is not None
        met = cell.fraction >= self.fraction
        roof = "read bandwidth" if self.key == GEN_BANDWIDTH else "float32 matmul"
        message = (f"efficiency {self.key} at {cell.cell}: {cell.fraction:.0%} of the machine's {roof} "
                   f"({figure(cell.achieved)} of {figure(cell.roof)} {cell.unit}: {cell.basis}) "
                   f"{'>=' if met else '<'} {self.fraction:.0%}")
        # A cell is held to the roof that bounds it: past the ridge a generation step is compute-bound (large
        # batches), before it a prompt is bandwidth-bound (a few tokens); such cells are shown, not judged.
        # One user's step is bandwidth-bound on every CPU (a multiply-add per weight byte or two); the float32
        # reference can sit below llama.cpp's integer kernels, so the ridge decides only from batch 2 on.
        ridge = roofs.limits.compute_gflops / roofs.limits.read_gbs
        if self.key == GEN_BANDWIDTH:
            other_roof = m.batch_size > 1 and cell.intensity > ridge
        else:
            other_roof = cell.intensity < ridge
        if other_roof:
            message += (f"; not judged: {cell.intensity:.1f} FLOP/byte is on the "
                        f"{'compute' if self.key == GEN_BANDWIDTH else 'bandwidth'} side of the ridge "
                        f"({ridge:.1f} FLOP/byte), so the other roof bounds this cell")
        reading = Reading(status=MET if met else MISSED, figure=f"{cell.fraction:.0%}", message=message,
                          shortfall=(self.fraction - cell.fraction) / self.fraction,
                          other_cpus=m.other_cpus if m.contended else None,
                          detail={"metric": m.metric, "efficiency": self.key, "observed": cell.fraction,
                                  "threshold": self.fraction, "achieved": cell.achieved, "roof": cell.roof,
                                  "unit": cell.unit, "batch_size": m.batch_size, "n_prompt": m.n_prompt,
                                  "n_gen": m.n_gen, "promise": f">= {self.fraction:.0%} of {roof}",
                                  "intensity": cell.intensity, "ridge": ridge, "enforced": not other_roof})
        return Judgement(name=f"{self.key}.b{m.batch_size}.pp{m.n_prompt}.tg{m.n_gen}", kind="efficiency",
                         label=f"{self.key} at {cell.cell}", involved=(m.key,), reading=reading,
                         settled=INFO if other_roof else None)


def promises(spec: SloSpec | None, context: PromiseContext) -> list[Any]:
    if spec is None or not spec.declares("efficiency"):
        return []
    if context.roofs is None:
        raise SettingsError(f"{context.nodeid}: axion_slo(efficiency=...) needs the machine's limits, which "
                            "--axion-efficiency off turned off: use cached or fresh to check efficiency")
    return [EfficiencyPromise(key, fraction, context.roofs, context.nodeid)
            for key, fraction in spec.get("efficiency").items()]
