"""One pytest run's axion state: settings, the model (loaded at most once), and what was measured."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_axion.engines.base import Engine
from pytest_axion.engines.worker import probe_build
from pytest_axion.errors import AxionError, MeasurementError, SettingsError
from pytest_axion.harness import Axion, LoadedModel, remeasure
from pytest_axion.machine.costs import CostsError, model_costs
from pytest_axion.machine.cpu import parse_system_info
from pytest_axion.machine.environment import environment_warnings, other_processes_cpus
from pytest_axion.machine.features import missing_features, missing_message
from pytest_axion.machine.gguf import read_gguf_info
from pytest_axion.machine.hardware import collect_hardware
from pytest_axion.machine.limits import LimitsError
from pytest_axion.machine.model import embedded_model_path
from pytest_axion.machine.sizing import SWEEP_REPETITIONS, TOKENS_PER_THREAD, prompt_fill_tokens, sweep_tokens
from pytest_axion.promises.capacity import RequestPromise, capacity_promises
from pytest_axion.promises.confirm import confirm, pause_before
from pytest_axion.promises.efficiency import EfficiencyFigure, Roofs, efficiency_figures
from pytest_axion.promises.marker import PromiseContext, SloSpec, promises_for
from pytest_axion.promises.reading import ReadingSpeed, resolve_reading_speed, sample_text, tokens_per_word
from pytest_axion.promises.verdict import Verdict
from pytest_axion.proxy.predict import PredictionSet, predict_run
from pytest_axion.records import (
    CapacitySearch,
    EngineError,
    Measurement,
    ProgressCallback,
    RateLevel,
    busy_limit,
)
from pytest_axion.report.record import AbSession, AbSide, BaselineStatus, RunRecord, shown_path
from pytest_axion.settings import Settings
from pytest_axion.store import refresh as refreshing
from pytest_axion.store.baselines import Baseline, baseline_path, check_writable, read_baseline, update_baseline
from pytest_axion.store.gate import BaselineGate, GateSettings
from pytest_axion.store.limits_cache import limits_for
from pytest_axion.store.sizing_cache import Sizing, Sweep, sizing_for
from pytest_axion.transport import from_builtin, to_builtin


class AxionSession:
    """Holds one run's state; stored in ``config.stash``, never in a module global."""

    def __init__(self, settings: Settings, *, baselines_root: Path, progress: ProgressCallback | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.settings = settings
        self.deployment = settings.deployment   # how this run measures: asked, never re-derived
        self.baselines_root = baselines_root
        self.measurements: list[Measurement] = []
        self.verdicts: list[Verdict] = []   # every promise of every test, after its confirmations
        self.test_phases: list[tuple[str, str]] = []   # (nodeid, outcome) of every phase that measured
        self.progress = progress
        self._sleep = sleep
        self._loaded: LoadedModel | None = None
        self._reading: ReadingSpeed | None = None
        self._gate: BaselineGate | None = None
        self.refresh_result: refreshing.RefreshResult | None = None
        # (A, B) of every metric, one sample per round each: A/B session only
        self.ab_pairs: list[tuple[Measurement, Measurement]] = []
        self.capacity_searches: dict[str, CapacitySearch] = {}
        self.rate_levels: dict[str, tuple[RateLevel, ...]] = {}   # axion.rate() runs by test, in order
        self.environment: tuple[str, ...] = ()   # warnings about the machine, read when measuring starts
        self._adopted: RunRecord | None = None   # the measuring worker's run, in an xdist controller
        self._predicted: tuple[int, PredictionSet] | None = None   # (measurements it was made from, prediction)
        self._sizing: Sizing | None = None
        self._sizing_failed: str | None = None   # why the prompt sweep failed, for every later test that asks
        self._build: tuple[dict[str, str], tuple[str, ...]] | None = None
        self.started = time.monotonic()   # the session's start: how long run 1 of a refresh took
        self.paused_s = 0.0   # of which confirmation pauses
        self._roofs: Roofs | None = None
        self.roofs_source = ""            # "measured in this run" or "cached, measured ..."
        self.roofs_missing = ""           # why there are no efficiency figures, when they were wanted

    @property
    def loaded(self) -> LoadedModel | None:
        """The loaded model, or None if no test has needed it (yet)."""
        return self._loaded

    def load(self) -> LoadedModel:
        """Load the model on first use; later calls return the same instance, with a fresh worker if
        llama.cpp crashed since (the test that saw the crash has failed with its one-line error)."""
        if self._loaded is not None and not self._loaded.engine.alive:
            self._loaded.engine.restart()
        if self._loaded is None and self.deployment.measures:
            # Read before the model loads: the load itself would raise the load average.
            self.environment = tuple(environment_warnings(
                threads=self.settings.threads.value, physical_cores=self.settings.cores.physical,
                logical_cores=self.settings.cores.logical, other_cpus=other_processes_cpus()))
        if self._loaded is None:
            progress = self.progress
            self._loaded = self.deployment.load(say=(lambda text: progress(text, 0, 0)) if progress else None)
        return self._loaded

    def check_quiet_for_refresh(self, *, sample_s: float = 1.0) -> None:
        """Stop a refresh before it measures when other processes keep the CPUs busy: a baseline recorded
        then would describe the other work, and the refresh would take far longer than planned."""
        threads = self.settings.threads.value
        other = other_processes_cpus(sample_s)
        if other is not None and other > busy_limit(threads):
            raise AxionError(
                f"--axion-refresh-baselines: other processes keep {other:.1f} CPU(s) of this machine busy (limit "
                f"{busy_limit(threads):.1f} for {threads} llama.cpp thread(s)), so a baseline recorded now would "
                "describe them, not your build; stop them or wait until the machine is quiet, then refresh again, "
                "or add --axion-force to record it anyway (nothing was measured or written)")

    def harness(self, nodeid: str, spec: SloSpec | None = None) -> Axion:
        def request_promises() -> list[RequestPromise]:
            return capacity_promises(spec, PromiseContext(nodeid, reading=self.reading_speed))

        return Axion(self.load(), nodeid=nodeid, repetitions=self.settings.repetitions.value,
                     record=self.measurements.append, progress=self.progress, record_pair=self._record_pair,
                     request_promises=request_promises, record_capacity=self._record_capacity,
                     record_rate=self._record_rate,
                     fill_tokens=lambda: self.prompt_sizing().fill_tokens,
                     capacity_budget_s=self.settings.capacity_budget_s.value)

    def prompt_sizing(self) -> Sizing:
        """The tokens per call of prompt workloads (``axion.fill_tokens``): found once per session."""
        if self._sizing is None:
            loaded, choice = self.load(), self.settings.prompt_sizing
            recorded = self.deployment.recorded_fill_tokens()
            if recorded is not None:
                self._sizing = Sizing(recorded, (), f"{recorded} tokens per call, as {self.deployment.replay} recorded")
            elif isinstance(choice.value, int):
                self._sizing = Sizing(choice.value, (), f"{choice.value} tokens per call from {choice.source}")
            elif choice.value == "sweep" and self.deployment.sweeps_prompt:
                if self._sizing_failed is not None:   # once per session: a later test fails alike, unmeasured
                    raise MeasurementError(self._sizing_failed)
                try:
                    self._sizing = sizing_for(loaded.hardware.hardware_id, loaded.model.sha256, loaded.threads,
                                              build=loaded.hardware.llama_cpp_python,
                                              busy_cpus=busy_limit(loaded.threads),
                                              measure=lambda: self._prompt_sweep(loaded))
                except MeasurementError as err:
                    self._sizing_failed = str(err)
                    raise
            else:
                why = "" if choice.value == "rule" else f" (not swept in this run: {self.deployment.kind})"
                self._sizing = Sizing(prompt_fill_tokens(loaded.threads), (),
                                      f"{TOKENS_PER_THREAD} tokens per thread, at most one micro-batch{why}")
        return self._sizing

    def _prompt_sweep(self, loaded: LoadedModel) -> Sweep:
        """Prompt speed at each tokens-per-call of the sweep, in this session's worker."""
        points, busy = [], []
        for n_prompt in sweep_tokens():
            if self.progress is not None:
                self.progress(f"prompt sizing: {n_prompt} tokens per call", 0, 0)
            try:
                measured = loaded.engine.measure("prompt", nodeid="prompt sizing", threads=loaded.threads,
                                                 repetitions=SWEEP_REPETITIONS, n_prompt=n_prompt)
            except EngineError as err:
                raise MeasurementError(f"prompt sizing ({n_prompt} tokens per call): {err}") from None
            prompt = measured.current["prompt_tps"]
            points.append((n_prompt, prompt.median))
            busy.append(prompt.other_cpus)
        known = [cpus for cpus in busy if cpus is not None]
        return Sweep(tuple(points), max(known) if known else None)

    def _record_capacity(self, search: CapacitySearch) -> None:
        self.capacity_searches[search.nodeid] = search

    def _record_rate(self, level: RateLevel) -> None:
        self.rate_levels[level.nodeid] = (*self.rate_levels.get(level.nodeid, ()), level)

    def _record_pair(self, baseline: dict[str, Measurement], current: dict[str, Measurement]) -> None:
        # a metric one side lacks (prompt_tps where only one server reports its timings) is not paired
        self.ab_pairs += [(baseline[metric], current[metric]) for metric in current if metric in baseline]

    def reading_speed(self) -> ReadingSpeed:
        """The reading speed in tokens/s; words per minute are converted with the model's tokenizer."""
        if self._reading is None:
            spec = self.settings.reading_speed
            ratio, tokenizer = 1.0, "none"
            if spec.unit == "wpm":
                loaded = self.load()
                text = sample_text()
                ratio = tokens_per_word(loaded.engine.count_tokens(text), text)
                tokenizer = loaded.model.label
            self._reading = resolve_reading_speed(spec, tokens_per_word=ratio, tokenizer=tokenizer)
        return self._reading

    def roofs(self) -> Roofs:
        """The model's costs and the machine's limits that efficiency is read against, measured (or read from
        the cache) once, on first use; raises AxionError when they cannot be had."""
        if self._roofs is None:
            if not self.deployment.computes_here:
                why = ("a replay computes nothing here" if not self.deployment.measures
                       else "an endpoint served elsewhere has other limits")
                raise AxionError(f"efficiency is read against the machine that computes: {why}; measure it there, or "
                                 "with --axion-serve on this machine")
            loaded = self.load()
            try:
                costs = model_costs(read_gguf_info(self.settings.model.value or str(embedded_model_path())))
            except CostsError as err:
                raise AxionError(str(err)) from None
            limits, self.roofs_source = limits_for(loaded.hardware.hardware_id, loaded.threads,
                                                   costs.step_weight_bytes, mode=self.settings.efficiency.value)
            self._roofs = Roofs(costs, limits)
        return self._roofs

    def _report_roofs(self) -> Roofs | None:
        """The roofs for the reports: None when efficiency is off or could not be measured (said once)."""
        if self.settings.efficiency.value == "off" or self.roofs_missing or not self.deployment.measures:
            return None   # a replay's figures were measured elsewhere: this machine's limits do not bound them
        try:
            return self.roofs()
        except (LimitsError, AxionError) as err:
            self.roofs_missing = str(err)
            return None

    def efficiency_of(self, nodeid: str) -> list[EfficiencyFigure]:
        """One test's efficiency figures (none when efficiency is off or its roofs could not be had)."""
        mine = [m for m in self.measurements if m.nodeid == nodeid]
        roofs = self._report_roofs() if mine else None
        return efficiency_figures(mine, roofs) if roofs is not None else []

    @property
    def gate(self) -> BaselineGate | None:
        """This machine's baseline (read once, after the model is loaded); None when not comparing."""
        if self._gate is None and self.settings.compare_baselines and self._loaded is not None:
            loaded, settings = self._loaded, self.settings
            gate_settings = GateSettings(estimator=settings.estimator.value, default_tolerance=settings.tolerance.value)
            self._gate = BaselineGate(self.baselines_root, hardware=loaded.hardware, model=loaded.model,
                                      threads=loaded.threads, settings=gate_settings)
        return self._gate

    def check_features(self, required: Sequence[str], *, source: str) -> None:
        """Stop before measuring when the llama.cpp build or the CPU lacks a required feature."""
        if not required:
            return
        if self._build is None:
            text = probe_build(self.settings.python.value or sys.executable)["system_info"]
            self._build = (parse_system_info(text), collect_hardware(system_info=text).isa_features)
        info, isa = self._build
        missing = missing_features(required, system_info=info, isa_features=isa)
        if missing:
            raise SettingsError(missing_message(missing, source=source, system_info=info, isa_features=isa))

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
        return f"axion: model {model}, hardware {hardware}, {deployment.run_threads()} threads, {mode}; {gate}"

    def read_baseline(self) -> None:
        """Read this machine's baseline now (if comparing), so that a corrupt file is reported first."""
        _ = self.gate

    def judge(self, nodeid: str, spec: SloSpec | None, wait_message: Callable[[str], None]) -> list[Verdict]:
        """Every promise of the test (its marker's, the stored baseline's, the A/B gate's) through the one
        confirm procedure: one pause per attempt for all suspects, measured again in a fresh worker."""
        measured = [m for m in self.measurements if m.nodeid == nodeid]
        if not measured:
            return []
        settings = self.settings
        ab_side = ({b.key: (a, b) for a, b in self.ab_pairs if b.nodeid == nodeid}
                   if self.deployment.paired else None)
        context = PromiseContext(nodeid=nodeid, reading=self.reading_speed, default_tolerance=settings.tolerance.value,
                                 gate=self.gate, require_baseline=settings.require_baseline,
                                 ab_baseline_side=ab_side, ab_rounds=settings.ab_rounds.value,
                                 ab_tolerance=settings.ab_tolerance.value,
                                 roofs=None if settings.efficiency.value == "off" else self.roofs)
        attempts = 1 + settings.confirm.value if self.deployment.measures else 1

        def measure_again(suspects: Sequence[Measurement], attempt: int, why: str) -> dict[str, Measurement]:
            spacing = pause_before(attempt, settings.confirm_spacing_s.value)
            # an unsure first attempt earns one attempt beyond --axion-confirm (promises.verdict)
            of = f"{attempts}" if attempt <= attempts else f"{attempts}, one more as the first was unsure"
            wait_message(f"{why}; attempt {attempt} of {of} after a {spacing:.0f} s pause, in a fresh worker")
            (self._sleep or time.sleep)(spacing)
            self.paused_s += spacing   # not measuring: a refresh bounds its later runs by run 1's measuring
            return self._measure_again(suspects, ab_side)

        verdicts = confirm(nodeid, promises_for(spec, context), measured, attempts=attempts,
                           measure_again=measure_again)
        self.verdicts += verdicts
        return verdicts

    def _measure_again(self, suspects: Sequence[Measurement],
                       ab_side: dict[str, tuple[Measurement, Measurement]] | None) -> dict[str, Measurement]:
        """The suspects' workloads, each once, in a fresh worker (a process keeps offsets of its own for life:
        a miss must reproduce in a new one); in an A/B session both sides, their rounds into ``ab_side``."""
        # load() already starts a fresh worker when the last one crashed (or none was started yet)
        running = self._loaded is not None and self._loaded.engine.alive
        loaded = self.load()
        if running:
            loaded.engine.restart()
        fresh: dict[str, Measurement] = {}
        for measured in remeasure(loaded, suspects, repetitions=self.settings.repetitions.value,
                                  progress=self.progress):
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

    def test_outcomes(self) -> dict[str, str]:
        """Per test: failed if any phase failed, else skipped if any was skipped, else passed."""
        outcomes: dict[str, str] = {}
        rank = {"passed": 0, "skipped": 1, "failed": 2}
        for nodeid, outcome in self.test_phases:
            if rank[outcome] >= rank[outcomes.get(nodeid, "passed")]:
                outcomes[nodeid] = outcome
        return outcomes

    def passed_nodeids(self) -> frozenset[str]:
        return refreshing.passed_nodeids(self.test_phases)

    def refresh_baselines(self, parent_args: Sequence[str], *, cwd: Path, repo_root: Path,
                          progress: Callable[[str], None]) -> refreshing.RefreshResult:
        """Record this run plus K-1 fresh runs as the baseline, noisy entries with the wide band their
        spread gives them (refused under --axion-strict).

        The old file is read first: a corrupt one stops the refresh (it is never silently replaced).
        """
        record = self.run_record()
        if record is None:
            raise AxionError("--axion-refresh-baselines: no test measured anything, so there is nothing to record")
        settings = self.settings
        path = baseline_path(self.baselines_root, record.hardware.hardware_id, record.model.label)
        old: Baseline | None = read_baseline(path) if path.exists() else None
        check_writable(path)  # before minutes of measuring, not after
        runs = [refreshing.RunData(measurements=tuple(record.measurements), passed=self.passed_nodeids())]
        if not runs[0].passed & {m.nodeid for m in record.measurements}:
            raise AxionError("--axion-refresh-baselines: no measuring test passed, so nothing would be recorded; "
                             "fix the failures (or the SLOs) first")
        if self._loaded is not None:  # free the model: the next runs get the machine alone
            self._loaded.engine.close()
        first_run_s = time.monotonic() - self.started
        measuring_s = max(first_run_s - self.paused_s, 0.0)
        pauses = [pause_before(attempt, settings.confirm_spacing_s.value)
                  for attempt in range(2, settings.confirm.value + 3)]   # + the unsure first attempt's extra one
        allowance = refreshing.confirm_allowance_s(pauses_s=pauses, first_run_measuring_s=measuring_s)
        timeout_s = refreshing.child_timeout_s(first_run_s, paused_s=self.paused_s, confirm_allowance_s=allowance)
        if settings.runs.value > 1:
            progress(refreshing.plan_line(runs=settings.runs.value, first_run_s=first_run_s,
                                          spacing_s=settings.run_spacing_s.value, timeout_s=timeout_s))
        with tempfile.TemporaryDirectory(prefix="axion-refresh-") as workdir:
            runs += refreshing.run_children(parent_args, runs=settings.runs.value,
                                            spacing_s=settings.run_spacing_s.value,
                                            timeout_s=timeout_s, workdir=Path(workdir),
                                            cwd=cwd, progress=progress, **({} if self._sleep is None
                                                                           else {"sleep": self._sleep}))
        entries, skipped = refreshing.merge_runs(runs)
        result = refreshing.RefreshResult(path=path, runs=len(runs), rows=refreshing.diff_rows(old, entries),
                                          skipped=skipped, noisy=refreshing.noisy_entries(entries),
                                          strict=settings.strict)
        if not entries:
            raise AxionError("--axion-refresh-baselines: no test passed in every run, so nothing was recorded; "
                             f"{skipped[0] if skipped else ''}")
        if result.noisy and settings.strict:
            return result
        provenance = refreshing.provenance(hardware=record.hardware, model=record.model.to_json(),
                                           threads=record.threads, repetitions=settings.repetitions.value,
                                           runs=len(runs), spacing_s=settings.run_spacing_s.value,
                                           git=refreshing.git_commit(repo_root))
        # Merged into what is there *now*, under the lock: a refresh that ran meanwhile keeps its entries.
        def merged(current: Baseline | None) -> Baseline:
            baseline, result.dropped = refreshing.combine(current, entries, hardware_id=record.hardware.hardware_id,
                                                          model_label=record.model.label, provenance=provenance)
            return baseline

        update_baseline(path, merged)
        result.written = True
        return result

    # -- the run as a whole; under xdist, carried from the measuring worker to the controller ----------

    def run_record(self, *, predict: bool = True) -> RunRecord | None:
        """Everything this run measured and judged, or None if nothing was measured (``predict``: with the
        full model's predicted figures, when --axion-predict-from asks for them)."""
        if self._adopted is not None:
            # made here from every worker's measurements: a worker's own prediction has only its rows
            return dataclasses.replace(self._adopted, test_outcomes=self.test_outcomes(),
                                       prediction=self._prediction(self._adopted, predict))
        loaded = self._loaded
        if loaded is None or not (self.measurements or self.rate_levels):
            return None
        record = RunRecord(model=loaded.model, hardware=loaded.hardware, threads=loaded.threads,
                           repetitions=self.deployment.run_repetitions(self.settings.repetitions.value),
                           load_seconds=loaded.load_seconds,
                           reading=self.reading_speed(), measurements=self.measurements, verdicts=self.verdicts,
                           baseline=self.baseline_status(), ab=self._ab_session(),
                           test_outcomes=self.test_outcomes(), environment=self.environment,
                           capacity_searches=self.capacity_searches, rate_levels=self.rate_levels,
                           warm_up=loaded.warm_up,
                           roofs=self._report_roofs(), roofs_source=self.roofs_source or self.roofs_missing,
                           served=self.deployment.describe(loaded.engine), deployment=self.deployment.kind,
                           # an endpoint's, or one replayed: the client knew neither the file nor the build
                           served_elsewhere=(self.deployment.endpoint is not None
                                             or loaded.model.architecture == "served"),
                           replay_of=self.deployment.replay or "",
                           prompt_sizing=self._sizing)
        return dataclasses.replace(record, prediction=self._prediction(record, predict))

    def _prediction(self, record: RunRecord, predict: bool) -> PredictionSet | None:
        """With --axion-predict-from: the full model's figures from the other proxy runs and this one (made once
        per set of measurements: every report renders the same prediction). An xdist worker makes none: its
        controller makes it from every worker's measurements."""
        model, measurements = record.model, record.measurements
        if not self.settings.predict_from.value or not predict:
            return None
        if self._predicted is None or self._predicted[0] != len(measurements):
            from pytest_axion.store.compare import read_report  # jsonschema: only for a prediction

            this_run = {"model": model.to_json(), "results": [m.to_json() for m in measurements],
                        "hardware": {"hardware_id": record.hardware.hardware_id}}
            try:
                others = [(path, read_report(Path(path))) for path in self.settings.predict_from.value]
                prediction = predict_run(others, this_run)
            except AxionError as err:
                proxy = model.proxy or {}
                prediction = PredictionSet(of=str(proxy.get("of", model.file_name)),
                                           layers=int(proxy.get("full_layers", 0)), from_layers=(), problem=str(err))
            self._predicted = (len(measurements), prediction)
        return self._predicted[1]

    def _ab_session(self) -> AbSession | None:
        sides = self.deployment.ab_sides(self._loaded.engine) if self._loaded is not None else None
        if sides is None:
            return None

        def side(where: str, of: Engine) -> AbSide:
            return AbSide(where, of.facts, served=of.describe())

        settings = self.settings
        return AbSession(baseline=side(sides.baseline_where, sides.baseline),
                         current=side(sides.current_where, sides.current),
                         rounds=settings.ab_rounds.value, tolerance=settings.ab_tolerance.value)

    def export_state(self) -> dict[str, Any] | None:
        """An xdist worker's run for its controller, as builtin types (execnet carries nothing else)."""
        record = self.run_record(predict=False)
        if record is None:
            return None
        return {"record": to_builtin(record), "phases": [list(phase) for phase in self.test_phases]}

    def adopt_state(self, payload: Mapping[str, Any]) -> None:
        """Take over a worker's run; each further worker's run is merged in, never dropped."""
        try:
            record = from_builtin(payload["record"])
        except (KeyError, TypeError, ValueError, ImportError, AttributeError) as err:
            raise AxionError(f"an xdist worker's run could not be read ({err}): are the controller and the workers "
                             "the same pytest-axion?") from None
        if not isinstance(record, RunRecord):
            raise AxionError(f"an xdist worker sent {type(record).__name__}, not its run: are both ends the same "
                             "pytest-axion?")
        if self._adopted is not None:
            first = self._adopted
            record = dataclasses.replace(
                first, measurements=[*first.measurements, *record.measurements],
                verdicts=[*first.verdicts, *record.verdicts],   # every kind, A/B included: one list
                ab=first.ab or record.ab, baseline=first.baseline or record.baseline,
                prompt_sizing=_merged_sizing(first.prompt_sizing, record.prompt_sizing),
                capacity_searches={**first.capacity_searches, **record.capacity_searches},
                rate_levels={**first.rate_levels, **record.rate_levels},
                roofs=first.roofs or record.roofs, roofs_source=first.roofs_source or record.roofs_source,
                load_seconds=max(first.load_seconds, record.load_seconds),
                environment=tuple(dict.fromkeys([*first.environment, *record.environment])))
        self._adopted = record
        self.test_phases += [(str(nodeid), str(outcome)) for nodeid, outcome in payload["phases"]]

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded.close()
            self._loaded = None


def _merged_sizing(first: Sizing | None, other: Sizing | None) -> Sizing | None:
    """Two workers' prompt sizing: one figure, or both named when they sized apart (a busy sweep is not cached,
    so each worker sweeps on its own)."""
    if first is None or other is None or first.fill_tokens == other.fill_tokens:
        return first or other
    return dataclasses.replace(first, source=f"{first.source}; another xdist worker sized {other.fill_tokens} tokens "
                                             f"per call ({other.source}): pin --axion-prompt-sizing N")
