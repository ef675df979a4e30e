"""The stored-baseline promise: every measurement no slower than this machine's stored baseline.

:class:`pytest_axion.store.gate.BaselineGate` picks the baseline of this hardware id and model (and
says how it differs from this run); :class:`BaselinePromise` reads each measurement against its
entry (:func:`pytest_axion.promises.speedup.compare`): significantly slower beyond the band is a
miss, slower beyond the band without significance is unsure (measured again like a miss), anything
else met. ``tolerance`` in the marker sets the band's floor for one test. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_axion.engines.records import METRICS, Measurement
from pytest_axion.errors import SettingsError
from pytest_axion.promises.marker import MarkerKey, PromiseContext, SloSpec
from pytest_axion.promises.speedup import (
    IMPROVED,
    INCONCLUSIVE,
    REGRESSED,
    Comparison,
    Side,
    busy_reason,
    compare,
    parse_tolerance,
)
from pytest_axion.promises.verdict import FAIL, INFO, MET, MISSED, UNSURE, Judgement, Reading

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

_STATUS = {REGRESSED: MISSED, INCONCLUSIVE: UNSURE}
_WORDS = {REGRESSED: "regressed", INCONCLUSIVE: "slower, not significantly", IMPROVED: "improved"}


@dataclass(frozen=True)
class BaselinePromise:
    """Every measurement of one test at least as fast as the stored baseline, within the band."""

    gate: BaselineGate
    tolerance: float
    require_baseline: bool = False

    def judge(self, measurements: Sequence[Measurement]) -> list[Judgement]:
        return [self._judgement(m) for m in measurements]

    def _judgement(self, m: Measurement) -> Judgement:
        gate, name, label = self.gate, m.key, f"{_label(m)} vs baseline"
        entry = gate.baseline.entries.get(m.key) if gate.baseline else None
        if entry is None:
            why = "not in the stored baseline" if gate.baseline else gate.missing_message()
            required = " (--axion-require-baseline)" if self.require_baseline else ""
            reading = Reading(status=MISSED, figure="-", message=f"{_label(m)}: no-baseline: {why}{required}",
                              detail={"word": "no-baseline", "path": str(gate.path)})
            return Judgement(name=name, kind="baseline", label=label, involved=(m.key,), reading=reading,
                             settled=FAIL if self.require_baseline else INFO)
        higher = METRICS[m.metric].higher_is_better
        stored = Side(entry.runs)
        c = compare(stored, Side((m.samples,)), higher_is_better=higher, tolerance=self.tolerance,
                    estimator=gate.settings.estimator)
        busy = busy_reason(m.samples, higher_is_better=higher, baseline_within_cv=stored.within_run_cv(),
                           per_repetition=m.metric != "itl_ms")
        reading = baseline_reading(c, label=_label(m), unit=m.unit, runs=len(entry.runs),
                                   estimator=gate.settings.estimator, tolerance=self.tolerance, busy=busy,
                                   other_cpus=m.other_cpus if m.contended else None, differences=gate.differences)
        return Judgement(name=name, kind="baseline", label=label, involved=(m.key,), reading=reading)


def baseline_reading(c: Comparison, *, label: str, unit: str, runs: int, estimator: str, tolerance: float,
                     busy: str | None = None, other_cpus: float | None = None,
                     differences: Sequence[str] = ()) -> Reading:
    """One attempt's comparison with the baseline as a reading: regressed is a miss, slower beyond the band but
    not significantly is unsure (measured again: one noisy attempt proves nothing either way), else met."""
    word = _WORDS.get(c.verdict, "ok")
    message = (f"{label}: {word}: {_fmt(c.current_level)} {unit} vs baseline {_fmt(c.baseline_level)} {unit} "
               f"({estimator} of {runs} run(s)), speedup {c.speedup:.2f}x [{c.low:.2f}-{c.high:.2f}], "
               f"band {c.band:.0%}")
    if differences and c.verdict in (REGRESSED, INCONCLUSIVE):
        message += f"; baseline differs: {'; '.join(differences)}"
    return Reading(status=_STATUS.get(c.verdict, MET), figure=f"{c.speedup:.2f}x", message=message,
                   shortfall=(1 - c.band) - c.speedup, other_cpus=other_cpus, busy=busy,
                   detail={**c.to_json(), "word": word, "baseline_runs": runs, "estimator": estimator,
                           "tolerance": tolerance})


def _fmt(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def promises(spec: SloSpec | None, context: PromiseContext) -> list[Any]:
    if context.gate is None:
        return []
    tolerance = spec.tolerance if spec is not None and spec.tolerance is not None else context.default_tolerance
    return [BaselinePromise(context.gate, tolerance, context.require_baseline)]
