import json

import pytest

from pytest_axion.records import METRICS, Measurement


def make(metric="prompt_tps", samples=(100.0, 110.0, 90.0), **overrides):
    fields = dict(nodeid="t.py::test_x", metric=metric, batch_size=1, n_prompt=512, n_gen=0, threads=2,
                  samples=tuple(samples))
    fields.update(overrides)
    return Measurement(**fields)


def test_units_and_direction_follow_the_metric():
    assert make().unit == "tokens/s" and make().higher_is_better
    latency = make(metric="ttft_ms", samples=(12.0,))
    assert latency.unit == "ms" and not latency.higher_is_better
    assert set(METRICS) == {"prompt_tps", "gen_tps", "per_user_tps", "ttft_ms", "itl_ms"}


def test_median_comes_from_the_samples():
    assert make(samples=(1.0, 5.0, 3.0)).median == 3.0


def test_json_round_trip_keeps_every_sample():
    original = make(samples=(1.5, 2.25, 3.125))
    restored = Measurement.from_json(json.loads(json.dumps(original.to_json())))
    assert restored == original
    assert restored.to_json()["summary"]["median"] == 2.25


def test_key_distinguishes_every_dimension_of_the_workload():
    keys = {make().key, make(batch_size=2).key, make(n_prompt=128).key, make(threads=1).key,
            make(metric="gen_tps").key, make(nodeid="other").key}
    assert len(keys) == 6


def test_shape_labels_read_like_llama_bench():
    assert make().shape == "pp512"
    assert make(metric="gen_tps", n_prompt=0, n_gen=128).shape == "tg128"
    assert make(metric="per_user_tps", n_prompt=128, n_gen=64, batch_size=4).shape == "pp128+tg64 x4"


def test_unknown_metric_and_empty_samples_are_rejected():
    with pytest.raises(ValueError, match="unknown metric"):
        make(metric="speed")
    with pytest.raises(ValueError, match="no samples"):
        make(samples=())
