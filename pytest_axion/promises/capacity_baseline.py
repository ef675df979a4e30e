"""The stored capacity promise: a test's capacity search (``axion.capacity()``) serves at least what this machine's
stored baseline served, within the band.

A refresh stores each run's bracket of the search; its floor is the most load that every run met. This run's search
regressed when the most it met lies below the floor less the tolerance and it failed a level at or below the floor:
it could not serve what the baseline served in every run, by more than the band. The failed level of most load at
or below the floor (users; a cell of the test) is measured again in a fresh worker through the one confirm
procedure: a fresh attempt whose share of requests meeting every promise reaches the attainment clears it; one
whose interval lies below the attainment is a miss; anything between is unsure. A level that was itself
inconclusive is unsure from the start. A baseline recorded under other promises is not compared (shown only). A
search by rate is compared the same way, but an open-loop level is not measured again alone, so a miss there stays
inconclusive. Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_axion.promises.baseline import no_baseline
from pytest_axion.promises.capacity import RequestPromise, judge_level
from pytest_axion.promises.marker import MarkerKey, PromiseContext, SloSpec
from pytest_axion.promises.verdict import INCONCLUSIVE, INFO, MET, MISSED, UNSURE, Judgement, Reading
from pytest_axion.records import CapacityLevel, CapacitySearch, Measurement, requests_from_measurements
from pytest_axion.store.baselines import CapacityEntry, capacity_key

if TYPE_CHECKING:
    from pytest_axion.store.gate import BaselineGate

KIND = "capacity_baseline"
KIND_ORDER = 41
MARKER_KEYS: tuple[MarkerKey, ...] = ()   # the baseline's own ``tolerance`` applies


def request_promises(search: CapacitySearch) -> list[RequestPromise]:
    """The per-request promises the search kept, from its record."""
    return [RequestPromise(key, limit, percentile=search.itl_percentile if key == "itl_ms" else None)
            for key, limit in search.limits]


def regression_limit(entry: CapacityEntry, tolerance: float) -> float:
    """The load the search's best level must still reach: the baseline's floor less the tolerance."""
    return entry.floor * (1 - tolerance)


@dataclass
class CapacityBaselinePromise:
    """One test's capacity search at least as high as the stored baseline's floor, within the band. It keeps the
    cell of the level that shows a regression (from the first attempt) to read it again in each confirming one."""

    gate: BaselineGate
    search: CapacitySearch
    tolerance: float
    require_baseline: bool = False
    _attempts: int = field(default=0, init=False, repr=False, compare=False)
    _cell: dict[str, Measurement] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def key(self) -> str:
        s = self.search
        return capacity_key(s.nodeid, by=s.by, n_prompt=s.n_prompt, n_gen=s.n_gen, threads=self.gate.threads)

    def judge(self, measurements: Sequence[Measurement]) -> list[Judgement]:
        self._attempts += 1
        search, gate = self.search, self.gate
        label = f"capacity ({search.service_level}) vs baseline"
        entry = gate.baseline.capacities.get(self.key) if gate.baseline else None
        if entry is None:
            return [no_baseline(gate, "capacity", name="capacity", kind=KIND, label=label, involved=(),
                                required=self.require_baseline)]
        if entry.service_level != search.service_level or entry.attainment != search.attainment:
            reading = Reading(status=MET, figure="-", message=(
                f"capacity: the baseline's search kept other promises ({entry.service_level} at "
                f"{entry.attainment:.0%}; this one: {search.service_level} at {search.attainment:.0%}): not compared; "
                "refresh the baseline to record this one"), detail={"word": "other-promises"})
            return [Judgement(name="capacity", kind=KIND, label=label, involved=(), reading=reading, settled=INFO)]
        if self._attempts == 1:
            reading = self._first(entry)
            if reading.status != MET:
                self._cell = self._failed_cell(entry, measurements)
                reading = dataclasses.replace(reading, other_cpus=_other_cpus(self._cell))
        else:
            reading = self._confirming(entry, self._failed_cell(entry, measurements))
        involved = tuple(m.key for m in self._cell.values())
        # nothing to measure again (an open-loop level): a miss cannot be confirmed, so it cannot fail
        settled = INCONCLUSIVE if reading.status != MET and not involved else None
        return [Judgement(name="capacity", kind=KIND, label=label, involved=involved, reading=reading,
                          settled=settled)]

    def _evidence(self, entry: CapacityEntry) -> CapacityLevel | None:
        """The level that shows the regression, if any. The search regressed when the most it met lies below the
        band (the floor less the tolerance) and it failed a level the baseline met in every run; the evidence is
        the failed level of most load at or below the floor: the nearest to what the baseline served, so the
        surest to miss again if the deployment really serves fewer users (the first level not met lies at the
        capacity's edge, where a fresh attempt can pass by chance; measured here, a build at half speed passed its
        confirmation so)."""
        if entry.floor <= 0 or self.search.most_passing >= regression_limit(entry, self.tolerance):
            return None
        failed = [level for level in self.search.levels if level.status != MET and level.load <= entry.floor]
        return max(failed, key=lambda level: level.load, default=None)

    def _failed_cell(self, entry: CapacityEntry, measurements: Sequence[Measurement]) -> dict[str, Measurement]:
        """The measurements of the level that shows the regression (a number of users), as they stand now."""
        s, level = self.search, self._evidence(entry)
        if level is None or s.by != "users":
            return {}
        return {m.metric: m for m in measurements if m.nodeid == s.nodeid and m.batch_size == level.users
                and m.n_prompt == s.n_prompt and m.n_gen == s.n_gen}

    def _first(self, entry: CapacityEntry) -> Reading:
        """The search as measured against the stored floor."""
        search = self.search
        floor, limit = entry.floor, regression_limit(entry, self.tolerance)
        unit = "requests/s" if search.by == "rate" else "users"
        high = search.fewest_failing
        stored = f"baseline: every run met {floor:g} {unit} (runs {entry.runs_text()}), band {self.tolerance:.0%}"
        bracket = f"{search.most_passing:g}/{'+' if high is None else f'{high:g}'} {unit}"
        detail: dict[str, Any] = {"word": "ok", "floor": floor, "limit": limit, "most_passing": search.most_passing,
                                  "fewest_failing": high, "baseline_runs": [list(run) for run in entry.runs],
                                  "tolerance": self.tolerance}
        level = self._evidence(entry)
        if level is None:
            return Reading(status=MET, figure=bracket, message=f"capacity {bracket} (met/not met): ok; {stored}",
                           detail=detail)
        status = MISSED if level.status == MISSED else UNSURE
        why = level.worst or level.inconclusive_text()
        message = (f"capacity regressed: {bracket} (met/not met), below the {limit:g} {unit} the band requires; "
                   f"{level.load_text}, which every baseline run served, not met ({why}); {stored}")
        if search.by == "rate":
            message += "; an open-loop level is not measured again alone, so this stays unconfirmed"
        return Reading(status=status, figure=bracket, message=message,
                       shortfall=attainment_shortfall(level, search.attainment),
                       detail={**detail, "word": "regressed" if status == MISSED else "unsure",
                               "evidence": level.load})

    def _confirming(self, entry: CapacityEntry, cell: dict[str, Measurement]) -> Reading:
        """The level that showed the regression, measured again: met when its share alone reaches the attainment,
        missed when its whole interval lies below it, else unsure."""
        search, level = self.search, self._evidence(entry)
        assert level is not None
        again = judge_level(level.users, requests_from_measurements(cell), request_promises(search),
                            search.attainment, n_gen=search.n_gen)
        share = again.attainment
        status = MET if share >= search.attainment else MISSED if again.high < search.attainment else UNSURE
        message = (f"{level.load_text} measured again: {again.meeting} of {again.requests} requests met every "
                   f"promise ({share:.0%}; interval {again.low:.0%}-{again.high:.0%}) against "
                   f"{search.attainment:.0%}")
        return Reading(status=status, figure=f"{level.load_text} {share:.0%}", message=message,
                       shortfall=attainment_shortfall(again, search.attainment),
                       other_cpus=_other_cpus(cell),
                       detail={"word": {MET: "ok", MISSED: "regressed"}.get(status, "unsure"), "share": share,
                               "interval": [again.low, again.high], "limit": regression_limit(entry, self.tolerance)})


def _other_cpus(cell: dict[str, Measurement]) -> float | None:
    """What other processes took while a contended cell was measured (None: not contended)."""
    contended = [m.other_cpus for m in cell.values() if m.contended and m.other_cpus is not None]
    return max(contended) if contended else None


def attainment_shortfall(level: CapacityLevel, attainment: float) -> float:
    """How far the level's share of requests meeting every promise lies below the target attainment, relative."""
    return max(0.0, attainment - level.attainment) / attainment


def promises(spec: SloSpec | None, context: PromiseContext) -> list[Any]:
    if context.gate is None or context.capacity is None:
        return []
    tolerance = spec.tolerance if spec is not None and spec.tolerance is not None else context.default_tolerance
    return [CapacityBaselinePromise(context.gate, context.capacity, tolerance, context.require_baseline)]
