"""One pytest run's axion state, coordinated: the plugin's hooks call :class:`AxionSession`, which hands each job to
the module of its role.

- :mod:`.resources`: the model (loaded at most once) and what is found once (environment, prompt sizing, reading
  speed, roofs);
- :mod:`.collected`: what the tests measured and judged;
- :mod:`.judging`: the baseline gate and the one confirm procedure;
- :mod:`.refreshing`: a refresh of this machine's baseline;
- :mod:`.assembly`: the run record for every report, and its xdist transport.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_axion.budget import MeasuringClock
from pytest_axion.engines.deployment import LoadedModel
from pytest_axion.harness import Axion
from pytest_axion.promises.capacity import RequestPromise, capacity_promises
from pytest_axion.promises.efficiency import EfficiencyFigure
from pytest_axion.promises.marker import PromiseContext, SloSpec
from pytest_axion.promises.verdict import Verdict
from pytest_axion.records import ProgressCallback, threads_text
from pytest_axion.report.record import RunRecord, shown_path
from pytest_axion.session.assembly import RunAssembly
from pytest_axion.session.collected import Collected
from pytest_axion.session.judging import Judging
from pytest_axion.session.refreshing import refresh_baselines
from pytest_axion.session.resources import RunResources
from pytest_axion.settings import Settings
from pytest_axion.store import refresh as refreshing
from pytest_axion.store.gate import BaselineGate

__all__ = ["AxionSession"]


class AxionSession:
    """Holds one run's state; stored in ``config.stash``, never in a module global."""

    def __init__(self, settings: Settings, *, baselines_root: Path, progress: ProgressCallback | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.settings = settings
        self.deployment = settings.deployment   # how this run measures: asked, never re-derived
        self.baselines_root = baselines_root
        self.resources = RunResources(settings, progress=progress)
        self.collected = Collected()
        self.clock = MeasuringClock(budget_s=settings.budget_s.value)
        self.judging = Judging(self.resources, baselines_root=baselines_root, clock=self.clock, sleep=sleep)
        self.assembly = RunAssembly(self.resources, self.judging, self.collected)
        self.refresh_result: refreshing.RefreshResult | None = None
        self.started = time.monotonic()   # the session's start: how long run 1 of a refresh took
        self._sleep = sleep

    # -- before and around the tests -----------------------------------------------------------------------

    def header_line(self) -> str:
        """Before the first test: the model, the hardware id, threads and mode (nothing is loaded yet)."""
        settings, deployment = self.settings, self.deployment
        model, hardware = deployment.model_name(), deployment.hardware_id()
        mode = f"recording baselines ({settings.runs.value} runs)" if settings.refresh else deployment.mode()
        if settings.refresh:
            gate = f"writing to {shown_path(self.baselines_root)}/"
        elif settings.compare_baselines:
            gate = f"baselines in {shown_path(self.baselines_root)}/"
        else:
            gate = "no stored baselines"
        return f"axion: model {model}, hardware {hardware}, {threads_text(deployment.run_threads())}, {mode}; {gate}"

    def check_features(self, required: Sequence[str], *, source: str) -> None:
        self.resources.check_features(required, source=source)

    def check_quiet_for_refresh(self) -> None:
        self.resources.check_quiet_for_refresh()

    def load(self) -> LoadedModel:
        """The model, loaded on first use (see :meth:`RunResources.load`)."""
        return self.resources.load()

    @property
    def gate(self) -> BaselineGate | None:
        return self.judging.gate

    def read_baseline(self) -> None:
        """Read this machine's baseline now (if comparing), so that a corrupt file is reported first."""
        _ = self.judging.gate

    def harness(self, nodeid: str, spec: SloSpec | None = None) -> Axion:
        """The ``axion`` fixture's object for one test: what it measures is collected for this run."""
        resources, collected = self.resources, self.collected

        def request_promises() -> list[RequestPromise]:
            return capacity_promises(spec, PromiseContext(nodeid, reading=resources.reading_speed))

        return Axion(resources.load(), nodeid=nodeid, repetitions=self.settings.repetitions.value,
                     record=collected.measurements.append, progress=resources.progress,
                     record_pair=collected.record_pair, request_promises=request_promises,
                     record_capacity=collected.record_capacity, record_rate=collected.record_rate,
                     fill_tokens=lambda: resources.prompt_sizing().fill_tokens, gen_tokens=resources.gen_tokens,
                     capacity_budget_s=self.settings.capacity_budget_s.value, clock=self.clock)

    def judge(self, nodeid: str, spec: SloSpec | None, wait_message: Callable[[str], None]) -> list[Verdict]:
        """Every promise of the test through the one confirm procedure (:class:`Judging`), its verdicts kept."""
        collected = self.collected
        ab_side = collected.ab_side_of(nodeid) if self.deployment.paired else None
        verdicts = self.judging.judge(nodeid, spec, collected.of_test(nodeid), ab_side, wait_message,
                                      capacity=collected.capacity_searches.get(nodeid))
        collected.verdicts += verdicts
        return verdicts

    def efficiency_of(self, nodeid: str) -> list[EfficiencyFigure]:
        """One test's efficiency figures (none when efficiency is off or its roofs could not be had)."""
        return self.resources.efficiency_of(self.collected.of_test(nodeid))

    # -- after the tests ---------------------------------------------------------------------------------------

    def refresh_baselines(self, parent_args: Sequence[str], *, cwd: Path, repo_root: Path,
                          progress: Callable[[str], None]) -> refreshing.RefreshResult:
        """This run plus K-1 fresh runs recorded as this machine's baseline (:func:`refresh_baselines`)."""
        return refresh_baselines(self.run_record(), settings=self.settings, baselines_root=self.baselines_root,
                                 passed=self.collected.passed_nodeids(), first_run_s=time.monotonic() - self.started,
                                 paused_s=self.judging.paused_s, free_model=self.resources.free_model,
                                 parent_args=parent_args, cwd=cwd, repo_root=repo_root, progress=progress,
                                 sleep=self._sleep)

    def run_record(self, *, predict: bool = True) -> RunRecord | None:
        return self.assembly.run_record(predict=predict)

    def export_state(self) -> dict[str, Any] | None:
        return self.assembly.export_state()

    def adopt_state(self, payload: Mapping[str, Any]) -> None:
        self.assembly.adopt_state(payload)

    def close(self) -> None:
        self.resources.close()
