"""The capacity search's pure parts: a level's attainment and interval, the requests it is judged on, and the
doubling-then-bisecting walk to a bracket. The real-model search is in tests/test_capacity_search.py."""

from __future__ import annotations

import pytest

from pytest_axion.errors import SettingsError
from pytest_axion.promises.capacity import (
    RequestPromise,
    bracket_closed,
    check_attainment,
    judge_level,
    level_status,
    min_requests,
    next_users,
    wilson_interval,
)
from pytest_axion.records import (
    BatchedRun,
    CapacitySearch,
    Measurement,
    RequestFigures,
    ServedRequest,
    ServedRun,
    bracket_of,
    measurements_of,
    requests_from_measurements,
    requests_of,
)


def request(ttft_ms=100.0, per_user_tps=20.0, itl_ms=(50.0, 50.0)):
    return RequestFigures(ttft_ms=ttft_ms, per_user_tps=per_user_tps, itl_ms=tuple(itl_ms))


def test_wilson_interval_matches_the_textbook_values():
    # Wilson (1927) at 95%: 5 of 10 -> 0.237-0.763; 0 of 10 -> 0-0.278; 10 of 10 -> 0.722-1
    for (k, n), (low, high) in {(5, 10): (0.2366, 0.7634), (0, 10): (0.0, 0.2775), (10, 10): (0.7225, 1.0)}.items():
        got = wilson_interval(k, n)
        assert got == pytest.approx((low, high), abs=1e-4)


def test_a_level_needs_35_requests_all_meeting_to_clear_90_percent():
    assert min_requests(0.9) == 35
    assert level_status(35, 35, 0.9)[0] == "met"
    assert level_status(34, 34, 0.9)[0] == "inconclusive"   # one request fewer: the interval reaches below 90%
    assert level_status(30, 40, 0.9)[0] == "missed"
    assert level_status(0, 1, 0.9)[0] == "missed"            # one request that missed: already below
    assert min_requests(0.5) == 4 and level_status(4, 4, 0.5)[0] == "met"


def test_attainment_one_asks_every_request_and_no_interval():
    assert min_requests(1.0) == 1
    assert level_status(3, 3, 1.0)[0] == "met" and level_status(99, 100, 1.0)[0] == "missed"


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, True, "0.9", None])
def test_attainment_outside_zero_to_one_is_one_line(bad):
    with pytest.raises(SettingsError, match=r"^t\.py::test: attainment is the share of requests that must meet "
                                            r"every promise, within \(0, 1\] \(0\.9: 90%\), got"):
        check_attainment(bad, "t.py::test")


def test_a_request_is_judged_by_every_promise_at_once():
    promises = [RequestPromise("per_user_tps", 5.0, label="reading speed 5 t/s (default)"),
                RequestPromise("ttft_ms", 2000.0), RequestPromise("itl_ms", 200.0, percentile=99)]
    good = request(ttft_ms=1500, per_user_tps=6.0, itl_ms=[100.0] * 20)
    slow_start = request(ttft_ms=2900, per_user_tps=6.0, itl_ms=[100.0] * 20)
    one_stall = request(ttft_ms=100, per_user_tps=6.0, itl_ms=[100.0] * 19 + [900.0])   # its p99 gap: 748 ms
    assert [all(p.met_by(r) for p in promises) for r in (good, slow_start, one_stall)] == [True, False, False]
    assert [p.describe() for p in promises] == ["per-user speed >= reading speed 5 t/s (default)", "TTFT <= 2 s",
                                                "ITL p99 <= 200 ms"]


def test_a_level_missed_by_several_promises_together_says_how_many_missed_the_worst():
    # 34 good requests, 3 with a slow start, 3 slow: 34 of 40 (inconclusive), and neither promise's p90 breaks it
    promises = [RequestPromise("per_user_tps", 5.0), RequestPromise("ttft_ms", 2000.0)]
    requests = [request()] * 34 + [request(ttft_ms=3000)] * 3 + [request(per_user_tps=1.0)] * 3
    level = judge_level(8, requests, promises, 0.9)
    assert level.status == "inconclusive" and level.worst == "3 of 40 requests missed per-user speed >= 5 t/s"


def test_a_missed_level_names_the_promise_most_requests_missed_at_the_attainments_percentile():
    promises = [RequestPromise("per_user_tps", 5.0), RequestPromise("ttft_ms", 2000.0)]
    requests = [request(ttft_ms=1002 + 50 * i, per_user_tps=7.0) for i in range(40)]   # TTFT 1002..2952 ms
    level = judge_level(8, requests, promises, 0.9)
    assert level.status == "missed" and level.meeting == 20 and level.requests == 40   # TTFT up to 1952 ms
    assert level.worst == "TTFT p90 2.76 s > 2 s"
    assert dict(level.figures)["ttft_ms"] == pytest.approx(2757.0)
    met = judge_level(4, [request()] * 40, promises, 0.9)
    assert met.status == "met" and met.worst == "" and met.attainment == 1.0


def test_a_request_without_the_promised_figure_misses_it():
    level = judge_level(2, [request(per_user_tps=None)] * 40, [RequestPromise("per_user_tps", 5.0)], 0.9)
    assert level.status == "missed" and level.worst == "40 of 40 requests missed per-user speed >= 5 t/s"


def walk(capacity: int, max_users: int = 256, start=(1, 2, 4, 8)) -> list:
    """The search's walk over a deployment that meets every promise up to ``capacity`` users, exactly."""
    levels = []

    def level(users):
        met = users <= capacity
        return judge_level(users, [request(per_user_tps=9.0 if met else 1.0)] * 35, [RequestPromise(
            "per_user_tps", 5.0)], 0.9)
    levels += [level(u) for u in start]
    while (users := next_users(levels, max_users)) is not None:
        assert users not in {lv.users for lv in levels}
        levels.append(level(users))
    return levels


@pytest.mark.parametrize("capacity", [0, 1, 3, 5, 8, 9, 17, 31, 32, 33, 47, 100, 129, 200, 255])
def test_the_walk_brackets_every_capacity_within_ten_percent_or_one_user(capacity):
    levels = walk(capacity)
    low, high = bracket_of(levels)
    assert low <= capacity < high and bracket_closed(low, high)
    assert high - low <= max(1, 0.1 * low)
    assert len(levels) <= 4 + 8 + 6   # the start, at most 8 doublings to 256, then a bisection of few steps


def test_the_walk_ends_at_the_most_users_when_all_were_met():
    levels = walk(1000)
    assert bracket_of(levels) == (256, None) and max(lv.users for lv in levels) == 256
    assert bracket_of(walk(1000, max_users=12)) == (12, None)


def search_of(levels) -> CapacitySearch:
    return CapacitySearch("t.py::test", 16, 16, "per-user speed >= 5 t/s", 0.9, tuple(levels), "promise", "")


def test_the_bracket_skips_a_level_met_above_the_first_one_not_met():
    met = judge_level(1, [request()] * 35, [RequestPromise("per_user_tps", 5.0)], 0.9)
    missed = judge_level(1, [request(per_user_tps=1.0)] * 35, [RequestPromise("per_user_tps", 5.0)], 0.9)
    levels = [met, *(lv.__class__(**{**lv.__dict__, "users": u}) for lv, u in ((met, 2), (missed, 4), (met, 8)))]
    search = search_of(levels)
    assert (search.most_passing, search.fewest_failing) == (2, 4)
    assert search.to_json()["levels"][2]["status"] == "missed"


def batched_run():
    return BatchedRun(n_prompt=16, n_gen=3, batch_size=2, prompt_seconds=(0.1, 0.2), gen_seconds=(0.3, 0.6),
                      step_seconds=((0.1, 0.1, 0.1), (0.2, 0.2, 0.2)))


def test_in_process_a_repetition_is_one_observation_of_all_its_users():
    requests = requests_of(batched_run())
    assert len(requests) == 2   # 2 repetitions, each standing for its 2 users (they shared every step)
    assert requests[0] == RequestFigures(ttft_ms=100.0, per_user_tps=10.0, itl_ms=(100.0,) * 3,
                                         latency_s=pytest.approx(0.4), users=2)
    assert requests[1].ttft_ms == 200.0 and requests[1].per_user_tps == pytest.approx(5.0)
    # the interval counts the 2 observations, the share and the text count the 4 requests
    level = judge_level(2, requests, [RequestPromise("per_user_tps", 8.0)], 0.5)
    assert (level.requests, level.meeting, level.observations) == (4, 2, 2) and level.evidence == (
        "2 of 4 requests in 2 repetitions")
    assert (level.low, level.high) == pytest.approx(wilson_interval(1, 2))


def test_served_requests_keep_their_own_figures():
    run = ServedRun(n_prompt=16, n_gen=3, batch_size=2, requests=(
        ServedRequest(user=0, due=0.0, first_token=0.5, end=0.9, token_times=(0.5, 0.7, 0.9), completion_tokens=3),
        ServedRequest(user=1, due=0.0, first_token=1.5, end=1.6, token_times=(1.5, 1.55, 1.6), completion_tokens=3),
        ServedRequest(user=0, due=0.9, first_token=1.0, end=1.0, token_times=(1.0,), completion_tokens=1)))
    requests = requests_of(run)
    assert [r.ttft_ms for r in requests] == pytest.approx([500.0, 1500.0, 100.0])
    assert requests[0].per_user_tps == pytest.approx(5.0) and requests[2].per_user_tps is None
    assert requests[1].itl_ms == pytest.approx((50.0, 50.0)) and requests[2].itl_ms == ()


def test_a_replayed_cell_gives_back_the_requests_its_run_had():
    run = batched_run()
    rebuilt = requests_from_measurements(measurements_of(run, nodeid="t", threads=2))
    assert rebuilt == requests_of(run)
    served = ServedRun(n_prompt=16, n_gen=3, batch_size=2, requests=tuple(
        ServedRequest(user=u, due=r, first_token=r + 0.1 * (u + 1), end=r + 0.5, token_times=(
            r + 0.1 * (u + 1), r + 0.3, r + 0.5), completion_tokens=3) for r in (0.0, 1.0) for u in (0, 1)))
    rebuilt, original = requests_from_measurements(measurements_of(served, nodeid="t", threads=2)), requests_of(served)
    for figure in ("ttft_ms", "per_user_tps", "itl_ms", "latency_s"):
        for mine, theirs in zip(rebuilt, original, strict=True):
            assert getattr(mine, figure) == pytest.approx(getattr(theirs, figure))
    assert requests_from_measurements({"gen_tps": Measurement("t", "gen_tps", 1, 0, 8, 2, (5.0,))}) == ()


def test_goodput_counts_the_requests_per_second_that_met_every_promise():
    # 4 users one request after another, 2 s each: 2 requests/s, of which 30 in 40 met the promise
    requests = [request(per_user_tps=9.0 if i < 30 else 1.0) for i in range(40)]
    requests = [RequestFigures(r.ttft_ms, r.per_user_tps, r.itl_ms, latency_s=2.0) for r in requests]
    level = judge_level(4, requests, [RequestPromise("per_user_tps", 5.0)], 0.9, n_gen=16)
    assert level.goodput_rps == pytest.approx(1.5) and level.goodput_tps == pytest.approx(24.0)
    assert judge_level(4, [request()] * 40, [RequestPromise("per_user_tps", 5.0)], 0.9).goodput_rps is None
