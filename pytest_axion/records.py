"""Backend-neutral measurement records: what was measured, how, and every raw sample."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pytest_axion.stats import Summary


@dataclass(frozen=True)
class MetricSpec:
    unit: str
    higher_is_better: bool
    description: str


METRICS: dict[str, MetricSpec] = {
    "prompt_tps": MetricSpec("tokens/s", True, "prompt processing speed (llama-bench pp, batched S_PP)"),
    "gen_tps": MetricSpec("tokens/s", True, "total token generation speed over the batch (tg, S_TG)"),
    "per_user_tps": MetricSpec("tokens/s", True, "generation speed each user sees (S_TG / batch size)"),
    "ttft_ms": MetricSpec("ms", False, "time to first token: the prompt phase of a batched run"),
    "itl_ms": MetricSpec("ms", False, "inter-token latency: one generation step of the whole batch"),
}


# Contention: other processes using more than half a CPU, and more than a quarter of llama.cpp's threads'
# worth, while a workload runs make its figures describe them rather than the build.
BUSY_MIN_CPUS = 0.5
BUSY_THREAD_FRACTION = 0.25


def busy_limit(threads: int) -> float:
    """CPUs' worth of other work beyond which a measurement with ``threads`` threads is contended."""
    return max(BUSY_MIN_CPUS, BUSY_THREAD_FRACTION * threads)


@dataclass(frozen=True)
class Measurement:
    """One metric of one workload shape, with all its samples.

    For throughput and TTFT there is one sample per repetition; for ``itl_ms`` one per generation
    step of every repetition, so that its percentiles mean something. ``other_cpus`` is how many
    CPUs' worth of other processes' work (and hypervisor steal) ran meanwhile, None where unknown.
    """

    nodeid: str
    metric: str
    batch_size: int
    n_prompt: int
    n_gen: int
    threads: int
    samples: tuple[float, ...]
    other_cpus: float | None = None

    @property
    def contended(self) -> bool:
        """Measured while other work took CPUs llama.cpp's threads needed (see :func:`busy_limit`)."""
        return self.other_cpus is not None and self.other_cpus > busy_limit(self.threads)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; known: {', '.join(METRICS)}")
        if not self.samples:
            raise ValueError(f"{self.metric} measurement of {self.nodeid} has no samples")

    @property
    def unit(self) -> str:
        return METRICS[self.metric].unit

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric].higher_is_better

    @cached_property
    def summary(self) -> Summary:
        return Summary.of(self.samples)

    @property
    def median(self) -> float:
        return self.summary.median

    @property
    def key(self) -> str:
        """Identity of the measurement across runs (what a baseline entry is keyed by)."""
        return (f"{self.nodeid}::{self.metric}::b{self.batch_size}::pp{self.n_prompt}"
                f"::tg{self.n_gen}::t{self.threads}")

    @property
    def shape(self) -> str:
        """Short human label of the workload, e.g. ``pp512``, ``tg128``, ``pp128+tg64 x4``."""
        if self.n_gen == 0:
            return f"pp{self.n_prompt}" + (f" x{self.batch_size}" if self.batch_size > 1 else "")
        if self.n_prompt == 0:
            return f"tg{self.n_gen}"
        return f"pp{self.n_prompt}+tg{self.n_gen} x{self.batch_size}"

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "metric": self.metric,
            "unit": self.unit,
            "batch_size": self.batch_size,
            "n_prompt": self.n_prompt,
            "n_gen": self.n_gen,
            "threads": self.threads,
            "samples": list(self.samples),
            "summary": self.summary.to_json(),
            "other_cpus": self.other_cpus,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Measurement:
        return cls(
            nodeid=str(data["nodeid"]),
            metric=str(data["metric"]),
            batch_size=int(data["batch_size"]),
            n_prompt=int(data["n_prompt"]),
            n_gen=int(data["n_gen"]),
            threads=int(data["threads"]),
            samples=tuple(float(v) for v in data["samples"]),
            other_cpus=None if data.get("other_cpus") is None else float(data["other_cpus"]),
        )
