"""The full model's figures, predicted from proxies of a few layers.

A unit of work (one prompt token, one generated token, one step of the batched users, the time to the first
token) takes a fixed time (embedding, output matrix, sampling, the engine's own overhead) plus the same time
again for every transformer layer: t(L) = fixed + L x per_layer. Rates (tokens/s) are times inverted, so the
fit is made on 1/rate and the prediction inverted back. A proxy needs at least 2 layers: llama.cpp computes
the last layer's feed-forward only for the tokens whose logits are asked for, so a 1-layer proxy does almost
no prompt work; from 2 layers on, the last layer's saving is part of the fixed time and the line holds.

The interval comes from the measurements: each proxy's samples are resampled (bootstrap), the line fitted
again, and the full model's figure read off each time; with three or more layer counts, the fit's largest
residual says how straight the line really is. Pure logic: no pytest, no llama.cpp.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_axion.errors import AxionError
from pytest_axion.stats import median

RATE_UNIT, TIME_UNIT = "tokens/s", "ms"
RESAMPLES = 2000
MIN_LAYERS = 2
MIN_SAMPLES_FOR_INTERVAL = 3   # fewer per proxy: every resample alike, an interval of no width that means nothing


class PredictionError(AxionError):
    """The proxies' figures cannot give a prediction (too few layer counts, or times that do not grow)."""


@dataclass(frozen=True)
class LayerFigure:
    """One figure of one workload, measured on a proxy of ``layers`` layers: its samples, in ``unit``."""

    layers: int
    samples: tuple[float, ...]
    unit: str


@dataclass(frozen=True)
class Prediction:
    """The full model's figure (``value`` in the figures' unit) and its 95% bootstrap interval: the spread of the
    proxies' repetitions only (runs disagree by more on a noisy machine), None with fewer than 3 samples per proxy;
    a bound beyond every positive time is infinite (a rate's ``high``)."""

    layers: int
    value: float
    low: float | None
    high: float | None
    unit: str
    fixed: float            # time per unit of work at 0 layers (s for rates, ms for times)
    per_layer: float        # the time each layer adds, same unit as ``fixed``
    from_layers: tuple[int, ...]
    residual: float | None  # largest relative residual of the fit at the measured points (3+ layer counts)

    @property
    def relative_error(self) -> float | None:
        """The interval's larger distance from the value, over the value: the prediction's own error."""
        if self.low is None or self.high is None:
            return None
        return max(self.value - self.low, self.high - self.value) / self.value


def _as_time(value: float, unit: str) -> float:
    return 1.0 / value if unit == RATE_UNIT else value


def _from_time(time: float, unit: str) -> float:
    return 1.0 / time if unit == RATE_UNIT else time


def _rank_quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile by rank (no interpolation, which infinite values would turn into nan)."""
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))]


def _line(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares intercept and slope of time against layers."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    return mean_y - slope * mean_x, slope


def _check(figures: Sequence[LayerFigure], full_layers: int) -> tuple[str, list[int]]:
    units = {f.unit for f in figures}
    if len(units) != 1 or not units <= {RATE_UNIT, TIME_UNIT}:
        raise PredictionError(f"figures in units {sorted(units)} cannot be fitted together: give one figure "
                              f"in {RATE_UNIT} or {TIME_UNIT} per proxy")
    counts = sorted({f.layers for f in figures})
    if len(counts) < 2:
        raise PredictionError(f"a prediction needs proxies of two or more layer counts, got {counts}: measure "
                              f"the same suite on a second proxy, e.g. proxy:NAME:{MIN_LAYERS} and :{2 * MIN_LAYERS}")
    if counts[0] < MIN_LAYERS:
        raise PredictionError(f"a proxy of {counts[0]} layer does almost no prompt work (llama.cpp skips the last "
                              f"layer's feed-forward for tokens without logits): use {MIN_LAYERS} layers or more")
    if full_layers < 1:
        raise PredictionError(f"the full model's layer count must be positive, got {full_layers}")
    if any(not f.samples or min(f.samples) <= 0 for f in figures):
        raise PredictionError("every figure needs positive samples to be fitted")
    return units.pop(), counts


def predict(figures: Sequence[LayerFigure], full_layers: int, *, resamples: int = RESAMPLES,
            seed: int = 0) -> Prediction:
    """Fit time = fixed + layers x per_layer through the proxies' medians; predict ``full_layers``."""
    unit, counts = _check(figures, full_layers)
    by_layers: dict[int, list[float]] = {}
    for figure in figures:
        by_layers.setdefault(figure.layers, []).extend(figure.samples)

    def fit(medians: Mapping[int, float]) -> tuple[float, float]:
        return _line([(layers, _as_time(value, unit)) for layers, value in sorted(medians.items())])

    fixed, per_layer = fit({layers: median(samples) for layers, samples in by_layers.items()})
    if per_layer <= 0:
        shown = ", ".join(f"{layers} layers {median(by_layers[layers]):.4g} {unit}" for layers in counts)
        raise PredictionError(f"the time per unit of work does not grow with the layers ({shown}): the noise is "
                              "larger than the layers' cost; measure more repetitions, or proxies further apart")
    full_time = fixed + per_layer * full_layers
    if full_time <= 0:
        raise PredictionError(f"the line through the proxies gives no positive time at {full_layers} layers (fixed "
                              f"{fixed:.3g}, per layer {per_layer:.3g}): predict for more layers than the proxies "
                              "have, or measure more repetitions")
    low = high = None
    if min(len(samples) for samples in by_layers.values()) >= MIN_SAMPLES_FOR_INTERVAL:
        generator = random.Random(seed)
        predicted = []
        for _ in range(resamples):
            medians = {layers: median(generator.choices(samples, k=len(samples)))
                       for layers, samples in by_layers.items()}
            f, s = fit(medians)
            time = f + s * full_layers
            # no positive time: beyond every bound (an infinite rate, a time of nothing), kept so the tail shows
            predicted.append(_from_time(time, unit) if time > 0 else (math.inf if unit == RATE_UNIT else 0.0))
        low, high = _rank_quantile(predicted, 0.025), _rank_quantile(predicted, 0.975)
    residual = None
    if len(counts) >= 3:
        residual = max(abs(fixed + per_layer * layers - _as_time(median(by_layers[layers]), unit))
                       / _as_time(median(by_layers[layers]), unit) for layers in counts)
    return Prediction(layers=full_layers, value=_from_time(full_time, unit), low=low, high=high, unit=unit,
                      fixed=fixed, per_layer=per_layer, from_layers=tuple(counts), residual=residual)


# --- predictions from the JSON reports of proxy runs ------------------------------------------------------

RESULT_KEY = ("nodeid", "metric", "batch_size", "n_prompt", "n_gen", "threads")


@dataclass(frozen=True)
class PredictedResult:
    """One result row of the suite, predicted for the full model from the proxies' rows."""

    key: tuple[Any, ...]   # RESULT_KEY's values
    measured: Mapping[int, float]   # median per proxy layer count
    prediction: Prediction | None
    reason: str | None = None       # why there is no prediction


def proxy_of(report: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """The ``model.proxy`` block of a report (what the proxy stands for), or a one-line error naming ``where``."""
    proxy: Mapping[str, Any] | None = report.get("model", {}).get("proxy")
    if not proxy:
        raise PredictionError(f"{where} is not the report of a run on a proxy model: run the suite with "
                              "--axion-model proxy:NAME:LAYERS --axion-report FILE")
    return proxy


def predict_reports(reports: Sequence[tuple[str, Mapping[str, Any]]], *,
                    full_layers: int | None = None) -> tuple[Mapping[str, Any], list[PredictedResult]]:
    """Match the rows of reports of one suite on proxies of one model at different layer counts and predict
    each row for the full model (``full_layers``, by default the count the proxies record)."""
    proxies = [(where, proxy_of(report, where)) for where, report in reports]
    models = {proxy["of"] for _, proxy in proxies}
    if len(models) != 1:
        raise PredictionError(f"the reports are of proxies of different models ({', '.join(sorted(models))}): "
                              "give reports of one model's proxies")
    # one line through runs of one kind: the same full model, weights' type and machine
    facts = [(proxy.get("full_layers"), proxy.get("quantization"), report.get("hardware", {}).get("hardware_id"))
             for (_, report), (_, proxy) in zip(reports, proxies, strict=True)]
    for index, what in enumerate(("full layer counts", "quantizations", "hardware ids")):
        seen = {str(fact[index]) for fact in facts}
        if len(seen) > 1:
            raise PredictionError(f"the reports are of proxies of different {what} ({', '.join(sorted(seen))}): "
                                  "fit only proxies measured alike, on one machine")
    counts = sorted({int(proxy["layers"]) for _, proxy in proxies})
    if len(counts) < 2:
        raise PredictionError(f"a prediction needs reports of proxies of two or more layer counts, got {counts}: "
                              f"run the suite on a second proxy, e.g. proxy:NAME:{2 * counts[0]}")
    target = full_layers or int(proxies[0][1]["full_layers"])
    rows: dict[tuple[Any, ...], dict[int, tuple[str, list[float]]]] = {}
    for (_, report), (_, proxy) in zip(reports, proxies, strict=True):
        for result in report.get("results", []):
            key = tuple(result[k] for k in RESULT_KEY)
            _, samples = rows.setdefault(key, {}).setdefault(int(proxy["layers"]), (result["unit"], []))
            samples.extend(result["samples"])   # two reports of one layer count: both runs' samples
    predicted = []
    for key, by_layers in rows.items():
        measured = {layers: median(samples) for layers, (_, samples) in sorted(by_layers.items())}
        figures = [LayerFigure(layers, tuple(samples), unit) for layers, (unit, samples) in by_layers.items()]
        try:
            predicted.append(PredictedResult(key, measured, predict(figures, target)))
        except PredictionError as err:
            predicted.append(PredictedResult(key, measured, None, str(err)))
    return proxies[0][1], predicted


def rows_of(predicted: Iterable[PredictedResult]) -> list[list[Any]]:
    """Table rows: test, metric, workload, each proxy's median, the prediction and its interval."""
    table = []
    for item in predicted:
        nodeid, metric, batch, n_prompt, n_gen, _threads = item.key
        shown = ", ".join(f"{layers}L {value:.4g}" for layers, value in item.measured.items())
        workload = f"pp{n_prompt}+tg{n_gen} x{batch}"
        if item.prediction is None:
            table.append([nodeid, metric, workload, shown, "-", item.reason])
            continue
        p = item.prediction
        if p.low is None or p.high is None:
            error = f"no interval: fewer than {MIN_SAMPLES_FOR_INTERVAL} samples per proxy"
        else:
            error = f"95% [{_shown(p.low)}-{_shown(p.high)}]"
        if p.residual is not None:
            error += f", fit within {p.residual:.0%}"
        table.append([nodeid, metric, workload, shown, f"{p.value:.4g} {p.unit}", error])
    return table


def _shown(value: float) -> str:
    return "unbounded" if math.isinf(value) else f"{value:.4g}"


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value


@dataclass(frozen=True)
class PredictionSet:
    """The full model's figures predicted for one run (with ``--axion-predict-from``): derived once, rendered
    by every report. ``problem`` says why there is no prediction at all."""

    of: str
    layers: int
    from_layers: tuple[int, ...]
    rows: tuple[PredictedResult, ...] = ()
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            entry: dict[str, Any] = dict(zip(RESULT_KEY, row.key, strict=True))
            entry["measured"] = {str(layers): value for layers, value in row.measured.items()}
            p = row.prediction
            entry.update({"value": p.value, "low": _finite(p.low), "high": _finite(p.high), "unit": p.unit,
                          "residual": p.residual, "reason": None} if p is not None else
                         {"value": None, "low": None, "high": None, "unit": None, "residual": None,
                          "reason": row.reason})
            rows.append(entry)
        return {"of": self.of, "layers": self.layers, "from_layers": list(self.from_layers), "rows": rows,
                "problem": self.problem}


def predict_run(others: Sequence[tuple[str, Mapping[str, Any]]], this_run: Mapping[str, Any]) -> PredictionSet:
    """This run's figures and those of the other proxy runs' reports, fitted row by row; a PredictionSet that
    names the problem instead of raising, so that a summary never loses the measurements over a prediction."""
    mine = this_run.get("model", {}).get("proxy") or {}
    try:
        proxy, rows = predict_reports([*others, ("this run", this_run)])
    except PredictionError as err:
        return PredictionSet(of=str(mine.get("of", "?")), layers=int(mine.get("full_layers", 0)),
                             from_layers=(), problem=str(err))
    counts = tuple(sorted({n for row in rows for n in row.measured}))
    return PredictionSet(of=str(proxy["of"]), layers=int(proxy["full_layers"]), from_layers=counts,
                         rows=tuple(rows))
