"""Absolute promises: a speed at least so high, a latency at most so long, at every measured size.

``prompt_tps=50``, ``gen_tps=20``, ``per_user_tps='reading'`` (or a number) are lower bounds on the
median; ``ttft_ms=2000`` an upper bound at ``ttft_percentile``. ``max_batch=4`` enforces
``per_user_tps`` up to batch 4 and shows larger sizes without failing them. Each measurement is one
promise, read by :class:`Bound` (which other kinds reuse, see :mod:`pytest_axion.promises.latency`);
a miss is confirmed like every other kind's. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_axion.errors import SettingsError
from pytest_axion.figures import figure
from pytest_axion.promises.marker import MarkerKey, PromiseContext, SloSpec, one_of, positive, positive_number
from pytest_axion.promises.verdict import INFO, MET, MISSED, Judgement, Reading
from pytest_axion.records import Measurement
from pytest_axion.stats import quantile

READING = "reading"
TTFT_PERCENTILES = (50, 90, 99)


def _per_user(value: Any, where: str) -> float | str:
    if value == READING:
        return READING
    return positive_number(value, "per_user_tps", where, also="or 'reading'")


def _max_batch(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SettingsError(f"{where}: max_batch must be a whole number of at least 1, got {value!r}")
    return value


KIND_ORDER = 10   # where its keys appear in the marker's help
MARKER_KEYS = (
    MarkerKey("prompt_tps", "prompt_tps=50.0", "minimum prompt-processing speed, tokens/s, at every measured size",
              positive("prompt_tps")),
    MarkerKey("gen_tps", "gen_tps=20.0", "minimum total generation speed over the batch, tokens/s",
              positive("gen_tps")),
    MarkerKey("per_user_tps", "per_user_tps='reading'",
              "minimum generation speed each user sees, tokens/s, or 'reading' for human reading speed", _per_user),
    MarkerKey("ttft_ms", "ttft_ms=2000", "maximum time to first token, ms, at ttft_percentile", positive("ttft_ms")),
    MarkerKey("ttft_percentile", "ttft_percentile=50",
              "percentile of the repetitions that ttft_ms checks: 50, 90 or 99",
              one_of("ttft_percentile", TTFT_PERCENTILES), default=50, promise=False),
    MarkerKey("max_batch", "max_batch=4",
              "per_user_tps must hold at every measured batch size up to this (default: every measured size)",
              _max_batch, promise=False),
)

HOW_TO_MEASURE = {
    "prompt_tps": "call axion.prompt(...) or axion.batched(...)",
    "gen_tps": "call axion.generate(...) or axion.batched(...)",
    "per_user_tps": "call axion.batched(...)",
    "ttft_ms": "call axion.batched(...)",
    "itl_ms": "call axion.batched(...)",
}


def _unit(m: Measurement) -> str:
    return "t/s" if m.unit == "tokens/s" else m.unit


@dataclass(frozen=True)
class Bound:
    """``metric`` at least (or, ``upper``, at most) ``limit`` at ``percentile`` (None: the median) in every
    measurement of it; batch sizes above ``enforced_up_to`` are shown, not enforced."""

    key: str
    metric: str
    limit: float
    upper: bool = False
    percentile: int | None = None
    label: str = ""                      # how the limit was obtained, e.g. the reading-speed conversion
    enforced_up_to: int | None = None
    nodeid: str = ""

    @property
    def statistic(self) -> str:
        return "median" if self.percentile is None else f"p{self.percentile}"

    def observed(self, m: Measurement) -> float:
        return m.median if self.percentile is None else quantile(m.samples, self.percentile / 100)

    def judge(self, measurements: Sequence[Measurement]) -> list[Judgement]:
        relevant = [m for m in measurements if m.metric == self.metric]
        if not relevant:
            raise SettingsError(f"{self.nodeid}: axion_slo({self.key}=...) but the test measured no {self.metric}: "
                                f"{HOW_TO_MEASURE.get(self.metric, 'measure it')}")
        return [self._judgement(m) for m in relevant]

    def _judgement(self, m: Measurement) -> Judgement:
        observed = self.observed(m)
        met = observed <= self.limit if self.upper else observed >= self.limit
        bound = "<=" if self.upper else ">="
        shown = bound if met else (">" if self.upper else "<")
        unit = _unit(m)
        detail = ", ".join(part for part in (self.label, f"{self.statistic} of {len(m.samples)}") if part)
        workload = m.shape.split(" x")[0]
        message = (f"{self.key} at batch {m.batch_size} ({workload}): {figure(observed)} {unit} {shown} "
                   f"{figure(self.limit)} {unit} ({detail})")
        shortfall = (observed - self.limit) / self.limit if self.upper else (self.limit - observed) / self.limit
        enforced = self.enforced_up_to is None or m.batch_size <= self.enforced_up_to
        promise = f"{bound} {figure(self.limit)} {unit}" + (" (reading)" if self.label.startswith("reading") else "")
        if self.percentile is not None:
            promise += f" {self.statistic}"
        reading = Reading(status=MET if met else MISSED, figure=f"{figure(observed)} {unit}", message=message,
                          shortfall=shortfall, other_cpus=m.other_cpus if m.contended else None,
                          detail={"metric": self.metric, "statistic": self.statistic, "observed": observed,
                                  "threshold": self.limit, "unit": m.unit, "upper": self.upper,
                                  "batch_size": m.batch_size, "n_prompt": m.n_prompt, "n_gen": m.n_gen,
                                  "threshold_label": self.label, "promise": promise, "enforced": enforced})
        return Judgement(name=f"{self.key}.b{m.batch_size}.pp{m.n_prompt}.tg{m.n_gen}", kind="threshold",
                         label=f"{self.key} at batch {m.batch_size}", involved=(m.key,), reading=reading,
                         settled=None if enforced else INFO)


@dataclass(frozen=True)
class MaxBatchCheck:
    """``max_batch`` beyond the batch sizes measured is a mistake in the test, not a pass."""

    max_batch: int
    nodeid: str

    def judge(self, measurements: Sequence[Measurement]) -> list[Judgement]:
        measured = max((m.batch_size for m in measurements if m.metric == "per_user_tps"), default=0)
        if self.max_batch > measured:
            raise SettingsError(f"{self.nodeid}: max_batch={self.max_batch} but the test measured batch sizes up to "
                                f"{measured}: measure batch sizes up to {self.max_batch} or lower max_batch")
        return []


def promises(spec: SloSpec | None, context: PromiseContext) -> list[Any]:
    if spec is None:
        return []
    made: list[Any] = []
    for key in ("prompt_tps", "gen_tps"):
        if spec.declares(key):
            made.append(Bound(key, key, spec.get(key), nodeid=context.nodeid))
    if spec.declares("per_user_tps"):
        limit, label = per_user_limit(spec.per_user_tps, context)
        made.append(Bound("per_user_tps", "per_user_tps", limit, label=label, enforced_up_to=spec.max_batch,
                          nodeid=context.nodeid))
        if spec.max_batch is not None:
            made.append(MaxBatchCheck(spec.max_batch, context.nodeid))
    if spec.declares("ttft_ms"):
        made.append(Bound("ttft_ms", "ttft_ms", spec.ttft_ms, upper=True, percentile=spec.ttft_percentile,
                          nodeid=context.nodeid))
    return made


def per_user_limit(declared: float | str, context: PromiseContext) -> tuple[float, str]:
    """The per-user speed in tokens/s and how it was obtained ('reading' goes through the tokenizer)."""
    if declared == READING:
        reading = context.reading()
        return reading.tokens_per_s, reading.label
    return float(declared), ""


def capacity(verdicts: Sequence[Any]) -> int | None:
    """Largest batch size B such that every user got the per-user promise at every measured size up to B
    (0: none); None when the test declared no per-user promise."""
    per_user = [v for v in verdicts if v.kind == "threshold" and v.first.detail.get("metric") == "per_user_tps"]
    if not per_user:
        return None
    most = 0
    for batch_size in sorted({v.first.detail["batch_size"] for v in per_user}):
        if all(v.held for v in per_user if v.first.detail["batch_size"] == batch_size):
            most = batch_size
        else:
            break
    return most
