"""Efficiency against the machine's limits: the arithmetic, the promise, the cache of limits, and a real measurement."""

import json

import pytest

from pytest_axion.errors import SettingsError
from pytest_axion.machine.costs import ModelCosts
from pytest_axion.machine.limits import Bandwidth, MachineLimits, measure_in_subprocess
from pytest_axion.promises.confirm import confirm
from pytest_axion.promises.efficiency import EfficiencyPromise, Roofs, efficiency_figures, promises
from pytest_axion.promises.marker import PromiseContext, parse_slo
from pytest_axion.records import Measurement
from pytest_axion.store.limits_cache import limits_for

COSTS = ModelCosts(step_weight_bytes=100_000_000, embedding_row_bytes=0, matrix_params=50_000_000, n_layer=10,
                   n_head=8, n_head_kv=2, head_dim=64, tied_embedding=True)


def limits(read_gbs=20.0, gflops=100.0):
    bandwidth = Bandwidth(100_000_000, {"copy": read_gbs, "add": read_gbs, "read": read_gbs},
                          {"copy": read_gbs, "add": read_gbs, "read": read_gbs})
    return MachineLimits(threads=2, model=bandwidth, beyond_cache=bandwidth, compute_gflops=gflops,
                         compute_median_gflops=gflops)


ROOFS = Roofs(COSTS, limits())


def measurement(metric, speed, *, batch_size=1, n_prompt=0, n_gen=64):
    return Measurement(nodeid="t.py::test", metric=metric, batch_size=batch_size, n_prompt=n_prompt, n_gen=n_gen,
                       threads=2, samples=(speed, speed, speed))


def test_generation_bandwidth_is_steps_times_bytes_per_step():
    # tg64 from an empty cache: mean context 32 positions; KV per position 2*10*2*64*2 = 5120 bytes
    (figure,) = efficiency_figures([measurement("gen_tps", 100.0)], ROOFS)
    step_bytes = 100_000_000 + 32 * 5120
    assert figure.achieved == pytest.approx(100 * step_bytes / 1e9)
    assert figure.fraction == pytest.approx(100 * step_bytes / 1e9 / 20.0)
    assert figure.intensity == pytest.approx(COSTS.gen_step_ops(1, 32) / step_bytes)
    assert figure.cell == "tg64 x1" and figure.unit == "GB/s"


def test_batched_generation_counts_steps_not_tokens_and_every_users_cache():
    # 4 users at 200 tokens/s in total: 50 steps/s, each reading the weights once and 4 caches of 128+32 positions
    (figure,) = efficiency_figures([measurement("gen_tps", 200.0, batch_size=4, n_prompt=128)], ROOFS)
    assert figure.achieved == pytest.approx(50 * (100_000_000 + 4 * 160 * 5120) / 1e9)


def test_prompt_compute_is_tokens_times_operations_per_token():
    (figure,) = efficiency_figures([measurement("prompt_tps", 400.0, n_prompt=512, n_gen=0)], ROOFS)
    assert figure.achieved == pytest.approx(400 / 512 * COSTS.prompt_ops(512) / 1e9)
    assert figure.roof == 100.0 and figure.unit == "GFLOP/s"


def test_latency_metrics_have_no_efficiency():
    assert efficiency_figures([measurement("ttft_ms", 300.0), measurement("itl_ms", 10.0)], ROOFS) == []


def judge(fraction, measured, key="gen_bandwidth", roofs=ROOFS):
    promise = EfficiencyPromise(key, fraction, lambda: roofs, "t.py::test")
    return confirm("t.py::test", [promise], measured, attempts=1, measure_again=None)


def test_promise_met_and_missed():
    # tg64 at 100 t/s: 10.0 GB/s of 20 GB/s = 50%
    assert [v.outcome for v in judge(0.4, [measurement("gen_tps", 100.0)])] == ["pass"]
    (missed,) = judge(0.6, [measurement("gen_tps", 100.0)])
    assert missed.outcome == "fail"
    assert "efficiency gen_bandwidth at tg64 x1: 50% of the machine's read bandwidth (10.0 of 20.0 GB/s" in \
        missed.message()


def test_cells_past_the_ridge_are_shown_not_judged():
    # ridge = 100 GFLOP/s / 20 GB/s = 5 FLOP/byte; 64 users per step do ~64 FLOP/byte: compute-bound
    (shown,) = judge(0.9, [measurement("gen_tps", 100.0, batch_size=64, n_prompt=16)])
    assert shown.outcome == "info" and "not judged" in shown.first.message and "compute side" in shown.first.message


def test_marker_parsing():
    spec = parse_slo((), {"efficiency": {"gen_bandwidth": 0.5}}, where="t.py::test")
    assert spec.efficiency == {"gen_bandwidth": 0.5}
    for bad, hint in (({"gen_bw": 0.5}, "unknown efficiency key"), ({"gen_bandwidth": 50}, "at most 1"),
                      (0.5, "must be a dict"), ({"gen_bandwidth": -1}, "positive number")):
        with pytest.raises(SettingsError, match=hint):
            parse_slo((), {"efficiency": bad}, where="t.py::test")


def test_efficiency_off_is_a_clear_error():
    spec = parse_slo((), {"efficiency": {"gen_bandwidth": 0.5}}, where="t.py::test")
    with pytest.raises(SettingsError, match="--axion-efficiency off"):
        promises(spec, PromiseContext("t.py::test", reading=lambda: None, roofs=None))


def test_limits_are_cached_per_hardware_and_threads_for_a_week(tmp_path):
    calls = []

    def fake_measure(threads, model_bytes):
        calls.append((threads, model_bytes))
        return limits(read_gbs=10.0 + len(calls))

    first, source = limits_for("hw-a", 2, 100 << 20, cache_dir=tmp_path, now=1000.0, measure_now=fake_measure)
    assert source == "measured in this run" and first.read_gbs == 11.0
    again, source = limits_for("hw-a", 2, 100 << 20, cache_dir=tmp_path, now=2000.0, measure_now=fake_measure)
    assert again == first and source.startswith("cached, measured 1970-01-01")
    other, _ = limits_for("hw-a", 4, 100 << 20, cache_dir=tmp_path, now=2000.0, measure_now=fake_measure)
    assert other.read_gbs == 12.0   # another thread count is another entry
    later, source = limits_for("hw-a", 2, 100 << 20, cache_dir=tmp_path, now=1000.0 + 8 * 86400,
                               measure_now=fake_measure)
    assert later.read_gbs == 13.0 and source == "measured in this run"
    fresh, _ = limits_for("hw-a", 2, 100 << 20, mode="fresh", cache_dir=tmp_path, now=1000.0 + 8 * 86400,
                          measure_now=fake_measure)
    assert fresh.read_gbs == 14.0
    (entry,) = [p for p in tmp_path.iterdir() if p.name.startswith("hw-a-t2-")]
    entry.write_text("{not json")   # a damaged entry is measured again and rewritten, never an error
    repaired, _ = limits_for("hw-a", 2, 100 << 20, cache_dir=tmp_path, now=1.0e9, measure_now=fake_measure)
    assert repaired.read_gbs == 15.0 and json.loads(entry.read_text())["limits"]["threads"] == 2


def test_real_limits_measurement_in_a_subprocess():
    measured = measure_in_subprocess(2, 32 << 20, budget_s=0.05)
    assert measured.threads == 2 and measured.model.working_set_bytes >= 32 << 20
    assert measured.beyond_cache.working_set_bytes >= 512 << 20
    for bandwidth in (measured.model, measured.beyond_cache):
        assert set(bandwidth.best_gbs) == {"copy", "add", "read"}
        assert all(0.1 < bandwidth.best_gbs[k] < 10_000 and bandwidth.median_gbs[k] <= bandwidth.best_gbs[k]
                   for k in bandwidth.best_gbs)
    assert 0.1 < measured.compute_median_gflops <= measured.compute_gflops < 1e6
    assert MachineLimits.from_json(json.loads(json.dumps(measured.to_json()))) == measured
