"""Everything one run produced, in one record: the input of every report (terminal, JSON, JUnit, figures)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_axion.machine.cpu import parse_system_info
from pytest_axion.machine.hardware import HardwareFingerprint
from pytest_axion.machine.model import ModelFingerprint
from pytest_axion.promises.efficiency import EfficiencyFigure, Roofs, efficiency_figures
from pytest_axion.promises.reading import ReadingSpeed
from pytest_axion.promises.thresholds import capacity
from pytest_axion.promises.verdict import Verdict
from pytest_axion.proxy.predict import PredictionSet
from pytest_axion.records import CapacitySearch, Measurement, ModelFacts, RateLevel, WarmUpRun
from pytest_axion.store.sizing_cache import Sizing

_FLAGS_SHOWN = ("KLEIDIAI", "REPACK", "OPENMP", "LLAMAFILE", "AVX512", "AVX2", "SVE", "DOTPROD", "MATMUL_INT8")


def shown_path(path: str | Path) -> str:
    """A path as a person reads it in a header or a summary: relative to the working directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def shown_flags(flags: Mapping[str, str]) -> str:
    """The llama.cpp build flags that matter for speed, as ``REPACK=1 OPENMP=1 ...``."""
    return " ".join(f"{name}={flags[name]}" for name in _FLAGS_SHOWN if name in flags) or "no flags reported"


@dataclass(frozen=True)
class RunRecord:
    """Everything one run produced: the input of every report."""

    model: ModelFingerprint
    hardware: HardwareFingerprint
    threads: int
    repetitions: int
    load_seconds: float
    reading: ReadingSpeed
    measurements: Sequence[Measurement]
    verdicts: Sequence[Verdict] = ()                  # every promise of every test, every kind alike
    baseline: BaselineStatus | None = None          # None: not compared (off, or refreshing)
    test_outcomes: Mapping[str, str] = dataclasses.field(default_factory=dict)  # nodeid -> passed/failed/skipped
    ab: AbSession | None = None                       # None: not an A/B session
    environment: tuple[str, ...] = ()                 # warnings about the machine when measuring started
    capacity_searches: Mapping[str, CapacitySearch] = dataclasses.field(default_factory=dict)
    rate_levels: Mapping[str, tuple[RateLevel, ...]] = dataclasses.field(default_factory=dict)   # axion.rate()
    warm_up: WarmUpRun | None = None
    roofs: Roofs | None = None                        # what efficiency is read against; None: off or not measured
    roofs_source: str = ""                            # where the limits came from, or why there are none
    served: str = ""                                  # the served deployment measured, or "" (in process)
    deployment: str = "in process"                    # how the run measured (engines.deployment.KINDS)
    served_elsewhere: bool = False                    # B is an endpoint: neither its file nor its build is known
    replay_of: str = ""                               # the report a replayed run judged again; "" when measured
    prediction: PredictionSet | None = None           # the full model's figures, from proxies (--axion-predict-from)
    prompt_sizing: Sizing | None = None               # axion.fill_tokens, when a test asked for it

    # -- figures derived from the record, once: every renderer reads these, none computes its own ----------------

    @functools.cached_property
    def capacities(self) -> dict[str, int | None]:
        """Per test: the most concurrent users that all got its per-user promise (None: it promised none); where
        the test searched (``axion.capacity``), the most users whose requests kept every per-request promise."""
        by_test: dict[str, list[Verdict]] = {}
        for verdict in self.verdicts:
            by_test.setdefault(verdict.nodeid, []).append(verdict)
        found = {nodeid: capacity(verdicts) for nodeid, verdicts in by_test.items()}
        searched = {nodeid: int(search.most_passing) for nodeid, search in self.capacity_searches.items()
                    if search.by == "users"}
        return {**found, **searched}

    @functools.cached_property
    def efficiency(self) -> list[EfficiencyFigure]:
        """Every measured cell's share of the machine's limit (none when efficiency was off or not measured)."""
        return efficiency_figures(self.measurements, self.roofs) if self.roofs is not None else []


@dataclass(frozen=True)
class AbSide:
    """One side of an A/B session: which interpreter, and the llama.cpp build it loaded."""

    python: str        # the interpreter, or the endpoint's URL in a served A/B session
    facts: ModelFacts
    served: str = ""   # the served deployment (model, build, slots); "" for an installation

    @property
    def name(self) -> str:
        """Short, for a figure's title: the endpoint, or the llama-cpp-python version."""
        return self.python if self.served else f"llama-cpp-python {self.facts.llama_cpp_python_version}"

    @property
    def description(self) -> str:
        if self.served:
            return self.served
        f = self.facts
        return (f"llama-cpp-python {f.llama_cpp_python_version}, llama.cpp {f.ggml_commit} (ggml {f.ggml_version}), "
                f"{shown_flags(parse_system_info(f.system_info))} [{self.python}]")

    def to_json(self) -> dict[str, Any]:
        return {"python": self.python, **dataclasses.asdict(self.facts), **({"served": self.served} if self.served
                                                                            else {})}


@dataclass(frozen=True)
class AbSession:
    baseline: AbSide
    current: AbSide
    rounds: int
    tolerance: float

    def header_lines(self) -> list[str]:
        return [f"A/B baseline (A): {self.baseline.description}",
                f"A/B current  (B): {self.current.description}",
                f"A/B: {self.rounds} rounds in ABBA order, one repetition per side each; paired ratio B/A "
                f"(Hodges-Lehmann, 95% Wilcoxon interval), tolerance {self.tolerance:.0%}"]

    def to_json(self) -> dict[str, Any]:
        return {"baseline": self.baseline.to_json(), "current": self.current.to_json(), "rounds": self.rounds,
                "tolerance": self.tolerance}


@dataclass(frozen=True)
class BaselineStatus:
    """Which stored baseline the run was judged against, and how it differs from this run's setup."""

    path: str
    found: bool
    estimator: str
    tolerance: float
    confirm: int
    runs: int = 0
    recorded_at: str | None = None
    llama_cpp_python: str | None = None
    git_commit: str | None = None
    differences: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "differences": list(self.differences)}
