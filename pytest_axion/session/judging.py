"""Judging one test: every promise of it (its marker's, the stored baseline's, the A/B gate's) through the one
confirm procedure, its suspects measured again in a fresh worker."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pytest_axion.budget import MeasuringClock
from pytest_axion.harness import remeasure
from pytest_axion.machine.environment import METER_MIN_S, OtherCpuMeter
from pytest_axion.promises.confirm import AttemptNotMade, confirm, pause_before
from pytest_axion.promises.marker import PromiseContext, SloSpec, promises_for
from pytest_axion.promises.verdict import Verdict
from pytest_axion.records import CapacitySearch, Measurement, busy_limit, workload_of
from pytest_axion.report.record import BaselineStatus
from pytest_axion.session.resources import RunResources
from pytest_axion.store.gate import BaselineGate, GateSettings

AbSide = dict[str, tuple[Measurement, Measurement]]   # (A, B) rounds of each measurement, by B's key
BUSY_CHECK_S = 10.0   # the end of a confirmation's pause over which the machine is checked for other work


class Judging:
    """The baseline gate (read once, after the model is loaded) and the confirmations of every test's promises."""

    def __init__(self, resources: RunResources, *, baselines_root: Path, clock: MeasuringClock,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.resources = resources
        self.clock = clock   # each test's measuring time against its budget
        self.settings = resources.settings
        self.baselines_root = baselines_root
        self.paused_s = 0.0   # confirmation pauses: not measuring (a refresh bounds its later runs by run 1's)
        self._sleep = sleep or time.sleep
        self._gate: BaselineGate | None = None

    @property
    def gate(self) -> BaselineGate | None:
        """This machine's baseline; None when not comparing, or before the model is loaded."""
        loaded = self.resources.loaded
        if self._gate is None and self.settings.compare_baselines and loaded is not None:
            settings = self.settings
            gate_settings = GateSettings(estimator=settings.estimator.value, default_tolerance=settings.tolerance.value)
            self._gate = BaselineGate(self.baselines_root, hardware=loaded.hardware, model=loaded.model,
                                      threads=loaded.threads, settings=gate_settings)
        return self._gate

    def judge(self, nodeid: str, spec: SloSpec | None, measured: Sequence[Measurement], ab_side: AbSide | None,
              wait_message: Callable[[str], None], capacity: CapacitySearch | None = None) -> list[Verdict]:
        """The verdicts of one test's promises on its ``measured`` (``ab_side``: its A/B pairs, in an A/B session;
        ``capacity``: its capacity search)."""
        if not measured:
            return []
        settings, resources = self.settings, self.resources
        context = PromiseContext(nodeid=nodeid, reading=resources.reading_speed,
                                 default_tolerance=settings.tolerance.value, gate=self.gate,
                                 require_baseline=settings.require_baseline, ab_baseline_side=ab_side,
                                 ab_rounds=settings.ab_rounds.value, ab_tolerance=settings.ab_tolerance.value,
                                 roofs=None if settings.efficiency.value == "off" else resources.roofs,
                                 capacity=capacity)
        attempts = 1 + settings.confirm.value if resources.deployment.measures else 1

        # Workloads measured at least once while nothing else competed: a fresh attempt of them can still decide.
        # For the others, the pause before an attempt only waits for other processes to finish (budget.py).
        clean = {workload_of(m) for m in measured if not m.contended}
        made = 1   # attempts made so far

        def only_contended(suspects: Sequence[Measurement]) -> bool:
            return not any(workload_of(m) in clean for m in suspects)

        def measure_again(suspects: Sequence[Measurement], attempt: int, why: str) -> dict[str, Measurement]:
            nonlocal made
            made = attempt
            spacing = pause_before(attempt, settings.confirm_spacing_s.value)
            # an unsure first attempt earns one attempt beyond --axion-confirm (promises.verdict)
            of = f"{attempts}" if attempt <= attempts else f"{attempts}, one more as the first was unsure"
            wait_message(f"{why}; attempt {attempt} of {of} after a {spacing:.0f} s pause, in a fresh worker")
            waiting_only = only_contended(suspects)
            still_busy = self._pause(spacing, check=waiting_only)
            self.paused_s += spacing
            if waiting_only:
                self.clock.wait(nodeid, spacing)
                if still_busy is not None:
                    raise AttemptNotMade(f"other processes still used {still_busy:.1f} CPU(s) at the end of a "
                                         f"{spacing:.0f} s pause, so a fresh attempt would measure them too")
            fresh = self._measure_again(suspects, ab_side)
            clean.update(workload_of(m) for m in fresh.values() if not m.contended)
            return fresh

        def why_not_again(suspects: Sequence[Measurement]) -> str | None:
            waiting = pause_before(made + 1, settings.confirm_spacing_s.value) if only_contended(suspects) else 0.0
            return self.clock.shortfall(nodeid, [(nodeid, workload_of(m)) for m in suspects], waiting_s=waiting)

        return confirm(nodeid, promises_for(spec, context), list(measured), attempts=attempts,
                       measure_again=measure_again, why_not_again=why_not_again)

    def _pause(self, seconds: float, *, check: bool) -> float | None:
        """Wait ``seconds`` before a confirming attempt; with ``check``, the CPUs' worth of other processes' work over
        its last :data:`BUSY_CHECK_S` when that is beyond what the threads tolerate (the machine still busy), else None.

        Every attempt measured while other processes competed ends ``inconclusive`` whatever it reads
        (:func:`pytest_axion.promises.verdict.decide`), so an attempt measured while they still do cannot decide
        anything: on a 70B proxy with a core busy, two such attempts and their pauses were 264 s of a 306 s test."""
        loaded = self.resources.loaded
        check_s = min(BUSY_CHECK_S, seconds)
        if not check or loaded is None or not loaded.engine.measures_contention or check_s < METER_MIN_S:
            self._sleep(seconds)
            return None
        self._sleep(seconds - check_s)
        meter = OtherCpuMeter().start()
        self._sleep(check_s)
        other = meter.stop()
        return other if other is not None and other > busy_limit(loaded.threads) else None

    def _measure_again(self, suspects: Sequence[Measurement], ab_side: AbSide | None) -> dict[str, Measurement]:
        """The suspects' workloads, each once, in a fresh worker; in an A/B session both sides, their rounds into
        ``ab_side``."""
        loaded = self.resources.fresh_worker()
        fresh: dict[str, Measurement] = {}
        for measured in remeasure(loaded, suspects, repetitions=self.settings.repetitions.value, clock=self.clock,
                                  progress=self.resources.progress):
            fresh.update((m.key, m) for m in measured.current.values())
            if ab_side is None or measured.rounds is None:
                continue
            baseline_rounds, current_rounds = measured.rounds
            for metric, b in measured.current.items():
                if metric in baseline_rounds and metric in current_rounds:
                    ab_side[b.key] = (baseline_rounds[metric], current_rounds[metric])
                else:
                    ab_side.pop(b.key, None)   # never judge this attempt by the first attempt's pairs
        return fresh

    def baseline_status(self) -> BaselineStatus | None:
        """What the run's baseline was, for the reports; None when none was read."""
        gate = self._gate
        if gate is None:
            return None
        settings = self.settings
        stored = gate.baseline
        provenance = stored.provenance if stored else {}
        runs = max((len(e.runs) for e in stored.entries.values()), default=0) if stored else 0
        return BaselineStatus(path=str(gate.path), found=stored is not None, estimator=settings.estimator.value,
                              tolerance=settings.tolerance.value, confirm=settings.confirm.value, runs=runs,
                              recorded_at=provenance.get("recorded_at"),
                              llama_cpp_python=provenance.get("llama_cpp_python"),
                              git_commit=provenance.get("git_commit"), differences=gate.differences)
