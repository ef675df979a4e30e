"""The run for CI dashboards: JUnit XML properties, one per verdict, named and worded alike for every kind."""

from __future__ import annotations

from collections.abc import Sequence

from pytest_axion.figures import figure
from pytest_axion.promises.efficiency import EfficiencyFigure
from pytest_axion.promises.thresholds import capacity
from pytest_axion.promises.verdict import Verdict
from pytest_axion.records import CapacitySearch, RateLevel
from pytest_axion.report.terminal import search_text


def junit_properties(verdicts: Sequence[Verdict], figures: Sequence[EfficiencyFigure] = (),
                     search: CapacitySearch | None = None,
                     rates: Sequence[RateLevel] = ()) -> list[tuple[str, str]]:
    """``(axion.<kind>.<name>, "<outcome>: <message>")`` per verdict, the test's capacity if it has one (with its
    search's bracket and why it ended), each open-loop run (``axion.rate.<i>``), and
    ``(axion.efficiency_figure.<kind>.b<B>.pp<P>.tg<G>, "<fraction>")`` per measured cell."""
    properties = [(v.property_name, v.message()) for v in verdicts]
    most = search.most_passing if search is not None else capacity(verdicts)
    if most is not None:
        by_rate = search is not None and search.by == "rate"
        properties.append(("axion.capacity_rps" if by_rate else "axion.capacity", figure(most) if by_rate
                           else str(int(most))))
    if search is not None:
        properties.append(("axion.capacity_search", f"{search_text(search)}; ended on {search.ended}"))
    properties += [(f"axion.rate.{index}", level.describe()) for index, level in enumerate(rates)]
    properties += [(f"axion.efficiency_figure.{f.kind}.b{f.batch_size}.pp{f.n_prompt}.tg{f.n_gen}",
                    f"{f.fraction:.3f} ({figure(f.achieved)} of {figure(f.roof)} {f.unit})") for f in figures]
    return properties
