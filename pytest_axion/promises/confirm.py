"""The one confirm-before-fail procedure, for every kind of promise a test declares.

Attempt 1 reads every promise from what the test measured. Every promise not yet met (missed, or
unsure) is a suspect; while suspects remain and attempts are left, ``measure_again`` pauses once
(:func:`pause_before`: the pauses double, so the attempts span a slow spell of several minutes) and
measures the workloads of *all* suspects again, fresh (each workload once, however many promises rest
on it), and each suspect is read again from the fresh figures. A test whose baseline and steadiness
both look off waits through one series of attempts, not one per kind. The outcome of each promise is
then :func:`pytest_axion.promises.verdict.decide` of its readings. Pure: the caller measures and waits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from pytest_axion.promises.verdict import Judgement, Verdict, verdict_of, wants_another_attempt
from pytest_axion.records import Measurement


class AttemptNotMade(Exception):
    """Raised by ``measure_again`` when, after its pause, a fresh attempt could not tell anything new: its
    message says why (the machine still busy). The suspects left are decided on the attempts made."""


# (the measurements to measure again, the attempt's number, a line saying why) -> fresh measurements by key
# (or AttemptNotMade)
MeasureAgain = Callable[[Sequence[Measurement], int, str], Mapping[str, Measurement]]
# the measurements a confirming attempt would measure again -> why it cannot (a time budget), or None
WhyNotAgain = Callable[[Sequence[Measurement]], str | None]


def pause_before(attempt: int, spacing_s: float) -> float:
    """Seconds to wait before confirming attempt ``attempt`` (2, 3, ...): ``spacing_s`` before attempt 2, doubled
    for each attempt after it (60, 120, 240 s with 60 s), so that the attempts together span a slow spell of the
    machine (several minutes on the VMs this was built on) instead of all landing in it."""
    if attempt < 2:
        raise ValueError(f"attempt 1 is the test's own measurement and has no pause, got attempt {attempt}")
    return spacing_s * 2.0 ** (attempt - 2)


class Promise(Protocol):
    """A kind of promise, bound to one test's declaration: reads measurements into judgements.

    :func:`confirm` calls ``judge`` once per attempt, the first attempt first, with every measurement as it stands
    after that attempt (fresh where measured again, the same records elsewhere); a promise may keep what earlier
    attempts measured, to judge a confirming attempt together with them (the stored baseline does).
    """

    def judge(self, measurements: Sequence[Measurement]) -> list[Judgement]:
        """One judgement per promise it makes of these measurements (the same names every attempt)."""
        ...


def confirm(nodeid: str, promises: Sequence[Promise], measurements: Sequence[Measurement], *, attempts: int,
            measure_again: MeasureAgain, why_not_again: WhyNotAgain = lambda _: None) -> list[Verdict]:
    """Every promise's verdict, each suspect confirmed by up to ``attempts - 1`` fresh attempts; none more once
    ``why_not_again`` gives a reason or ``measure_again`` raises :class:`AttemptNotMade` (the suspects left then
    are decided on the attempts made, saying why)."""
    current = {m.key: m for m in measurements}
    tried: dict[tuple[int, str], list[Judgement]] = {}
    for index, promise in enumerate(promises):
        for judgement in promise.judge(list(current.values())):
            tried[(index, judgement.name)] = [judgement]

    def suspects() -> list[tuple[int, str]]:
        return [ident for ident, js in tried.items()
                if js[0].settled is None and wants_another_attempt([j.reading for j in js], attempts)
                and len(js) == attempt]   # read in every attempt so far

    attempt = 1
    unconfirmed: dict[tuple[int, str], str] = {}
    while pending := suspects():
        involved = list(dict.fromkeys(key for ident in pending for key in tried[ident][-1].involved))
        to_measure = [current[key] for key in involved if key in current]
        if (why_not := why_not_again(to_measure)) is not None:
            unconfirmed = dict.fromkeys(pending, why_not)
            break
        why = "; ".join(dict.fromkeys(f"{tried[i][-1].label}: {tried[i][-1].reading.figure}" for i in pending))
        try:
            fresh = measure_again(to_measure, attempt + 1, f"{len(pending)} promise(s) not met ({why})")
        except AttemptNotMade as err:
            unconfirmed = dict.fromkeys(pending, str(err))
            break
        current.update(fresh)
        attempt += 1
        for index in sorted({index for index, _ in pending}):
            again = {j.name: j for j in promises[index].judge(list(current.values()))}
            for ident in pending:
                if ident[0] == index and ident[1] in again:
                    tried[ident].append(again[ident[1]])
    return [verdict_of(nodeid, judgements, attempts=attempts, unconfirmed=unconfirmed.get(ident))
            for ident, judgements in tried.items()]
