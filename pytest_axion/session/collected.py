"""What the run's tests measured and judged, in the order they did it: filled by the harness and the judging,
read by the run record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pytest_axion.promises.verdict import Verdict
from pytest_axion.records import CapacitySearch, Measurement, RateLevel
from pytest_axion.store import refresh as refreshing

_PHASE_RANK = {"passed": 0, "skipped": 1, "failed": 2}


@dataclass
class Collected:
    measurements: list[Measurement] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)   # every promise of every test, after its confirmations
    test_phases: list[tuple[str, str]] = field(default_factory=list)   # (nodeid, outcome) of every phase
    # (A, B) of every metric, one sample per round each: A/B session only
    ab_pairs: list[tuple[Measurement, Measurement]] = field(default_factory=list)
    capacity_searches: dict[str, CapacitySearch] = field(default_factory=dict)
    rate_levels: dict[str, tuple[RateLevel, ...]] = field(default_factory=dict)   # axion.rate() runs by test

    def of_test(self, nodeid: str) -> list[Measurement]:
        return [m for m in self.measurements if m.nodeid == nodeid]

    def record_capacity(self, search: CapacitySearch) -> None:
        self.capacity_searches[search.nodeid] = search

    def record_rate(self, level: RateLevel) -> None:
        self.rate_levels[level.nodeid] = (*self.rate_levels.get(level.nodeid, ()), level)

    def record_pair(self, baseline: dict[str, Measurement], current: dict[str, Measurement]) -> None:
        # a metric one side lacks (prompt_tps where only one server reports its timings) is not paired
        self.ab_pairs += [(baseline[metric], current[metric]) for metric in current if metric in baseline]

    def ab_side_of(self, nodeid: str) -> dict[str, tuple[Measurement, Measurement]]:
        """One test's A/B pairs by the current side's key; a workload measured in more than one go (a capacity
        level measured again) has its rounds pooled, in order, as the search pools them."""
        pairs: dict[str, tuple[Measurement, Measurement]] = {}
        for a, b in self.ab_pairs:
            if b.nodeid != nodeid:
                continue
            if b.key in pairs:
                earlier_a, earlier_b = pairs[b.key]
                a, b = _pooled(earlier_a, a), _pooled(earlier_b, b)
            pairs[b.key] = (a, b)
        return pairs

    def test_outcomes(self) -> dict[str, str]:
        """Per test: failed if any phase failed, else skipped if any was skipped, else passed."""
        outcomes: dict[str, str] = {}
        for nodeid, outcome in self.test_phases:
            if _PHASE_RANK[outcome] >= _PHASE_RANK[outcomes.get(nodeid, "passed")]:
                outcomes[nodeid] = outcome
        return outcomes

    def passed_nodeids(self) -> frozenset[str]:
        return refreshing.passed_nodeids(self.test_phases)


def _pooled(earlier: Measurement, later: Measurement) -> Measurement:
    others = [m.other_cpus for m in (earlier, later) if m.other_cpus is not None]
    return dataclasses.replace(earlier, samples=earlier.samples + later.samples,
                               other_cpus=max(others) if others else None)
