import pytest

from pytest_axion.errors import SettingsError
from pytest_axion.reading import ReadingSpeed
from pytest_axion.records import Measurement
from pytest_axion.shape import SteadyLimits
from pytest_axion.slo import SLO_KEYS, SloSpec, evaluate_slos, marker_help, merge_marker_kwargs, parse_slo

READING = ReadingSpeed(5.0, "reading speed 5 t/s (default)")


def m(metric, batch_size=1, samples=(10.0, 11.0, 12.0), n_prompt=128, n_gen=64):
    return Measurement(nodeid="t.py::test", metric=metric, batch_size=batch_size, n_prompt=n_prompt, n_gen=n_gen,
                       threads=2, samples=tuple(samples))


def per_user(*medians):
    return [m("per_user_tps", batch_size=b, samples=(v, v, v)) for b, v in zip((1, 2, 4, 8), medians, strict=False)]


def parse(**kwargs):
    return parse_slo((), kwargs, where="t.py::test")


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt_tsp": 50}, "unknown axion_slo key(s) prompt_tsp; known: gen_scaling, gen_tps, max_batch"),
    ({"prompt_tps": "fast"}, "prompt_tps must be a positive number, got 'fast'"),
    ({"prompt_tps": 0}, "prompt_tps must be a positive number, got 0"),
    ({"gen_tps": -5}, "gen_tps must be a positive number, got -5"),
    ({"gen_tps": True}, "gen_tps must be a positive number, got True"),
    ({"ttft_ms": float("nan")}, "ttft_ms must be a positive number"),
    ({"per_user_tps": "slow"}, "per_user_tps must be a positive number or 'reading', got 'slow'"),
    ({"per_user_tps": 5, "max_batch": 0}, "max_batch must be a whole number of at least 1, got 0"),
    ({"per_user_tps": 5, "max_batch": 2.5}, "max_batch must be a whole number of at least 1, got 2.5"),
    ({"ttft_ms": 100, "ttft_percentile": 75}, "ttft_percentile must be one of 50, 90, 99, got 75"),
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


def test_valid_marker_parses():
    assert parse(per_user_tps="reading", max_batch=4, prompt_tps=50) == SloSpec(
        prompt_tps=50.0, per_user_tps="reading", max_batch=4)


def test_closest_marker_wins_per_key():
    merged = merge_marker_kwargs([{"gen_tps": 30}, {"gen_tps": 10, "prompt_tps": 50}])
    assert merged == {"gen_tps": 30, "prompt_tps": 50}


def test_marker_help_lists_every_key():
    text = marker_help()
    assert text.startswith("axion_slo(")
    assert all(key.name in text for key in SLO_KEYS)


def test_a_miss_reads_like_the_issue_asks():
    outcome = evaluate_slos(parse(per_user_tps="reading"), per_user(9.0, 6.0, 3.9), nodeid="t.py::test",
                            reading=READING)
    (failure,) = outcome.failures
    assert failure.message() == (
        "per_user_tps at batch 4: 3.90 t/s < 5.00 t/s (reading speed 5 t/s (default), median of 3)")


def test_capacity_is_the_largest_batch_up_to_which_every_size_passes():
    assert evaluate_slos(parse(per_user_tps=5), per_user(9.0, 6.0, 3.9, 2.0), nodeid="x",
                         reading=READING).capacity == 2
    assert evaluate_slos(parse(per_user_tps=5), per_user(9.0, 6.0, 5.5, 5.1), nodeid="x",
                         reading=READING).capacity == 8
    assert evaluate_slos(parse(per_user_tps=50), per_user(9.0), nodeid="x", reading=READING).capacity == 0
    assert evaluate_slos(parse(prompt_tps=5), [m("prompt_tps")], nodeid="x", reading=READING).capacity is None


def test_sizes_beyond_max_batch_are_shown_not_enforced():
    outcome = evaluate_slos(parse(per_user_tps="reading", max_batch=4), per_user(9.0, 7.0, 6.0, 3.0),
                            nodeid="x", reading=READING)
    assert not outcome.failures and outcome.capacity == 4
    assert [v.verdict for v in outcome.verdicts] == ["pass", "pass", "pass", "info"]


def test_max_batch_beyond_what_was_measured_is_an_error():
    with pytest.raises(SettingsError, match="max_batch=8 but the test measured batch sizes up to 4"):
        evaluate_slos(parse(per_user_tps=5, max_batch=8), per_user(9.0, 7.0, 6.0), nodeid="x", reading=READING)


def test_an_slo_the_test_never_measured_is_an_error_not_a_pass():
    with pytest.raises(SettingsError, match=r"axion_slo\(ttft_ms=...\) but the test measured no ttft_ms"):
        evaluate_slos(parse(ttft_ms=100), [m("prompt_tps")], nodeid="t.py::test", reading=READING)


def test_ttft_is_an_upper_bound_at_the_chosen_percentile():
    ttft = [m("ttft_ms", samples=(100.0, 110.0, 120.0, 130.0, 400.0))]
    at_median = evaluate_slos(parse(ttft_ms=200), ttft, nodeid="x", reading=READING).verdicts[0]
    at_p90 = evaluate_slos(parse(ttft_ms=200, ttft_percentile=90), ttft, nodeid="x", reading=READING).verdicts[0]
    assert at_median.passed and at_median.statistic == "p50" and at_median.comparison == "<="
    assert not at_p90.passed and at_p90.message().startswith("ttft_ms at batch 1: 292.0 ms > 200.0 ms (p90 of 5)")


def test_every_measurement_of_the_metric_is_judged():
    measurements = [m("prompt_tps", samples=(60.0,)), m("prompt_tps", n_prompt=512, samples=(40.0,)),
                    m("gen_tps", samples=(1.0,))]
    outcome = evaluate_slos(parse(prompt_tps=50), measurements, nodeid="x", reading=READING)
    assert [(v.n_prompt, v.passed) for v in outcome.verdicts] == [(128, True), (512, False)]


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
    assert not spec.is_empty
    assert not parse(requires=["REPACK"]).is_empty
