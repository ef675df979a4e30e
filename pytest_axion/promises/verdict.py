"""One verdict record for every kind of promise, and the one rule that turns attempts into an outcome.

Every kind of promise (a threshold, steadiness, scaling, the stored baseline, the A/B gate, latency,
whatever comes next) reads the measurements of one attempt into a :class:`Reading`: the promise was
``met``, ``missed``, or is ``unsure`` (beyond its limit, but the evidence is too weak to say so alone,
as a slowdown whose interval still reaches no change). :func:`decide` turns the readings of all
attempts into one of four outcomes, the same for every kind:

- ``pass``: the first attempt met the promise, or a fresh attempt met it after misses that no other
  process explains (a slower build cannot measure as fast as its baseline on demand; a machine in a
  slow spell can, a minute later);
- ``fail``: no attempt met it, and enough of them missed clearly (all of them when every reading
  is clear-cut; with ``--axion-confirm 2``, at least two clear misses, an unsure first attempt
  earning one attempt more), not because of other processes competing for the cores, and not a
  slowdown fading attempt by attempt;
- ``inconclusive``: misses measured while other processes took the CPUs (whether or not a fresh
  attempt then met the promise), a miss that faded attempt by attempt, attempts that disagree among
  themselves by more than the machine's own runs do while missing by little (``Reading.unsettled``:
  they prove the machine, not the code), or nothing ever clear;
- ``info``: shown, never enforced (a batch size beyond ``max_batch``, no baseline stored).

``--axion-strict`` fails ``inconclusive`` alike for every kind. Pure: no pytest, no engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from pytest_axion.comparison import NOT_SIGNIFICANT, REGRESSED

PASS, FAIL, INCONCLUSIVE, INFO = "pass", "fail", "inconclusive", "info"
OUTCOMES = (PASS, FAIL, INCONCLUSIVE, INFO)
MET, MISSED, UNSURE = "met", "missed", "unsure"


def reading_status(comparison_word: str) -> str:
    """A comparison's word as an attempt's status, for the baseline and A/B promises alike: regressed is a miss,
    slower but not significantly is unsure (measured again), anything else is met."""
    return {REGRESSED: MISSED, NOT_SIGNIFICANT: UNSURE}.get(comparison_word, MET)


@dataclass(frozen=True)
class Reading:
    """What one attempt's measurements say about one promise."""

    status: str                      # MET, MISSED or UNSURE
    figure: str                      # how the attempts list shows it: "0.78x", "spread 31%", "2128 ms"
    message: str                     # the sentence: what was measured against what
    shortfall: float = 0.0           # how far beyond the limit, relative (> 0: beyond); fading compares these
    other_cpus: float | None = None  # CPUs of other work while a contended cell of it ran; None: not contended
    busy: str | None = None          # what the samples suggest (a spread, a falling run), and the CPU measured
    unsettled: str | None = None     # why the attempts so far cannot settle it (they disagree); None: they can
    detail: Mapping[str, Any] = field(default_factory=dict)   # the kind's own figures, for reports

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "figure": self.figure, "message": self.message, "shortfall": self.shortfall,
                "other_cpus": self.other_cpus, "busy": self.busy, "unsettled": self.unsettled,
                "detail": dict(self.detail)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reading:
        return cls(status=data["status"], figure=data["figure"], message=data["message"],
                   shortfall=float(data.get("shortfall", 0.0)), other_cpus=data.get("other_cpus"),
                   busy=data.get("busy"), unsettled=data.get("unsettled"), detail=dict(data.get("detail") or {}))


@dataclass(frozen=True)
class Judgement:
    """One promise read in one attempt, with the measurements it rests on.

    ``name`` identifies the promise within its test across attempts; ``involved`` are the measurement
    keys whose workloads a confirming attempt measures again. ``settled`` is an outcome that needs no
    confirmation (``info`` for what is only shown, ``fail`` for a missing baseline that is required).
    """

    name: str
    kind: str
    label: str
    involved: tuple[str, ...]
    reading: Reading
    settled: str | None = None


@dataclass(frozen=True)
class Verdict:
    """A promise after its confirmations: the outcome, why, and every attempt's reading."""

    nodeid: str
    kind: str
    name: str
    label: str
    outcome: str
    reason: str
    readings: tuple[Reading, ...]
    involved: tuple[str, ...] = ()

    @property
    def first(self) -> Reading:
        return self.readings[0]

    @property
    def held(self) -> bool:
        """The promise held when last measured (a pass, or what is only shown and was met)."""
        return self.outcome == PASS or (self.outcome != FAIL and self.readings[-1].status == MET)

    @property
    def property_name(self) -> str:
        """Its JUnit property name: ``axion.<kind>.<name>``."""
        return f"axion.{self.kind}.{self.name}"

    def message(self) -> str:
        text = f"{self.outcome}: {self.first.message}"
        if len(self.readings) > 1:
            text += f"; attempts {', '.join(r.figure for r in self.readings)}"
        if self.reason:
            text += f"; {self.reason}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"nodeid": self.nodeid, "kind": self.kind, "name": self.name, "label": self.label,
                "outcome": self.outcome, "reason": self.reason, "message": self.message(),
                "involved": list(self.involved), "readings": [r.to_json() for r in self.readings]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(nodeid=data["nodeid"], kind=data["kind"], name=data["name"], label=data["label"],
                   outcome=data["outcome"], reason=data["reason"],
                   readings=tuple(Reading.from_json(r) for r in data["readings"]),
                   involved=tuple(data.get("involved", ())))


def required_misses(attempts: int) -> int:
    """Clear misses a fail needs: one per confirming attempt (``attempts - 1``), at least one.

    Replayed on recorded noise (tests/test_verdict.py), asking for fewer let slow spells of several
    minutes turn an unsure first attempt into false alarms, and asking for all of them let a real
    25% slowdown on a noisy machine slip into "inconclusive" too often.
    """
    return max(1, attempts - 1)


def wants_another_attempt(readings: Sequence[Reading], attempts: int) -> bool:
    """Measure again while no attempt has met the promise and it still lacks clear misses; an unsure first
    attempt (one noisy run proves nothing either way) earns one attempt more."""
    if not readings or any(r.status == MET for r in readings):
        return False
    misses = sum(r.status == MISSED for r in readings)
    extra = 1 if readings[0].status == UNSURE and attempts > 1 else 0
    return len(readings) < attempts + extra and misses < attempts


FADED_WITHIN = 0.10   # a fading miss ends within this fraction of the limit


def fading(readings: Sequence[Reading]) -> bool:
    """Each attempt less far beyond the limit than the one before, the last by less than half the first and
    within 10% of the limit.

    A change in the code does not wear off within minutes; a slow spell of the machine does. (A promise
    far out of reach, such as a spread of 0.1%, shrinks its miss by chance without coming near it.)
    """
    shortfalls = [r.shortfall for r in readings]
    return (len(readings) >= 2 and all(b < a for a, b in pairwise(shortfalls))
            and shortfalls[-1] < min(shortfalls[0] / 2, FADED_WITHIN))


def decide(readings: Sequence[Reading], *, attempts: int = 1, unconfirmed: str | None = None) -> tuple[str, str]:
    """The outcome and its reason from every attempt's reading, ``attempts`` having been allowed (see the
    module's rule); ``unconfirmed``: why the attempts it still wanted were not made (a time budget)."""
    if not readings:
        raise ValueError("decide() needs at least one reading")
    first = readings[0]
    figures = ", ".join(r.figure for r in readings)
    busy = "; ".join(f"attempt {i + 1}: {r.busy}" for i, r in enumerate(readings) if r.busy)
    if first.status == MET:
        return PASS, ""
    if any(r.status == MET for r in readings):
        contended = [r.other_cpus for r in readings if r.status != MET and r.other_cpus is not None]
        if contended:
            return INCONCLUSIVE, (f"attempts disagree: missed while other processes used up to {max(contended):.1f} "
                                  "CPU(s), then a fresh attempt met it: the machine was busy, so this run says "
                                  "little about the build; measure where nothing else competes")
        if all(r.status != MISSED for r in readings):
            return PASS, "the first attempt was beyond the limit but not significantly, and a fresh attempt met it"
        # A slower build cannot measure as fast as its baseline on demand; a machine in a slow spell can.
        return PASS, (f"slower at first ({figures}), then a fresh attempt met it: a slow spell of the machine, not "
                      "the build" + (f"; {busy}" if busy else ""))
    if all(r.other_cpus is not None for r in readings):
        most = max(r.other_cpus or 0.0 for r in readings)
        not_made = f"; not measured again: {unconfirmed}" if unconfirmed is not None else ""
        return INCONCLUSIVE, (f"every attempt was measured while other processes used up to {most:.1f} CPU(s): the "
                              f"figures describe them, not the build{not_made}; measure where nothing else competes")
    misses = sum(r.status == MISSED for r in readings)
    if unconfirmed is not None and misses < required_misses(attempts):
        return INCONCLUSIVE, (f"beyond the limit in every attempt made ({figures}), not confirmed: {unconfirmed}; a "
                              "miss is confirmed in a fresh attempt before it fails")
    if misses < required_misses(attempts) or misses == 0:
        clearly = "never significantly" if misses == 0 else f"significantly in only {misses} of them"
        return INCONCLUSIVE, (f"beyond the limit in every attempt ({figures}), but {clearly}: not enough evidence "
                              "(more repetitions or a quieter machine would tell)")
    if unsettled := readings[-1].unsettled:
        # Whole processes of one build differ by up to 30% on these VMs: attempts that disagree prove the machine.
        return INCONCLUSIVE, (f"the attempts disagree among themselves ({figures}): {unsettled}; that says more about "
                              "the machine than the build (a quieter machine, or the A/B gate, would tell)")
    if fading(readings):
        return INCONCLUSIVE, (f"the miss faded with every attempt ({figures}): a slow spell of the machine passing, "
                              "not a steady miss" + (f"; {busy}" if busy else ""))
    if len(readings) == 1 and busy:
        return INCONCLUSIVE, f"not confirmed, and its samples were uneven: {busy}"
    missed = ("missed in every attempt" if misses == len(readings) else
              f"missed in {misses} of {len(readings)} attempts, beyond the limit but not significantly in the rest")
    if busy:
        return FAIL, f"{missed}; uneven samples ({busy}): check what else runs on it"
    return FAIL, missed if len(readings) > 1 else ""


def verdict_of(nodeid: str, judgements: Sequence[Judgement], *, attempts: int = 1,
               unconfirmed: str | None = None) -> Verdict:
    """The verdict of one promise from its judgement in each attempt (first attempt first); ``unconfirmed``: why
    the attempts it still wanted were not made."""
    first = judgements[0]
    readings = tuple(j.reading for j in judgements)
    if first.settled is not None:
        outcome, reason = first.settled, ""
    else:
        outcome, reason = decide(readings, attempts=attempts, unconfirmed=unconfirmed)
    return Verdict(nodeid=nodeid, kind=first.kind, name=first.name, label=first.label, outcome=outcome,
                   reason=reason, readings=readings, involved=first.involved)
