"""The stored-baseline promise: every measurement no slower than this machine's stored baseline.

:class:`pytest_axion.store.gate.BaselineGate` picks the baseline of this hardware id and model (and
says how it differs from this run); :class:`BaselinePromise` reads each measurement against its
entry (:func:`pytest_axion.comparison.compare`). The first attempt alone: significantly slower
beyond the band is a miss, slower beyond the band without significance is unsure (measured again like
a miss), anything else met. A confirming attempt (:func:`attempt_reading`) is met if it alone lies
within the band, missed only if every attempt so far, pooled as several runs of one side, is
significantly slower beyond the band, else unsure; and unsettled (inconclusive, never a fail) when the
attempts disagree among themselves by more than this machine's runs do while missing by little.
``tolerance`` in the marker sets the band's floor for one test. Pure.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_axion.comparison import (
    IMPROVED,
    NOT_SIGNIFICANT,
    REGRESSED,
    Comparison,
    Side,
    compare,
    parse_tolerance,
    spread_allowance,
)
from pytest_axion.errors import SettingsError
from pytest_axion.figures import figure
from pytest_axion.promises.marker import MarkerKey, PromiseContext, SloSpec
from pytest_axion.promises.speedup import busy_reason
from pytest_axion.promises.verdict import FAIL, INFO, MET, MISSED, UNSURE, Judgement, Reading, reading_status
from pytest_axion.records import METRICS, Measurement

if TYPE_CHECKING:
    from pytest_axion.store.gate import BaselineGate


def _label(m: Measurement) -> str:
    return f"{m.metric} {m.shape}"


def _tolerance(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SettingsError(f"{where}: tolerance must be a fraction such as 0.1 or a string such as '10%', "
                            f"got {value!r}")
    return parse_tolerance(str(value), source=f"{where}: tolerance")


KIND_ORDER = 40   # where its keys appear in the marker's help
MARKER_KEYS = (
    MarkerKey("tolerance", "tolerance=0.10",
              "smallest slowdown against the stored baseline that counts as a regression for this test, a "
              "fraction or '10%' (default --axion-tolerance)", _tolerance),
)

_WORDS = {REGRESSED: "regressed", NOT_SIGNIFICANT: "slower, not significantly", IMPROVED: "improved"}


# Attempts of one build that disagree by more than this are the machine's doing: whole processes here differ by
# 9-12% (up to 30% in slow spells), so the machine's own runs are never taken to agree better than this.
MIN_DISAGREEMENT = 0.05
UNSETTLED_SPREADS = 2.0   # a miss beyond the band by fewer than this many such disagreements cannot be settled


@dataclass
class BaselinePromise:
    """Every measurement of one test at least as fast as the stored baseline, within the band.

    It keeps each measurement's attempts that it judged (by key, first attempt first), to judge a confirming
    attempt together with the earlier ones.
    """

    gate: BaselineGate
    tolerance: float
    require_baseline: bool = False
    _attempts: dict[str, list[Measurement]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def judge(self, measurements: Sequence[Measurement]) -> list[Judgement]:
        return [self._judgement(self._seen(m)) for m in measurements]

    def _seen(self, m: Measurement) -> list[Measurement]:
        """This measurement's attempts so far, ``m`` last."""
        seen = self._attempts.setdefault(m.key, [])
        if not seen or seen[-1] is not m:   # the same record again (not measured again this attempt) is no attempt
            seen.append(m)
        return seen

    def _judgement(self, attempts: Sequence[Measurement]) -> Judgement:
        m = attempts[-1]
        gate, name, label = self.gate, m.key, f"{_label(m)} vs baseline"
        entry = gate.baseline.entries.get(m.key) if gate.baseline else None
        if entry is None:
            return no_baseline(gate, _label(m), name=name, kind="baseline", label=label, involved=(m.key,),
                               required=self.require_baseline)
        higher = METRICS[m.metric].higher_is_better
        stored = Side(entry.runs)
        busy = busy_reason(m.samples, higher_is_better=higher, baseline_within_cv=stored.within_run_cv(),
                           per_repetition=not METRICS[m.metric].per_step)
        reading = attempt_reading(stored, [a.samples for a in attempts], higher_is_better=higher,
                                  tolerance=self.tolerance, estimator=gate.settings.estimator, label=_label(m),
                                  unit=m.unit, busy=with_cpus(busy, m.other_cpus),
                                  other_cpus=m.other_cpus if m.contended else None, differences=gate.differences)
        return Judgement(name=name, kind="baseline", label=label, involved=(m.key,), reading=reading)


def no_baseline(gate: BaselineGate, what: str, *, name: str, kind: str, label: str, involved: tuple[str, ...],
                required: bool) -> Judgement:
    """``what`` has nothing stored: shown (``info``), or a failure under --axion-require-baseline."""
    why = "not in the stored baseline" if gate.baseline else gate.missing_message()
    reading = Reading(status=MISSED, figure="-",
                      message=f"{what}: no-baseline: {why}{' (--axion-require-baseline)' if required else ''}",
                      detail={"word": "no-baseline", "path": str(gate.path)})
    return Judgement(name=name, kind=kind, label=label, involved=involved, reading=reading,
                     settled=FAIL if required else INFO)


def with_cpus(busy: str | None, other_cpus: float | None) -> str | None:
    """What the samples suggest, and what other processes were measured to take meanwhile (or that nobody
    measured it): uneven samples alone do not prove other work."""
    if busy is None:
        return None
    cpus = "other processes' CPU not measured" if other_cpus is None else f"other processes used {other_cpus:.1f} CPUs"
    return f"{busy}, {cpus}"


def attempt_reading(stored: Side, attempts: Sequence[Sequence[float]], *, higher_is_better: bool, tolerance: float,
                    estimator: str, label: str, unit: str, busy: str | None = None, other_cpus: float | None = None,
                    differences: Sequence[str] = ()) -> Reading:
    """The reading of the last of ``attempts`` (each attempt's samples, the first attempt first) against ``stored``.

    The first attempt is :func:`baseline_reading` of its comparison alone. A confirming attempt is met if it alone
    lies within the band; missed only if all attempts pooled (as several runs of one side) are significantly
    slower beyond the band; else unsure. It is ``unsettled`` when the attempts' levels disagree by more than
    max(2 x the baseline's between-run sd, 5%) and the pooled level misses the band by less than 2 such spreads
    (all on the log scale the between-run sd is measured on).
    """
    def against(current: Side) -> Comparison:
        return compare(stored, current, higher_is_better=higher_is_better, tolerance=tolerance, estimator=estimator)

    alone = against(Side((tuple(attempts[-1]),)))
    reading = baseline_reading(alone, label=label, unit=unit, runs=len(stored.runs), estimator=estimator,
                               tolerance=tolerance, busy=busy, other_cpus=other_cpus, differences=differences)
    if len(attempts) == 1 or reading.status == MET:
        return reading
    pooled_side = Side(tuple(tuple(a) for a in attempts))
    pooled = against(pooled_side)
    word = _WORDS.get(pooled.verdict, "ok")
    message = (f"{reading.message}; all {len(attempts)} attempts pooled: {figure(pooled.current_level)} {unit}, "
               f"speedup {pooled.speedup:.2f}x [{pooled.low:.2f}-{pooled.high:.2f}], {word}")
    unsettled, apart, allowed = _unsettled(stored, pooled_side, pooled, band=alone.band, estimator=estimator,
                                           higher_is_better=higher_is_better)
    return dataclasses.replace(reading, status=MISSED if pooled.verdict == REGRESSED else UNSURE, message=message,
                               unsettled=unsettled,
                               detail={**reading.detail, "pooled": {**pooled.to_json(), "word": word,
                                                                    "attempts": len(attempts)},
                                       "disagreement": apart, "allowed_disagreement": allowed})


def _unsettled(stored: Side, attempts: Side, pooled: Comparison, *, band: float, estimator: str,
               higher_is_better: bool) -> tuple[str | None, float, float]:
    """Why the attempts cannot settle it (or None), how far apart they lie and how far they may (log scale)."""
    between = stored.between_run_sd(estimator, higher_is_better)
    allowed = max(spread_allowance(between), MIN_DISAGREEMENT)
    apart = attempts.disagreement(estimator, higher_is_better)
    miss = math.log((1 - band) / pooled.speedup)   # how far the pooled level lies beyond the band
    if apart <= allowed or miss >= UNSETTLED_SPREADS * allowed:
        return None, apart, allowed
    return (f"they lie {math.expm1(apart):.0%} apart, more than the {math.expm1(allowed):.0%} this machine's runs of "
            f"one build may differ by, and pooled ({pooled.speedup:.2f}x) they miss the band by "
            f"{math.expm1(max(miss, 0.0)):.1%}, within {UNSETTLED_SPREADS:.0f} such spreads "
            f"({math.expm1(UNSETTLED_SPREADS * allowed):.1%})"), apart, allowed


def baseline_reading(c: Comparison, *, label: str, unit: str, runs: int, estimator: str, tolerance: float,
                     busy: str | None = None, other_cpus: float | None = None,
                     differences: Sequence[str] = ()) -> Reading:
    """One attempt's comparison with the baseline as a reading: regressed is a miss, slower beyond the band but
    not significantly is unsure (measured again: one noisy attempt proves nothing either way), else met."""
    word = _WORDS.get(c.verdict, "ok")
    message = (f"{label}: {word}: {figure(c.current_level)} {unit} vs baseline {figure(c.baseline_level)} {unit} "
               f"({estimator} of {runs} run(s)), speedup {c.speedup:.2f}x [{c.low:.2f}-{c.high:.2f}], "
               f"band {c.band:.0%}")
    if differences and c.verdict in (REGRESSED, NOT_SIGNIFICANT):
        message += f"; baseline differs: {'; '.join(differences)}"
    return Reading(status=reading_status(c.verdict), figure=f"{c.speedup:.2f}x", message=message,
                   shortfall=(1 - c.band) - c.speedup, other_cpus=other_cpus, busy=busy,
                   detail={**c.to_json(), "word": word, "baseline_runs": runs, "estimator": estimator,
                           "tolerance": tolerance})


def promises(spec: SloSpec | None, context: PromiseContext) -> list[Any]:
    if context.gate is None:
        return []
    tolerance = spec.tolerance if spec is not None and spec.tolerance is not None else context.default_tolerance
    return [BaselinePromise(context.gate, tolerance, context.require_baseline)]
