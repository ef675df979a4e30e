"""The run record: everything a run measured and judged, assembled once for every report; under xdist carried from
each measuring worker to the controller as builtin types and merged there."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_axion.engines.base import Engine
from pytest_axion.errors import AxionError
from pytest_axion.proxy.predict import PredictionSet, predict_run
from pytest_axion.report.record import AbSession, AbSide, RunRecord
from pytest_axion.session.collected import Collected
from pytest_axion.session.judging import Judging
from pytest_axion.session.resources import RunResources
from pytest_axion.store.sizing_cache import Sizing
from pytest_axion.transport import from_builtin, to_builtin


class RunAssembly:
    """Builds the run record from what the run collected, found and judged; in an xdist controller, from the
    workers' records instead."""

    def __init__(self, resources: RunResources, judging: Judging, collected: Collected) -> None:
        self.resources = resources
        self.judging = judging
        self.collected = collected
        self.settings = resources.settings
        self._adopted: RunRecord | None = None   # the measuring workers' run, in an xdist controller
        self._predicted: tuple[int, PredictionSet] | None = None   # (measurements it was made from, prediction)

    def run_record(self, *, predict: bool = True) -> RunRecord | None:
        """Everything this run measured and judged, or None if nothing was measured (``predict``: with the
        full model's predicted figures, when --axion-predict-from asks for them)."""
        collected = self.collected
        if self._adopted is not None:
            # made here from every worker's measurements: a worker's own prediction has only its rows
            return dataclasses.replace(self._adopted, test_outcomes=collected.test_outcomes(),
                                       prediction=self._prediction(self._adopted, predict))
        resources, deployment = self.resources, self.resources.deployment
        loaded = resources.loaded
        if loaded is None or not (collected.measurements or collected.rate_levels):
            return None
        record = RunRecord(model=loaded.model, hardware=loaded.hardware, threads=loaded.threads,
                           repetitions=deployment.run_repetitions(self.settings.repetitions.value),
                           load_seconds=loaded.load_seconds, reading=resources.reading_speed(),
                           measurements=collected.measurements, verdicts=collected.verdicts,
                           baseline=self.judging.baseline_status(), ab=self._ab_session(loaded.engine),
                           test_outcomes=collected.test_outcomes(), environment=resources.environment,
                           capacity_searches=collected.capacity_searches, rate_levels=collected.rate_levels,
                           warm_up=loaded.warm_up, roofs=resources.report_roofs(),
                           roofs_source=resources.roofs_source or resources.roofs_missing,
                           served=deployment.describe(loaded.engine), deployment=deployment.kind,
                           # an endpoint's, or one replayed: the client knew neither the file nor the build
                           served_elsewhere=(deployment.endpoint is not None
                                             or loaded.model.architecture == "served"),
                           replay_of=deployment.replay or "", prompt_sizing=resources.sizing)
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

    def _ab_session(self, engine: Engine) -> AbSession | None:
        sides = self.resources.deployment.ab_sides(engine)
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
        return {"record": to_builtin(record), "phases": [list(phase) for phase in self.collected.test_phases]}

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
            record = _merged_records(self._adopted, record)
        self._adopted = record
        self.collected.test_phases += [(str(nodeid), str(outcome)) for nodeid, outcome in payload["phases"]]


def _merged_records(first: RunRecord, other: RunRecord) -> RunRecord:
    """Two xdist workers' runs as one: every measurement, verdict, search and warning of both."""
    return dataclasses.replace(
        first, measurements=[*first.measurements, *other.measurements],
        verdicts=[*first.verdicts, *other.verdicts],   # every kind, A/B included: one list
        ab=first.ab or other.ab, baseline=first.baseline or other.baseline,
        prompt_sizing=_merged_sizing(first.prompt_sizing, other.prompt_sizing),
        capacity_searches={**first.capacity_searches, **other.capacity_searches},
        rate_levels={**first.rate_levels, **other.rate_levels},
        roofs=first.roofs or other.roofs, roofs_source=first.roofs_source or other.roofs_source,
        load_seconds=max(first.load_seconds, other.load_seconds),
        environment=tuple(dict.fromkeys([*first.environment, *other.environment])))


def _merged_sizing(first: Sizing | None, other: Sizing | None) -> Sizing | None:
    """Two workers' prompt sizing: one figure, or both named when they sized apart (a busy sweep is not cached,
    so each worker sweeps on its own)."""
    if first is None or other is None or first.fill_tokens == other.fill_tokens:
        return first or other
    return dataclasses.replace(first, source=f"{first.source}; another xdist worker sized {other.fill_tokens} tokens "
                                             f"per call ({other.source}): pin --axion-prompt-sizing N")
