"""One pytest run's axion state: settings, the model (loaded at most once), and what was measured."""

from __future__ import annotations

import dataclasses
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pytest_axion import refresh as refreshing
from pytest_axion.ab import PairedComparison, compare_paired
from pytest_axion.baselines import Baseline, baseline_path, check_writable, read_baseline, update_baseline
from pytest_axion.cpu import parse_system_info, usable_cores
from pytest_axion.engine import EngineError, ModelFacts, ProgressCallback
from pytest_axion.engine import system_info as engine_system_info
from pytest_axion.environment import environment_warnings, other_processes_cpus
from pytest_axion.errors import AxionError, MeasurementError, SettingsError
from pytest_axion.features import missing_features, missing_message
from pytest_axion.gate import BaselineGate, GateSettings
from pytest_axion.gguf import read_gguf_info
from pytest_axion.hardware import collect_hardware
from pytest_axion.harness import (
    Axion,
    CapacitySearch,
    LoadedModel,
    load_model,
    measurements_of,
    remeasure,
    workload_of,
    workload_request,
)
from pytest_axion.model import embedded_model_path
from pytest_axion.reading import ReadingSpeed, resolve_reading_speed, sample_text, tokens_per_word
from pytest_axion.records import Measurement, busy_limit
from pytest_axion.report import AbSession, AbSide, BaselineStatus, RunRecord
from pytest_axion.settings import Settings, resolve_settings
from pytest_axion.shape import ShapeCheck, ShapeVerdict, confirm_shape
from pytest_axion.slo import READING, SloOutcome, SloSpec, evaluate_slos
from pytest_axion.verdicts import REGRESSED, BaselineVerdict
from pytest_axion.worker import PairedEngine


def settings_for_this_machine(cli: Mapping[str, object], ini: Mapping[str, str]) -> Settings:
    """Resolve settings with this machine's core counts as the defaults and limits."""
    settings = resolve_settings(cli, ini, cores=usable_cores())
    if settings.enabled:
        # A missing or broken model is a usage error, found before any test runs.
        read_gguf_info(settings.model.value or str(embedded_model_path()))
    return settings


class AxionSession:
    """Holds one run's state; stored in ``config.stash``, never in a module global."""

    def __init__(self, settings: Settings, *, baselines_root: Path, progress: ProgressCallback | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.settings = settings
        self.baselines_root = baselines_root
        self.measurements: list[Measurement] = []
        self.outcomes: dict[str, SloOutcome] = {}
        self.baseline_verdicts: dict[str, BaselineVerdict] = {}
        self.test_phases: list[tuple[str, str]] = []   # (nodeid, outcome) of every phase that measured
        self.progress = progress
        self._sleep = sleep
        self._loaded: LoadedModel | None = None
        self._reading: ReadingSpeed | None = None
        self._gate: BaselineGate | None = None
        self.refresh_result: refreshing.RefreshResult | None = None
        self.shape_verdicts: dict[str, list[ShapeVerdict]] = {}
        self.ab_pairs: list[tuple[Measurement, Measurement]] = []   # (A, B) of every metric, A/B session only
        self.ab_verdicts: dict[str, PairedComparison] = {}
        self.capacity_searches: dict[str, CapacitySearch] = {}
        self.environment: tuple[str, ...] = ()   # warnings about the machine, read when measuring starts
        self._adopted: RunRecord | None = None   # the measuring worker's run, in an xdist controller
        self._build: tuple[dict[str, str], tuple[str, ...]] | None = None
        self.started = time.monotonic()   # the session's start: how long run 1 of a refresh took

    @property
    def loaded(self) -> LoadedModel | None:
        """The loaded model, or None if no test has needed it (yet)."""
        return self._loaded

    def load(self) -> LoadedModel:
        """Load the model on first use; later calls return the same instance."""
        if self._loaded is None:
            # Read before the model loads: the load itself would raise the load average.
            self.environment = tuple(environment_warnings(
                threads=self.settings.threads.value, physical_cores=self.settings.cores.physical,
                logical_cores=self.settings.cores.logical, other_cpus=other_processes_cpus()))
            self._loaded = load_model(self.settings)
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
        def promised_per_user() -> tuple[float, str] | None:
            if spec is None or spec.per_user_tps is None:
                return None
            if spec.per_user_tps == READING:
                reading = self.reading_speed()
                return reading.tokens_per_s, reading.label
            return float(spec.per_user_tps), f"{float(spec.per_user_tps):g} t/s"

        return Axion(self.load(), nodeid=nodeid, repetitions=self.settings.repetitions.value,
                     record=self.measurements.append, progress=self.progress, record_pair=self._record_pair,
                     promised_per_user=promised_per_user, record_capacity=self._record_capacity)

    def _record_capacity(self, search: CapacitySearch) -> None:
        self.capacity_searches[search.nodeid] = search

    def _record_pair(self, baseline: dict[str, Measurement], current: dict[str, Measurement]) -> None:
        self.ab_pairs += [(baseline[metric], current[metric]) for metric in current]

    @property
    def ab_sides(self) -> tuple[ModelFacts, ModelFacts] | None:
        """(A, B) build facts of an A/B session once its workers run; None otherwise."""
        engine = self._loaded.engine if self._loaded is not None else None
        return (engine.baseline.facts, engine.current.facts) if isinstance(engine, PairedEngine) else None

    def check_ab(self, nodeid: str, wait_message: Callable[[str], None] | None = None) -> list[PairedComparison]:
        """Paired verdicts of the test's measurements in an A/B session (empty otherwise).

        A regression is measured again in fresh worker processes, up to --axion-confirm times, and
        stands only if every attempt regresses; otherwise it is inconclusive, with every attempt shown.
        """
        settings = self.settings
        rounds, tolerance = settings.ab_rounds.value, settings.ab_tolerance.value
        verdicts = [compare_paired(a, b, rounds=rounds, tolerance=tolerance)
                    for a, b in self.ab_pairs if b.nodeid == nodeid]
        engine = self._loaded.engine if self._loaded is not None else None
        fresh: dict[tuple[str, int, int, int], dict[str, tuple[Measurement, Measurement]]] = {}
        for attempt in range(settings.confirm.value):
            suspects = [i for i, v in enumerate(verdicts) if v.verdict == REGRESSED and len(v.attempts) == attempt]
            if not suspects or not isinstance(engine, PairedEngine):
                break
            if wait_message is not None:
                wait_message(f"{verdicts[suspects[0]].message}; measuring again in fresh worker processes "
                             f"(attempt {attempt + 2} of {settings.confirm.value + 1})")
            engine.restart()
            fresh.clear()
            for i in suspects:
                b = next(b for _, b in self.ab_pairs if b.key == verdicts[i].key)
                workload = workload_of(b)
                if workload not in fresh:
                    kind, shape = workload_request(b)
                    try:
                        paired = engine.measure_pair(kind, **shape)
                    except EngineError as err:
                        raise MeasurementError(f"{nodeid}: measuring again in fresh processes: {err}") from None
                    again_a = measurements_of(paired.baseline, nodeid=b.nodeid, threads=b.threads)
                    again_b = measurements_of(paired.current, nodeid=b.nodeid, threads=b.threads)
                    fresh[workload] = {metric: (again_a[metric], again_b[metric]) for metric in again_b}
                again = compare_paired(*fresh[workload][b.metric], rounds=rounds, tolerance=tolerance)
                verdicts[i] = verdicts[i].with_attempt(again)
        self.ab_verdicts.update((v.key, v) for v in verdicts)
        return verdicts

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

    def check_slos(self, nodeid: str, spec: SloSpec) -> SloOutcome:
        """Judge the test's declared promises against what it measured; kept for the reports."""
        measured = [m for m in self.measurements if m.nodeid == nodeid]
        outcome = evaluate_slos(spec, measured, nodeid=nodeid, reading=self.reading_speed())
        self.outcomes[nodeid] = outcome
        return outcome

    @property
    def gate(self) -> BaselineGate | None:
        """This machine's baseline (read once, after the model is loaded); None when not comparing."""
        if self._gate is None and self.settings.compare_baselines and self._loaded is not None:
            loaded, settings = self._loaded, self.settings
            gate_settings = GateSettings(estimator=settings.estimator.value, confirm=settings.confirm.value,
                                         spacing_s=settings.confirm_spacing_s.value,
                                         default_tolerance=settings.tolerance.value)
            extra = {} if self._sleep is None else {"sleep": self._sleep}
            self._gate = BaselineGate(self.baselines_root, hardware=loaded.hardware, model=loaded.model,
                                      threads=loaded.threads, settings=gate_settings, **extra)
        return self._gate

    def check_features(self, required: Sequence[str], *, source: str) -> None:
        """Stop before measuring when the llama.cpp build or the CPU lacks a required feature."""
        if not required:
            return
        if self._build is None:
            text = engine_system_info()
            self._build = (parse_system_info(text), collect_hardware(system_info=text).isa_features)
        info, isa = self._build
        missing = missing_features(required, system_info=info, isa_features=isa)
        if missing:
            raise SettingsError(missing_message(missing, source=source, system_info=info, isa_features=isa))

    def check_shape(self, nodeid: str, spec: SloSpec, wait_message: Callable[[str], None]) -> list[ShapeVerdict]:
        """Steadiness and scaling, each miss confirmed by measuring its group of cells again."""
        if spec.steady_within is None and spec.gen_scaling is None:
            return []
        settings, loaded = self.settings, self.load()
        attempts = 1 + settings.confirm.value

        def measure_again(missed: ShapeCheck, cells: list[Measurement]) -> dict[str, Measurement]:
            wait_message(f"{missed.message}; measuring again after a {settings.confirm_spacing_s.value:.0f} s "
                         f"pause (up to {attempts} attempts)")
            (self._sleep or time.sleep)(settings.confirm_spacing_s.value)
            return remeasure(loaded, cells, repetitions=settings.repetitions.value, progress=self.progress)

        verdicts = confirm_shape(nodeid, [m for m in self.measurements if m.nodeid == nodeid],
                                 steady_within=spec.steady_within, gen_scaling=spec.gen_scaling,
                                 attempts=attempts, measure_again=measure_again)
        self.shape_verdicts[nodeid] = verdicts
        return verdicts

    def read_baseline(self) -> None:
        """Read this machine's baseline now (if comparing), so that a corrupt file is reported first."""
        _ = self.gate

    def check_baselines(self, nodeid: str, tolerance: float | None,
                        wait_message: Callable[[str], None]) -> list[BaselineVerdict]:
        """Compare the test's measurements with the stored baseline, confirming regressions first."""
        gate = self.gate
        measured = [m for m in self.measurements if m.nodeid == nodeid]
        if gate is None or not measured:
            return []
        loaded = self.load()
        verdicts = gate.judge(measured, tolerance=tolerance, wait_message=wait_message,
                              remeasure=lambda ms: remeasure(loaded, ms, repetitions=self.settings.repetitions.value,
                                                             progress=self.progress))
        self.baseline_verdicts.update((v.key, v) for v in verdicts)
        return verdicts

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
        if settings.runs.value > 1:
            progress(refreshing.plan_line(runs=settings.runs.value, first_run_s=first_run_s,
                                          spacing_s=settings.run_spacing_s.value))
        with tempfile.TemporaryDirectory(prefix="axion-refresh-") as workdir:
            runs += refreshing.run_children(parent_args, runs=settings.runs.value,
                                            spacing_s=settings.run_spacing_s.value,
                                            timeout_s=refreshing.child_timeout_s(first_run_s), workdir=Path(workdir),
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
        update_baseline(path, lambda current: refreshing.combine(
            current, entries, hardware_id=record.hardware.hardware_id, model_label=record.model.label,
            provenance=provenance))
        result.written = True
        return result

    # -- the run as a whole; under xdist, carried from the measuring worker to the controller ----------

    def run_record(self) -> RunRecord | None:
        """Everything this run measured and judged, or None if nothing was measured."""
        if self._adopted is not None:
            return dataclasses.replace(self._adopted, test_outcomes=self.test_outcomes())
        loaded = self._loaded
        if loaded is None or not self.measurements:
            return None
        return RunRecord(model=loaded.model, hardware=loaded.hardware, threads=loaded.threads,
                         repetitions=self.settings.repetitions.value, load_seconds=loaded.load_seconds,
                         reading=self.reading_speed(), measurements=self.measurements, outcomes=self.outcomes,
                         baseline=self.baseline_status(), baseline_verdicts=self.baseline_verdicts,
                         shape_verdicts=self.shape_verdicts, ab=self._ab_session(),
                         test_outcomes=self.test_outcomes(), environment=self.environment,
                         capacity_searches=self.capacity_searches, warm_up=loaded.warm_up)

    def _ab_session(self) -> AbSession | None:
        sides, settings = self.ab_sides, self.settings
        if sides is None or settings.ab_baseline.value is None:
            return None
        return AbSession(baseline=AbSide(settings.ab_baseline.value, sides[0]),
                         current=AbSide(sys.executable, sides[1]), rounds=settings.ab_rounds.value,
                         tolerance=settings.ab_tolerance.value, verdicts=self.ab_verdicts)

    def export_state(self) -> bytes | None:
        """An xdist worker's run for its controller (pickle: both ends are this same installation)."""
        record = self.run_record()
        if record is None:
            return None
        return pickle.dumps({"record": record, "phases": self.test_phases})

    def adopt_state(self, payload: bytes) -> None:
        """Take over a worker's run; each further worker's run is merged in, never dropped."""
        state = pickle.loads(payload)  # from our own worker process, the same installation
        record: RunRecord = state["record"]
        if self._adopted is not None:
            first = self._adopted
            record = dataclasses.replace(
                first, measurements=[*first.measurements, *record.measurements],
                outcomes={**first.outcomes, **record.outcomes},
                baseline_verdicts={**first.baseline_verdicts, **record.baseline_verdicts},
                shape_verdicts={**first.shape_verdicts, **record.shape_verdicts},
                capacity_searches={**first.capacity_searches, **record.capacity_searches},
                load_seconds=max(first.load_seconds, record.load_seconds),
                environment=tuple(dict.fromkeys([*first.environment, *record.environment])))
        self._adopted = record
        self.test_phases += state["phases"]

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded.close()
            self._loaded = None
