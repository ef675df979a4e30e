"""The paired A/B gate on capacity: B serves every level of a test's capacity search that A serves.

In an A/B session every level of ``axion.capacity()`` is measured on both sides in alternating rounds, so A and
B meet the same number of users through the same machine state. Each side's requests at a level are judged by the
search's promises (:func:`pytest_axion.promises.capacity.judge_level`): the share that met every promise, and the
goodput (requests/s and tokens/s that did). B regressed at a level that A served (its share reached the
attainment) while B's whole interval lies below the attainment. The level of the largest such gap is measured
again on both sides in fresh workers by the one confirm procedure; a level where B's share reaches the attainment,
or A's does not, is met; anything else unsure. Every level's goodput on both sides is in the reading. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_axion.figures import figure
from pytest_axion.promises.capacity import judge_level
from pytest_axion.promises.capacity_baseline import attainment_shortfall, request_promises
from pytest_axion.promises.marker import MarkerKey, PromiseContext, SloSpec
from pytest_axion.promises.verdict import MET, MISSED, UNSURE, Judgement, Reading
from pytest_axion.records import CapacityLevel, CapacitySearch, Measurement, requests_from_measurements

KIND = "ab_capacity"
KIND_ORDER = 51
MARKER_KEYS: tuple[MarkerKey, ...] = ()   # switched on by --axion-ab-baseline, like the A/B gate


@dataclass(frozen=True)
class LevelPair:
    """One level of the search, judged on each side's requests of the same rounds."""

    users: int
    baseline: CapacityLevel
    current: CapacityLevel
    keys: tuple[str, ...]        # B's measurement keys of the level's cell (what a confirming attempt measures)

    @property
    def baseline_share(self) -> float:
        return self.baseline.attainment

    @property
    def current_share(self) -> float:
        return self.current.attainment

    def status(self, attainment: float) -> str:
        """Missed: A served it and B's whole interval lies below the attainment; met: B served it, or A did not."""
        if self.current_share >= attainment or self.baseline_share < attainment:
            return MET
        return MISSED if self.current.high < attainment else UNSURE

    def text(self) -> str:
        """``8 users: A 100% (goodput 3.1 requests/s), B 40% (1.2)``."""
        return (f"{self.current.load_text}: A {self.baseline_share:.0%} (goodput {_goodput(self.baseline)} "
                f"requests/s), B {self.current_share:.0%} ({_goodput(self.current)})")


def _goodput(level: CapacityLevel) -> str:
    if level.goodput_rps is None:
        return "-"
    return "0" if level.goodput_rps == 0 else figure(level.goodput_rps)


Pairs = Mapping[str, tuple[Measurement, Measurement]]   # (A, B) by B's key, one sample per round each


def level_pairs(search: CapacitySearch, rounds_by_key: Pairs) -> list[LevelPair]:
    """Each level of the search that both sides measured, judged on each side's requests (by users)."""
    promises = request_promises(search)
    cells: dict[int, dict[str, tuple[Measurement, Measurement]]] = {}
    for a, b in rounds_by_key.values():
        if b.nodeid == search.nodeid and b.n_prompt == search.n_prompt and b.n_gen == search.n_gen:
            cells.setdefault(b.batch_size, {})[b.metric] = (a, b)
    found = []
    for level in sorted(search.levels, key=lambda lv: lv.users):
        cell = cells.get(level.users)
        if not cell or "ttft_ms" not in cell:
            continue
        sides = [judge_level(level.users, requests_from_measurements({m: pair[i] for m, pair in cell.items()}),
                             promises, search.attainment, n_gen=search.n_gen) for i in (0, 1)]
        found.append(LevelPair(level.users, sides[0], sides[1], tuple(b.key for _, b in cell.values())))
    return found


@dataclass
class AbCapacityPromise:
    """B serves every level of the test's capacity search that A serves (the search's promises, its attainment)."""

    search: CapacitySearch
    rounds_by_key: Pairs   # refreshed by a confirming attempt
    _evidence: int | None = field(default=None, init=False, repr=False)   # users of the level that fell short

    def judge(self, measurements: Sequence[Measurement]) -> list[Judgement]:
        attainment = self.search.attainment
        pairs = level_pairs(self.search, self.rounds_by_key)
        label = f"capacity ({self.search.service_level}) B vs A"
        if not pairs:
            return []
        if self._evidence is None:   # the first attempt: the level where B falls furthest short of A
            lost = [p for p in pairs if p.status(attainment) != MET]
            if lost:
                self._evidence = max(lost, key=lambda p: p.baseline_share - p.current_share).users
        worst = next((p for p in pairs if p.users == self._evidence), None)
        status = worst.status(attainment) if worst is not None else MET
        every = "; ".join(p.text() for p in pairs)
        if worst is None:
            message = f"capacity B vs A at {attainment:.0%} of requests: B serves every level A serves ({every})"
            figure_text = f"{len(pairs)} level(s) ok"
        else:
            message = (f"capacity B vs A at {attainment:.0%} of requests: {worst.text()}"
                       + (": B does not serve a level A serves" if status != MET else ": B serves it now")
                       + f" (every level: {every})")
            figure_text = f"{worst.current.load_text} B {worst.current_share:.0%}"
        detail: dict[str, Any] = {"attainment": attainment, "levels": [
            {"users": p.users, "baseline_share": p.baseline_share, "current_share": p.current_share,
             "baseline_goodput_rps": p.baseline.goodput_rps, "current_goodput_rps": p.current.goodput_rps,
             "baseline_goodput_tps": p.baseline.goodput_tps, "current_goodput_tps": p.current.goodput_tps}
            for p in pairs]}
        reading = Reading(status=status, figure=figure_text, message=message,
                          shortfall=0.0 if worst is None else attainment_shortfall(worst.current, attainment),
                          detail=detail)
        return [Judgement(name="capacity", kind=KIND, label=label, involved=worst.keys if worst else (),
                          reading=reading)]


def promises(spec: SloSpec | None, context: PromiseContext) -> list[Any]:
    search = context.capacity
    if context.ab_baseline_side is None or search is None or search.by != "users":
        return []
    return [AbCapacityPromise(search, context.ab_baseline_side)]
