import pytest

from pytest_axion.errors import SettingsError
from pytest_axion.promises.confirm import confirm
from pytest_axion.promises.marker import (
    PromiseContext,
    SloSpec,
    marker_help,
    marker_keys,
    merge_marker_kwargs,
    parse_slo,
    promises_for,
)
from pytest_axion.promises.reading import ReadingSpeed
from pytest_axion.promises.shape import SteadyLimits
from pytest_axion.promises.thresholds import capacity
from pytest_axion.records import Measurement

READING = ReadingSpeed(5.0, "reading speed 5 t/s (default)")


def judged(spec, measurements, nodeid="t.py::test"):
    """The test's verdicts from one attempt (confirmation is tested in test_confirm)."""
    context = PromiseContext(nodeid=nodeid, reading=lambda: READING)
    return confirm(nodeid, promises_for(spec, context), measurements, attempts=1, measure_again=None)


def failures(verdicts):
    return [v for v in verdicts if v.outcome == "fail"]


def m(metric, batch_size=1, samples=(10.0, 11.0, 12.0), n_prompt=128, n_gen=64):
    return Measurement(nodeid="t.py::test", metric=metric, batch_size=batch_size, n_prompt=n_prompt, n_gen=n_gen,
                       threads=2, samples=tuple(samples))


def per_user(*medians):
    return [m("per_user_tps", batch_size=b, samples=(v, v, v)) for b, v in zip((1, 2, 4, 8), medians, strict=False)]


def parse(**kwargs):
    return parse_slo((), kwargs, where="t.py::test")


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt_tsp": 50}, "unknown axion_slo key(s) prompt_tsp; known: efficiency, gen_scaling, gen_tps, itl_ms, "
                         "itl_percentile"),
    ({"prompt_tps": "fast"}, "prompt_tps must be a positive number, got 'fast'"),
    ({"prompt_tps": 0}, "prompt_tps must be a positive number, got 0"),
    ({"gen_tps": -5}, "gen_tps must be a positive number, got -5"),
    ({"gen_tps": True}, "gen_tps must be a positive number, got True"),
    ({"ttft_ms": float("nan")}, "ttft_ms must be a positive number"),
    ({"per_user_tps": "slow"}, "per_user_tps must be a positive number or 'reading', got 'slow'"),
    ({"per_user_tps": 5, "max_batch": 0}, "max_batch must be a whole number of at least 1, got 0"),
    ({"per_user_tps": 5, "max_batch": 2.5}, "max_batch must be a whole number of at least 1, got 2.5"),
    ({"ttft_ms": 100, "ttft_percentile": 75}, "ttft_percentile must be one of 50, 90, 99, got 75"),
    ({"itl_ms": 200, "itl_percentile": 75}, "itl_percentile must be one of 50, 90, 95, 99, got 75"),
    ({"itl_ms": 0}, "itl_ms must be a positive number, got 0"),
    ({"max_batch": 4}, "declares no promise"),
    ({"steady_within": 0}, "steady_within must be a positive number or a dict such as {'gen_tps': 0.15}, got 0"),
    ({"steady_within": {"ttft_ms": 0.1}}, "steady_within's keys must be prompt_tps or gen_tps, got ttft_ms"),
    ({"steady_within": {}}, "steady_within's keys must be prompt_tps or gen_tps, got an empty dict"),
    ({"steady_within": {"gen_tps": -1}}, "steady_within['gen_tps'] must be a positive number, got -1"),
    ({"gen_scaling": "fast"}, "gen_scaling must be a positive number, got 'fast'"),
    ({"requires": ["KLEIDAI"]}, "requires: unknown feature(s) KLEIDAI"),
    ({"requires": 5}, "requires must list feature names as strings, got 5"),
])
def test_bad_marker_arguments_name_the_test_and_the_key(kwargs, message):
    with pytest.raises(SettingsError) as err:
        parse(**kwargs)
    assert message in str(err.value) and str(err.value).startswith("t.py::test: ")


def test_positional_arguments_are_refused():
    with pytest.raises(SettingsError, match="keyword arguments only"):
        parse_slo((50,), {}, where="t.py::test")


def test_valid_marker_parses_and_undeclared_keys_read_their_defaults():
    spec = parse(per_user_tps="reading", max_batch=4, prompt_tps=50)
    assert spec == SloSpec({"prompt_tps": 50.0, "per_user_tps": "reading", "max_batch": 4})
    assert (spec.ttft_percentile, spec.itl_percentile, spec.gen_tps, spec.requires) == (50, 99, None, ())
    with pytest.raises(AttributeError):
        _ = spec.no_such_key


def test_closest_marker_wins_per_key():
    merged = merge_marker_kwargs([{"gen_tps": 30}, {"gen_tps": 10, "prompt_tps": 50}])
    assert merged == {"gen_tps": 30, "prompt_tps": 50}


def test_marker_help_lists_every_key():
    text = marker_help()
    assert text.startswith("axion_slo(")
    assert all(key.name in text for key in marker_keys())
    assert [key.name for key in marker_keys()][:3] == ["prompt_tps", "gen_tps", "per_user_tps"]


def test_a_miss_reads_like_the_issue_asks():
    (failure,) = failures(judged(parse(per_user_tps="reading"), per_user(9.0, 6.0, 3.9)))
    assert failure.first.message == (
        "per_user_tps at batch 4 (pp128+tg64): 3.90 t/s < 5.00 t/s (reading speed 5 t/s (default), median of 3)")
    assert failure.message().startswith("fail: per_user_tps at batch 4") and failure.kind == "threshold"
    assert failure.property_name == "axion.threshold.per_user_tps.b4.pp128.tg64"


def test_capacity_is_the_largest_batch_up_to_which_every_size_passes():
    assert capacity(judged(parse(per_user_tps=5), per_user(9.0, 6.0, 3.9, 2.0))) == 2
    assert capacity(judged(parse(per_user_tps=5), per_user(9.0, 6.0, 5.5, 5.1))) == 8
    assert capacity(judged(parse(per_user_tps=50), per_user(9.0))) == 0
    assert capacity(judged(parse(prompt_tps=5), [m("prompt_tps")])) is None


def test_sizes_beyond_max_batch_are_shown_not_enforced():
    verdicts = judged(parse(per_user_tps="reading", max_batch=4), per_user(9.0, 7.0, 6.0, 3.0))
    assert not failures(verdicts) and capacity(verdicts) == 4
    assert [v.outcome for v in verdicts] == ["pass", "pass", "pass", "info"]


def test_max_batch_beyond_what_was_measured_is_an_error():
    with pytest.raises(SettingsError, match="max_batch=8 but the test measured batch sizes up to 4"):
        judged(parse(per_user_tps=5, max_batch=8), per_user(9.0, 7.0, 6.0), nodeid="x")


def test_an_slo_the_test_never_measured_is_an_error_not_a_pass():
    with pytest.raises(SettingsError, match=r"axion_slo\(ttft_ms=...\) but the test measured no ttft_ms"):
        judged(parse(ttft_ms=100), [m("prompt_tps")])


def test_ttft_is_an_upper_bound_at_the_chosen_percentile():
    ttft = [m("ttft_ms", samples=(100.0, 110.0, 120.0, 130.0, 400.0))]
    [at_median] = judged(parse(ttft_ms=200), ttft)
    [at_p90] = judged(parse(ttft_ms=200, ttft_percentile=90), ttft)
    assert at_median.outcome == "pass" and at_median.first.detail["statistic"] == "p50"
    assert at_median.first.detail["promise"] == "<= 200.0 ms p50"
    assert at_p90.outcome == "fail"
    assert at_p90.first.message == "ttft_ms at batch 1 (pp128+tg64): 292.0 ms > 200.0 ms (p90 of 5)"


def test_inter_token_latency_is_judged_at_its_percentile_over_every_step():
    steps = [m("itl_ms", batch_size=4, samples=(40.0,) * 98 + (250.0, 260.0))]
    [p99] = judged(parse(itl_ms=200), steps)
    [p90] = judged(parse(itl_ms=200, itl_percentile=90), steps)
    assert p99.outcome == "fail" and p99.kind == "threshold" and p99.first.detail["statistic"] == "p99"
    assert p99.first.message.startswith("itl_ms at batch 4 (pp128+tg64): 250.1 ms > 200.0 ms (p99 of 100)")
    assert p90.outcome == "pass"
    with pytest.raises(SettingsError, match=r"axion_slo\(itl_ms=...\) but the test measured no itl_ms: call axion"):
        judged(parse(itl_ms=200), [m("prompt_tps")])


def test_every_measurement_of_the_metric_is_judged():
    measurements = [m("prompt_tps", samples=(60.0,)), m("prompt_tps", n_prompt=512, samples=(40.0,)),
                    m("gen_tps", samples=(1.0,))]
    verdicts = judged(parse(prompt_tps=50), measurements)
    assert [(v.first.detail["n_prompt"], v.outcome) for v in verdicts] == [(128, "pass"), (512, "fail")]


def test_tolerance_key_sets_the_tests_baseline_tolerance_alone_or_with_promises():
    assert parse_slo((), {"tolerance": "15%"}, where="t.py::x").tolerance == pytest.approx(0.15)
    assert parse_slo((), {"prompt_tps": 50, "tolerance": 0.2}, where="t.py::x").tolerance == pytest.approx(0.2)
    with pytest.raises(SettingsError, match=r"t\.py::x: tolerance must be at least 0 and below 100%"):
        parse_slo((), {"tolerance": 2}, where="t.py::x")
    with pytest.raises(SettingsError, match="tolerance must be a fraction"):
        parse_slo((), {"tolerance": [0.1]}, where="t.py::x")


def test_shape_and_feature_keys_parse_and_count_as_promises():
    spec = parse(steady_within=0.15, gen_scaling=1.5, requires="KLEIDIAI, sve")
    assert (spec.steady_within, spec.gen_scaling, spec.requires) == (SteadyLimits(0.15, 0.15), 1.5, ("KLEIDIAI", "sve"))
    assert parse(steady_within={"gen_tps": 0.2}).steady_within == SteadyLimits(None, 0.2, named=True)
    assert parse(requires=["REPACK"]).requires == ("REPACK",)
