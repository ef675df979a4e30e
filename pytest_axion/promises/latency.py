"""Inter-token latency: every generation step a user waits, at most ``itl_ms`` at ``itl_percentile``.

``itl_ms=200, itl_percentile=99`` is MLPerf Inference's limit for llama2-70b in its server scenario
(time per output token, p99, 200 ms). A step of a batched run produces one token for every user, so
each step's wall time is what each user waits between two tokens; the samples are every step of every
repetition (``axion.batched`` keeps them), so the 99th percentile has hundreds of steps behind it.
Pure.
"""

from __future__ import annotations

from typing import Any

from pytest_axion.promises.marker import MarkerKey, PromiseContext, SloSpec, one_of, positive
from pytest_axion.promises.thresholds import Bound

ITL_PERCENTILES = (50, 90, 95, 99)
DEFAULT_PERCENTILE = 99

MARKER_KEYS = (
    MarkerKey("itl_ms", "itl_ms=200", "maximum inter-token latency (one generation step of the batch), ms, at "
              "itl_percentile; MLPerf's llama2-70b server limit is 200 ms at p99", positive("itl_ms")),
    MarkerKey("itl_percentile", "itl_percentile=99", "percentile of all generation steps that itl_ms checks: 50, 90, "
              "95 or 99", one_of("itl_percentile", ITL_PERCENTILES), default=DEFAULT_PERCENTILE, promise=False),
)


def promises(spec: SloSpec | None, context: PromiseContext) -> list[Any]:
    if spec is None or not spec.declares("itl_ms"):
        return []
    return [Bound("itl_ms", "itl_ms", spec.get("itl_ms"), upper=True, percentile=spec.get("itl_percentile"),
                  nodeid=context.nodeid)]
