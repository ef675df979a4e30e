"""What one run finds or loads once, on first use: the model, the machine's state, the prompt sizing, the reading
speed and the roofs that efficiency is read against."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

from pytest_axion.engines.deployment import Deployment, LoadedModel
from pytest_axion.engines.worker import probe_build
from pytest_axion.errors import AxionError, MeasurementError, SettingsError
from pytest_axion.machine.costs import CostsError, model_costs
from pytest_axion.machine.cpu import parse_system_info
from pytest_axion.machine.environment import environment_warnings, other_processes_cpus
from pytest_axion.machine.features import missing_features, missing_message
from pytest_axion.machine.gguf import read_gguf_info
from pytest_axion.machine.hardware import collect_hardware
from pytest_axion.machine.limits import LimitsError
from pytest_axion.machine.model import embedded_model_path
from pytest_axion.machine.sizing import (
    FILLS_PER_BUDGET,
    SWEEP_REPETITIONS,
    TOKENS_PER_THREAD,
    fill_within_budget,
    gen_within_budget,
    prompt_fill_tokens,
    sweep_tokens,
)
from pytest_axion.promises.efficiency import EfficiencyFigure, Roofs, efficiency_figures
from pytest_axion.promises.reading import ReadingSpeed, resolve_reading_speed, sample_text, tokens_per_word
from pytest_axion.records import EngineError, Measurement, ProgressCallback, busy_limit
from pytest_axion.settings import Settings
from pytest_axion.store.limits_cache import limits_for
from pytest_axion.store.sizing_cache import Sizing, Sweep, prompt_speed_for, sizing_for


class RunResources:
    """The run's model (loaded at most once, restarted after a crash or for a confirming attempt) and what is
    found once about it and this machine."""

    def __init__(self, settings: Settings, *, progress: ProgressCallback | None = None) -> None:
        self.settings = settings
        self.deployment: Deployment = settings.deployment
        self.progress = progress
        self.environment: tuple[str, ...] = ()   # warnings about the machine, read when measuring starts
        self.roofs_source = ""            # "measured in this run" or "cached, measured ..."
        self.roofs_missing = ""           # why there are no efficiency figures, when they were wanted
        self._loaded: LoadedModel | None = None
        self._reading: ReadingSpeed | None = None
        self._sizing: Sizing | None = None
        self._sizing_failed: str | None = None   # why the prompt sweep failed, for every later test that asks
        self._build: tuple[dict[str, str], tuple[str, ...]] | None = None
        self._roofs: Roofs | None = None

    # -- the model ---------------------------------------------------------------------------------------

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

    def fresh_worker(self) -> LoadedModel:
        """The model in a fresh worker: a process keeps offsets of its own for life, so a miss must reproduce in a
        new one (load() already starts one when the last crashed, or none was started yet)."""
        running = self._loaded is not None and self._loaded.engine.alive
        loaded = self.load()
        if running:
            loaded.engine.restart()
        return loaded

    def free_model(self) -> None:
        """Stop the model's worker but keep what was loaded: a refresh's later runs get the machine alone."""
        if self._loaded is not None:
            self._loaded.engine.close()

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded.close()
            self._loaded = None

    # -- the machine -------------------------------------------------------------------------------------

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

    # -- found once per run ------------------------------------------------------------------------------

    @property
    def sizing(self) -> Sizing | None:
        """The prompt sizing, if a test has asked for it."""
        return self._sizing

    def prompt_sizing(self) -> Sizing:
        """The tokens per call of prompt workloads (``axion.fill_tokens``): found once per session."""
        if self._sizing is None:
            loaded, choice = self.load(), self.settings.prompt_sizing
            recorded = self.deployment.recorded_fill_tokens()
            if recorded is not None:
                self._sizing = Sizing(recorded, (), f"{recorded} tokens per call, as {self.deployment.replay} recorded",
                                      tokens_per_s=self.deployment.recorded_prompt_tps())
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
            if recorded is None:
                self._sizing = self._within_budget(self._sizing, loaded, pinned=isinstance(choice.value, int))
        return self._sizing

    def _within_budget(self, sizing: Sizing, loaded: LoadedModel, *, pinned: bool) -> Sizing:
        """The sizing with the model's prompt speed, its calls shortened (unless pinned) where the model is too
        slow for them to fit the test's budget."""
        budget_s, warm_up = self.settings.budget_s.value, loaded.warm_up
        measured = warm_up.tokens_per_s if warm_up is not None else None
        if budget_s <= 0 or warm_up is None or measured is None:
            return sizing
        speed, source = prompt_speed_for(loaded.hardware.hardware_id, loaded.model.sha256, loaded.threads,
                                         build=loaded.hardware.llama_cpp_python, measured_tps=measured,
                                         other_cpus=warm_up.other_cpus, busy_cpus=busy_limit(loaded.threads))
        fill = sizing.fill_tokens if pinned else fill_within_budget(sizing.fill_tokens, speed, budget_s)
        if fill == sizing.fill_tokens:
            return dataclasses.replace(sizing, tokens_per_s=speed)
        return Sizing(fill, sizing.points,
                      f"{sizing.source}, shortened from {sizing.fill_tokens}: the model's prompt speed, "
                      f"{speed:.0f} t/s ({source}), fits about {speed * budget_s / FILLS_PER_BUDGET:.0f} tokens a call "
                      f"in 1/{FILLS_PER_BUDGET} of the {budget_s:g} s budget (--axion-budget)", tokens_per_s=speed)

    def gen_tokens(self, longest: int) -> int:
        """``axion.gen_tokens(longest)``: a generation length that follows the model's prompt speed, as the
        prompt sizing does (a recording's speed in a replay)."""
        speed = self.prompt_sizing().tokens_per_s
        return gen_within_budget(longest, speed, self.settings.budget_s.value) if speed is not None else longest

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

    def report_roofs(self) -> Roofs | None:
        """The roofs for the reports: None when efficiency is off or could not be measured (said once)."""
        if self.settings.efficiency.value == "off" or self.roofs_missing or not self.deployment.measures:
            return None   # a replay's figures were measured elsewhere: this machine's limits do not bound them
        try:
            return self.roofs()
        except (LimitsError, AxionError) as err:
            self.roofs_missing = str(err)
            return None

    def efficiency_of(self, measurements: Sequence[Measurement]) -> list[EfficiencyFigure]:
        """The efficiency figures of one test's measurements (none when efficiency is off or its roofs could not be
        had)."""
        roofs = self.report_roofs() if measurements else None
        return efficiency_figures(measurements, roofs) if roofs is not None else []
