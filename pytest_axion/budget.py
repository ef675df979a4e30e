"""A test's measuring, bounded by time rather than by a fixed count (``--axion-budget``).

A fast model measures every cell with ``--axion-repetitions`` repetitions and confirms every suspect, within
seconds. A slow one (a proxy of a 70B model, 41 prompt tokens/s on 2 cores) would take the better part of an
hour at the same counts, so each test may spend ``budget_s`` seconds measuring (timed repetitions and warm-ups,
its confirming attempts included; the pauses between attempts are waiting, not measuring):

- a cell gets its repetitions, but stops after :data:`MIN_REPETITIONS` once one more would take it beyond its
  share, ``budget_s / CELLS_PER_BUDGET`` (the reference suite's largest test has 8 cells);
- an ``axion.capacity()`` search ends where the test's budget does, if its own (``budget_s=``) lasts longer;
- a confirming attempt is made only when what it measures again (its suspects' workloads, as long as they took
  last time) still fits the test's budget; a promise left unconfirmed says so, and ends inconclusive unless its
  attempts already settle it. For suspects only ever measured while other processes competed, the pause before
  the attempt counts as well: it waits for the machine, not for a slow spell to show itself, and a test must
  not spend minutes waiting on a machine that other work keeps busy (a fast model's pauses fit its budget).

Pure: the harness times, the worker stops, the judging asks.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

DEFAULT_BUDGET_S = 120.0
CELLS_PER_BUDGET = 8
MIN_REPETITIONS = 3   # a median and its spread need three (the worker has its own copy: it imports nothing of ours)


def cell_seconds(budget_s: float) -> float | None:
    """The seconds one cell's timed repetitions may take; None: no budget (0 turns it off)."""
    return budget_s / CELLS_PER_BUDGET if budget_s > 0 else None


@dataclass
class MeasuringClock:
    """Seconds of measuring, by test and by workload (the last time each workload was measured)."""

    budget_s: float = DEFAULT_BUDGET_S
    by_test: dict[str, float] = field(default_factory=dict)
    by_workload: dict[Hashable, float] = field(default_factory=dict)
    waited: dict[str, float] = field(default_factory=dict)   # pauses that count: waiting for other processes

    def add(self, nodeid: str, workload: Hashable, seconds: float) -> None:
        self.by_test[nodeid] = self.by_test.get(nodeid, 0.0) + seconds
        self.by_workload[workload] = seconds

    def wait(self, nodeid: str, seconds: float) -> None:
        """A pause of ``nodeid``'s that counts against its budget (see the module's doc)."""
        self.waited[nodeid] = self.waited.get(nodeid, 0.0) + seconds

    def spent_s(self, nodeid: str) -> float:
        return self.by_test.get(nodeid, 0.0)

    def left_s(self, nodeid: str) -> float | None:
        """Seconds of measuring ``nodeid`` has left (0 at most spent); None: no budget."""
        return max(self.budget_s - self.spent_s(nodeid), 0.0) if self.budget_s > 0 else None

    def again_s(self, workloads: Iterable[Hashable]) -> float:
        """What measuring these workloads again would take: as long as each took last time."""
        return sum(self.by_workload.get(w, 0.0) for w in set(workloads))

    def shortfall(self, nodeid: str, workloads: Iterable[Hashable], *, waiting_s: float = 0.0) -> str | None:
        """Why ``nodeid`` cannot measure ``workloads`` again within its budget, or None when it can (or no budget);
        ``waiting_s``: a pause before it that counts too (see the module's doc)."""
        if self.budget_s <= 0:
            return None
        spent, again, waited = self.spent_s(nodeid), self.again_s(workloads), self.waited.get(nodeid, 0.0)
        if spent + waited + waiting_s + again <= self.budget_s:
            return None
        waiting = f"waiting {waiting_s:.0f} s for other processes to finish and then " if waiting_s else ""
        also = f" (and the {waited:.0f} s it waited for other processes)" if waited else ""
        return (f"{waiting}measuring it again would take about {waiting_s + again:.0f} s on top of the {spent:.0f} s "
                f"this test measured{also}, beyond its budget of {self.budget_s:g} s (--axion-budget; 0 turns it off)")
