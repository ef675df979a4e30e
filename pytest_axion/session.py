"""One pytest run's axion state: settings, the model (loaded at most once), and what was measured."""

from __future__ import annotations

import os
from collections.abc import Mapping

import psutil

from pytest_axion.engine import ProgressCallback
from pytest_axion.gguf import read_gguf_info
from pytest_axion.harness import Axion, LoadedModel, load_model
from pytest_axion.model import embedded_model_path
from pytest_axion.reading import ReadingSpeed, resolve_reading_speed, sample_text, tokens_per_word
from pytest_axion.records import Measurement
from pytest_axion.settings import Settings, resolve_settings
from pytest_axion.slo import SloOutcome, SloSpec, evaluate_slos


def settings_for_this_machine(cli: Mapping[str, object], ini: Mapping[str, str]) -> Settings:
    """Resolve settings with this machine's core counts as the defaults and limits."""
    logical = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    settings = resolve_settings(cli, ini, physical_cores=physical, logical_cores=logical)
    if settings.enabled:
        # A missing or broken model is a usage error, found before any test runs.
        read_gguf_info(settings.model.value or str(embedded_model_path()))
    return settings


class AxionSession:
    """Holds one run's state; stored in ``config.stash``, never in a module global."""

    def __init__(self, settings: Settings, *, progress: ProgressCallback | None = None) -> None:
        self.settings = settings
        self.measurements: list[Measurement] = []
        self.outcomes: dict[str, SloOutcome] = {}
        self.progress = progress
        self._loaded: LoadedModel | None = None
        self._reading: ReadingSpeed | None = None

    @property
    def loaded(self) -> LoadedModel | None:
        """The loaded model, or None if no test has needed it (yet)."""
        return self._loaded

    def load(self) -> LoadedModel:
        """Load the model on first use; later calls return the same instance."""
        if self._loaded is None:
            self._loaded = load_model(self.settings)
        return self._loaded

    def harness(self, nodeid: str) -> Axion:
        return Axion(self.load(), nodeid=nodeid, repetitions=self.settings.repetitions.value,
                     record=self.measurements.append, progress=self.progress)

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

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded.close()
            self._loaded = None
