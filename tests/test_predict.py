"""The full model's figures predicted from proxies: the fit, its interval, and the reports it reads.

Pure logic on figures made from a known line (fixed + layers x per-layer). That real proxies fall on such a
line is measured in benchmarks/proxy_models.py (BENCHMARKS.md), not here.
"""

import random

import pytest

from pytest_axion.proxy.predict import LayerFigure, PredictionError, predict, predict_reports, rows_of

FIXED_S, PER_LAYER_S = 0.004, 0.0075   # per prompt token


def rate_samples(layers, *, noise=0.02, n=7, seed=1):
    generator = random.Random(seed * 1000 + layers)
    return tuple(1 / ((FIXED_S + PER_LAYER_S * layers) * (1 + generator.uniform(-noise, noise))) for _ in range(n))


def test_rates_on_a_line_predict_the_full_model_within_the_interval():
    truth = 1 / (FIXED_S + PER_LAYER_S * 80)
    p = predict([LayerFigure(2, rate_samples(2), "tokens/s"), LayerFigure(4, rate_samples(4), "tokens/s")], 80)
    assert p.value == pytest.approx(truth, rel=0.06)
    assert p.low < truth < p.high and p.low < p.value < p.high
    assert p.per_layer == pytest.approx(PER_LAYER_S, rel=0.1)
    assert p.from_layers == (2, 4) and p.residual is None and p.unit == "tokens/s"
    # noisier proxies give a wider interval, not a surer one
    noisy = predict([LayerFigure(2, rate_samples(2, noise=0.08), "tokens/s"),
                     LayerFigure(4, rate_samples(4, noise=0.08), "tokens/s")], 80)
    assert noisy.relative_error > p.relative_error


def test_times_are_fitted_as_they_are_not_inverted():
    # TTFT of 100 prompt tokens, in ms: 100 x (fixed + layers x per-layer)
    figures = [LayerFigure(layers, tuple(1000 * 100 * (FIXED_S + PER_LAYER_S * layers) * f for f in (0.99, 1, 1.01)),
                           "ms") for layers in (2, 4)]
    p = predict(figures, 30)
    assert p.value == pytest.approx(1000 * 100 * (FIXED_S + PER_LAYER_S * 30), rel=0.02)


def test_three_layer_counts_report_how_straight_the_line_is():
    straight = predict([LayerFigure(n, rate_samples(n, noise=0.0), "tokens/s") for n in (2, 4, 8)], 30)
    assert straight.residual == pytest.approx(0, abs=1e-9)
    # a curve that is not a line (each layer costs more than the one before): the residual says so
    bent = predict([LayerFigure(n, (1 / (FIXED_S + PER_LAYER_S * n ** 1.5),), "tokens/s") for n in (2, 4, 8)], 30)
    assert bent.residual > 0.05


@pytest.mark.parametrize(("figures", "full", "message"), [
    ([LayerFigure(4, (10.0,), "tokens/s")], 80, r"two or more layer counts, got \[4\]"),
    ([LayerFigure(1, (10.0,), "tokens/s"), LayerFigure(4, (5.0,), "tokens/s")], 80, "proxy of 1 layer does almost"),
    ([LayerFigure(2, (10.0,), "tokens/s"), LayerFigure(4, (5.0,), "ms")], 80, "cannot be fitted together"),
    ([LayerFigure(2, (10.0,), "tokens/s"), LayerFigure(4, (11.0,), "tokens/s")], 80, "does not grow with the layers"),
    ([LayerFigure(2, (10.0,), "tokens/s"), LayerFigure(4, (5.0,), "tokens/s")], 0, "must be positive"),
    # 4 layers at 1000 t/s and 8 at 400: the line through them is below zero at 1 layer
    ([LayerFigure(4, (1000.0,), "tokens/s"), LayerFigure(8, (400.0,), "tokens/s")], 1, "no positive time at 1 layers"),
])
def test_figures_that_cannot_predict_are_one_line(figures, full, message):
    with pytest.raises(PredictionError, match=message):
        predict(figures, full)


def test_an_interval_needs_three_samples_per_proxy_and_keeps_an_unbounded_tail():
    few = predict([LayerFigure(2, rate_samples(2, n=2), "tokens/s"), LayerFigure(4, rate_samples(4, n=2), "tokens/s")],
                  80)
    assert few.low is None and few.high is None and few.relative_error is None and few.value > 0
    # a fixed cost near zero and noise as large as a layer: some resampled lines give no positive time at 80
    # layers, an infinitely fast model, so the upper bound is unbounded rather than cut off
    wild = predict([LayerFigure(2, (100.0, 60.0, 140.0), "tokens/s"), LayerFigure(4, (50.0, 30.0, 70.0), "tokens/s")],
                   80)
    assert wild.high == float("inf") and wild.low < wild.value


def report(layers, *, of="llama-3.3-70b", full_layers=80, proxy=True, quantization="Q4_0", hardware="hw"):
    results = [{"nodeid": "t.py::test_prompt", "metric": "prompt_tps", "unit": "tokens/s", "batch_size": 1,
                "n_prompt": 512, "n_gen": 0, "threads": 2, "samples": list(rate_samples(layers))}]
    model = {"file_name": "x.gguf", "proxy": {"of": of, "layers": layers, "full_layers": full_layers,
                                              "quantization": quantization}}
    if not proxy:
        del model["proxy"]
    return {"model": model, "results": results, "hardware": {"hardware_id": hardware}}


def test_reports_of_two_proxies_give_one_predicted_row_per_result():
    proxy, predicted = predict_reports([("a.json", report(2)), ("b.json", report(4))])
    assert proxy["of"] == "llama-3.3-70b"
    (row,) = predicted
    assert row.key == ("t.py::test_prompt", "prompt_tps", 1, 512, 0, 2) and set(row.measured) == {2, 4}
    assert row.prediction.value == pytest.approx(1 / (FIXED_S + PER_LAYER_S * 80), rel=0.06)
    (table_row,) = rows_of(predicted)
    assert table_row[2] == "pp512+tg0 x1" and table_row[4].endswith("tokens/s") and table_row[5].startswith("95% [")


def test_a_row_measured_on_one_proxy_only_says_why_it_has_no_prediction():
    only_two = report(2)
    only_two["results"].append(dict(only_two["results"][0], metric="ttft_ms", unit="ms", samples=[100.0]))
    _, predicted = predict_reports([("a.json", only_two), ("b.json", report(4))])
    ttft = next(p for p in predicted if p.key[1] == "ttft_ms")
    assert ttft.prediction is None and "two or more layer counts" in ttft.reason


def test_reports_that_are_not_of_one_models_proxies_are_one_line():
    with pytest.raises(PredictionError, match=r"two or more layer counts, got \[4\]"):
        predict_reports([("a.json", report(4)), ("b.json", report(4))])
    with pytest.raises(PredictionError, match=r"b\.json is not the report of a run on a proxy model"):
        predict_reports([("a.json", report(2)), ("b.json", report(4, proxy=False))])
    with pytest.raises(PredictionError, match=r"different models \(llama-3.1-8b, llama-3.3-70b\)"):
        predict_reports([("a.json", report(2)), ("b.json", report(4, of="llama-3.1-8b"))])
    with pytest.raises(PredictionError, match=r"different quantizations \(Q4_0, Q8_0\)"):
        predict_reports([("a.json", report(2)), ("b.json", report(4, quantization="Q8_0"))])
    with pytest.raises(PredictionError, match=r"different hardware ids \(hw, other\)"):
        predict_reports([("a.json", report(2)), ("b.json", report(4, hardware="other"))])


def test_two_reports_of_one_layer_count_pool_their_samples():
    _, predicted = predict_reports([("a.json", report(2)), ("b.json", report(4)), ("c.json", report(4))])
    (row,) = predicted
    assert set(row.measured) == {2, 4} and row.prediction is not None


def test_a_run_gets_its_prediction_or_the_reason_why_not_in_the_reports_form():
    import jsonschema

    from pytest_axion.proxy.predict import predict_run
    from pytest_axion.schemas import REPORT_SCHEMA, load_schema

    schema = load_schema(REPORT_SCHEMA)["properties"]["prediction"]
    made = predict_run([("2L.json", report(2))], report(4))
    assert made.problem is None and made.of == "llama-3.3-70b" and made.layers == 80 and made.from_layers == (2, 4)
    jsonschema.validate(made.to_json(), schema)
    assert made.to_json()["rows"][0]["measured"].keys() == {"2", "4"}
    # the same layer count twice: no prediction, and the reason instead of an exception
    none = predict_run([("4L.json", report(4))], report(4))
    assert none.rows == () and "two or more layer counts, got [4]" in none.problem
    jsonschema.validate(none.to_json(), schema)
