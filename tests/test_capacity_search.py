"""``axion.capacity()``: the search for the most users whose requests keep every per-request promise.

The walk's rules (top-ups, measuring a straddling level again, the budget, one-line errors) are shown on a
scripted engine whose runs are built and read by the real record code; the search itself is then run on the
real model, in process, under per-user speed and TTFT together.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from pytest_axion.engines.base import Measured
from pytest_axion.errors import AxionError
from pytest_axion.figures import figure
from pytest_axion.harness import Axion
from pytest_axion.promises.capacity import RequestPromise
from pytest_axion.records import BatchedRun, OpenLoopRun, ServedRequest, measurements_of, requests_of
from pytest_axion.report.terminal import search_line


class ScriptedEngine:
    """Batched runs whose per-user speed and TTFT follow ``speed(users, call)`` and ``ttft_ms(users)``."""

    def __init__(self, speed, ttft_ms=lambda users: 100.0 * users, requests_apart=False):
        self.speed, self.ttft_ms, self.calls = speed, ttft_ms, []
        self.requests_apart = requests_apart   # True: each user's request counts on its own, as a server's

    def measure(self, kind, *, nodeid, threads, repetitions, progress=None, **shape) -> Measured:
        users, n_gen = shape["batch_size"], shape["n_gen"]
        self.calls.append((users, repetitions))
        speeds = self.speed(users, len([c for c in self.calls if c[0] == users]))
        speeds = [speeds] * repetitions if isinstance(speeds, float | int) else speeds[:repetitions]
        run = BatchedRun(n_prompt=shape["n_prompt"], n_gen=n_gen, batch_size=users,
                         prompt_seconds=(self.ttft_ms(users) / 1e3,) * repetitions,
                         gen_seconds=tuple(n_gen / s for s in speeds),
                         step_seconds=tuple((1 / s,) * n_gen for s in speeds))
        requests = requests_of(run)
        if self.requests_apart:   # the same figures, each user's request its own observation
            requests = tuple(dataclasses.replace(r, users=1) for r in requests for _ in range(users))
        return Measured(measurements_of(run, nodeid=nodeid, threads=threads), requests=requests)


def harness(engine, promises=(), recorded=None, **options):
    searches = recorded if recorded is not None else []
    return Axion(SimpleNamespace(engine=engine, threads=2), nodeid="t.py::test_users", repetitions=5,
                 record=lambda m: None, request_promises=lambda: list(promises), record_capacity=searches.append,
                 **options)


READING = RequestPromise("per_user_tps", 5.0, label="reading speed 5 t/s (default)")


def test_levels_get_the_requests_they_need_then_the_users_are_doubled_and_bisected():
    engine = ScriptedEngine(lambda users, call: 200.0 / users, requests_apart=True)   # reading speed up to 40 users
    found = []
    result = harness(engine, [READING], found).capacity(budget_s=1e6)
    search = found[0]
    assert (search.most_passing, search.fewest_failing) == (40, 44)   # 44 - 40 users: within 10% of 40
    assert search.ended == "promise"
    assert search.stopped == "44 users: per-user speed p10 4.55 t/s < reading speed 5 t/s (default)"
    # batch sizes 1, 2, 4, 8 with the test's 5 repetitions (all of them first), then topped up to 35 requests
    # each; all recorded
    assert engine.calls[:7] == [(1, 5), (2, 5), (4, 5), (8, 5), (1, 30), (2, 13), (4, 4)]
    assert [len(result[b].ttft_ms.samples) for b in (1, 2, 4, 8)] == [35, 18, 9, 5]   # every repetition
    assert sorted(result.cells)[:4] == [1, 2, 4, 8] and all(lv.requests >= 35 for lv in search.levels)
    assert [lv.users for lv in search.levels] == [1, 2, 4, 8, 16, 32, 64, 48, 40, 44]
    assert engine.calls[7] == (16, 3)   # beyond the batch sizes: search_repetitions, then more if it is not missed


def test_a_level_that_straddles_the_target_is_measured_again_and_stays_inconclusive_if_it_still_does():
    # at 4 users 8 repetitions in 9 keep reading speed: 32 of 36 requests (89%), interval 75%-96%; measured again
    # 64 of 72, interval 80%-94%: still across 90%
    at_four = {1: [9.0, 9.0, 9.0, 9.0, 1.0], 2: [9.0] * 4, 3: [9.0] * 8 + [1.0]}
    engine = ScriptedEngine(lambda users, call: at_four[call] if users == 4 else (9.0 if users < 4 else 1.0),
                            requests_apart=True)
    found = []
    harness(engine, [READING], found).capacity(batch_sizes=[1, 2, 4], budget_s=1e6)
    level = {lv.users: lv for lv in found[0].levels}[4]
    assert (level.status, level.attempts, level.meeting, level.requests) == ("inconclusive", 2, 64, 72)
    assert [c for c in engine.calls if c[0] == 4] == [(4, 5), (4, 4), (4, 9)]   # measured, topped up, again
    assert found[0].ended == "inconclusive" and found[0].most_passing == 3
    assert "4 users inconclusive: 64 of 72 requests (89%; 95% interval 80%-94%)" in found[0].stopped


def test_in_process_every_level_needs_35_repetitions_since_its_users_share_every_step():
    # 8 users x 5 repetitions are 40 requests but 5 observations: 5 met of 5 is no evidence of 90%
    engine = ScriptedEngine(lambda users, call: 9.0 if users <= 8 else 1.0)
    found = []
    harness(engine, [READING], found).capacity(budget_s=1e6)
    assert engine.calls[:8] == [(1, 5), (2, 5), (4, 5), (8, 5), (1, 30), (2, 30), (4, 30), (8, 30)]
    assert {lv.users: lv.observations for lv in found[0].levels}[8] == 35
    assert (found[0].most_passing, found[0].fewest_failing) == (8, 9)
    # a level that every repetition misses is decided on its first 3 (0 of 3: interval 0%-56%)
    assert {lv.users: (lv.status, lv.requests) for lv in found[0].levels}[16] == ("missed", 16 * 3)


def test_the_sessions_budget_bounds_a_search_whose_call_sets_none_and_the_call_overrides_it():
    found = []
    harness(ScriptedEngine(lambda users, call: 9.0), [READING], found, capacity_budget_s=1e-6).capacity(
        batch_sizes=[1, 2])
    assert found[0].ended == "budget" and found[0].stopped.startswith("the time budget (0 s)")
    harness(ScriptedEngine(lambda users, call: 9.0), [READING], found, capacity_budget_s=1e-6).capacity(
        batch_sizes=[1, 2], max_users=4, budget_s=1e6)
    assert found[1].ended != "budget"


def test_a_search_ends_where_the_tests_measuring_budget_does_if_its_own_lasts_longer():
    from pytest_axion.budget import MeasuringClock

    clock = MeasuringClock(budget_s=120.0)
    clock.add("t.py::test_users", ("t.py::test_users", "earlier"), 120.0)   # the test measured all of it
    found = []
    harness(ScriptedEngine(lambda users, call: 9.0), [READING], found, clock=clock).capacity(batch_sizes=[1, 2],
                                                                                             budget_s=1e6)
    assert found[0].ended == "budget"
    assert found[0].stopped == ("the test's measuring budget (--axion-budget) (0 s): 1 users got 5 of the 35 "
                                "observations a level needs to be met at 90%")
    found = []
    harness(ScriptedEngine(lambda users, call: 9.0), [READING], found, clock=MeasuringClock(budget_s=0.0)).capacity(
        batch_sizes=[1, 2], max_users=4, budget_s=1e6)
    assert found[0].ended != "budget"   # no test budget: the search's own


def test_a_level_is_topped_up_only_within_what_the_tests_budget_has_left_after_its_own_measurement(monkeypatch):
    """The test's own first measurement of each batch size comes first and is not the search's, but it spends the
    test's budget: the search tops levels up with what is left (a 70B proxy's search overran its 120 s by 55 s
    when it read the budget before the test's own measurement)."""
    import pytest_axion.harness as harness_module
    from pytest_axion.budget import MeasuringClock

    now = [0.0]
    monkeypatch.setattr(harness_module.time, "perf_counter", lambda: now[0])
    seconds_per_run = {1: 2.0, 2: 1.4}

    class TimedEngine(ScriptedEngine):
        def measure(self, kind, *, repetitions, **rest):
            now[0] += seconds_per_run[rest["batch_size"]] * (repetitions + 1)   # warm-up and repetitions
            return super().measure(kind, repetitions=repetitions, **rest)

    engine, clock, found = TimedEngine(lambda users, call: 9.0), MeasuringClock(budget_s=120.0), []
    harness(engine, [READING], found, clock=clock).capacity(batch_sizes=[1, 2], budget_s=1e6)
    # the test's own cells: 1 user 12 s, 2 users 8.4 s; 1 user topped up by 62 s of the 99.6 s left; topping 2
    # users up (43.4 s) would pass 120 s, measuring its straddling 5 observations again (8.4 s) fits
    assert engine.calls == [(1, 5), (2, 5), (1, 30), (2, 5)]
    assert clock.spent_s("t.py::test_users") <= 120.0
    assert found[0].ended == "budget" and found[0].stopped.startswith("the test's measuring budget (--axion-budget)")


def test_the_budget_ends_the_search_before_a_level_that_would_overrun_it():
    engine = ScriptedEngine(lambda users, call: 9.0)
    found = []
    harness(engine, [READING], found).capacity(batch_sizes=[1, 2], budget_s=1e-6)
    # the test's own 5 repetitions are measured; topping them up to 35 would overrun the budget
    assert engine.calls == [(1, 5), (2, 5)]
    assert found[0].ended == "budget" and found[0].stopped == (
        "the time budget (0 s): 1 users got 5 of the 35 observations a level needs to be met at 90%")
    assert found[0].most_passing == 0 and found[0].fewest_failing == 1


def test_the_test_promises_and_the_call_overrides_are_searched_together():
    engine = ScriptedEngine(lambda users, call: 9.0, ttft_ms=lambda users: 300.0 * users)   # TTFT ends it at 6
    found = []
    harness(engine, [READING], found).capacity(ttft_ms=2000, budget_s=1e6)
    search = found[0]
    assert search.service_level == "per-user speed >= reading speed 5 t/s (default), TTFT <= 2 s"
    assert (search.most_passing, search.fewest_failing) == (6, 7)
    assert search.stopped == "7 users: TTFT p90 2.1 s > 2 s"
    # 6 users, each request 1.8 s of prompt and 16 / 9 s of generation: 6 / 3.58 requests/s, all within
    six = {level.users: level for level in search.levels}[6]
    assert six.goodput_rps == pytest.approx(6 / (1.8 + 16 / 9)) and six.goodput_tps == pytest.approx(16 * 6 / (
        1.8 + 16 / 9))
    assert search_line("t.py::test_users", search).endswith(
        "; 7 did not: TTFT p90 2.1 s > 2 s; goodput at 6 users 1.68 requests/s (27 tokens/s) (levels measured: 1, 2, "
        "4, 8, 6, 7)")


@pytest.mark.parametrize(("call", "message"), [
    (dict(attainment=0), r"attainment is the share of requests that must meet every promise, within \(0, 1\]"),
    (dict(attainment=1.5), r"within \(0, 1\] \(0\.9: 90%\), got 1\.5$"),
    (dict(), r"axion\.capacity\(\) needs a per-request promise to judge by: declare axion_slo\(per_user_tps=\.\.\."),
    (dict(ttft_ms=-1), r"ttft_ms must be a positive number, got -1$"),
    (dict(per_user_tps=5, budget_s=0), r"budget_s must be positive and max_users within 1-256"),
    (dict(per_user_tps=5, max_users=512), r"max_users within 1-256 \(the sequences llama\.cpp holds\)"),
    (dict(per_user_tps=5, max_users=4), r"batch_sizes go up to 8, beyond max_users=4: raise max_users or leave"),
    (dict(per_user_tps=5, n_gen=1), r"per-user speed and inter-token latency come after the first token"),
])
def test_bad_capacity_calls_are_one_line_errors_naming_the_test(call, message):
    with pytest.raises(Exception) as err:
        harness(ScriptedEngine(lambda users, c: 9.0)).capacity(**call)
    assert str(err.value).startswith("t.py::test_users: axion.capacity()") and "\n" not in str(err.value)
    assert __import__("re").search(message, str(err.value)), str(err.value)
    assert isinstance(err.value, AxionError)   # shown as one line, no traceback


def test_on_the_real_model_in_process_the_search_brackets_users_under_speed_and_ttft_together(engine):
    """The embedded model on this machine, whatever its speed today: the TTFT limit is three times one user's, so
    the prompt phase of many users' prompts ends the search somewhere above one user. Attainment 0.5 lets a level
    decide on 4 requests (the 0.9 default needs 35: shown on the scripted engine above), so the search is quick."""
    one_user = engine.measure("batched", nodeid="calibration", threads=2, repetitions=3, n_prompt=16, n_gen=4,
                              batch_size=1).current["ttft_ms"].median
    found = []
    result = harness(engine, [RequestPromise("per_user_tps", 1.0)], found).capacity(
        n_prompt=16, n_gen=4, ttft_ms=3 * one_user, attainment=0.5, batch_sizes=[1, 2], repetitions=2, budget_s=120)
    search = found[0]
    assert search.ended in ("promise", "inconclusive"), search.stopped
    low, high = search.most_passing, search.fewest_failing
    assert low >= 1 and high is not None and high - low <= max(1, 0.1 * low)
    for level in search.levels:   # each level decided by its interval, on the requests it needed
        assert level.requests >= 4
        assert {"met": level.low >= 0.5, "missed": level.high < 0.5,
                "inconclusive": level.attempts == 2}[level.status], level
    ending = search.ending_level
    assert ending.status == "inconclusive" or ending.worst.startswith(("TTFT p50", "per-user speed p50"))
    # physics: the users' prompts are processed together, so the first token comes later with more users
    ttft = {level.users: dict(level.figures)["ttft_ms"] for level in search.levels}
    assert ttft[max(ttft)] > ttft[1]
    assert sorted(result.cells)[:2] == [1, 2] and result[2].ttft_ms is not None


class QueueEngine:
    """A served deployment of one slot as arithmetic: requests served one after another in arrival order, each
    taking ``service_s`` (its first token halfway), so that waiting grows with the rate as a real queue's does."""

    requests_apart = True

    def __init__(self, service_s):
        self.service_s, self.schedules = service_s, []

    def open_loop(self, arrivals, *, n_prompt, n_gen, max_in_flight, progress=None):
        self.schedules.append(arrivals)
        served, free_at, busy = [], 0.0, []
        for index, due in enumerate(arrivals):
            start = max(due, free_at)
            free_at = start + self.service_s
            first = start + self.service_s / 2
            busy = [end for end in busy if end > due] + [free_at]
            served.append(ServedRequest(user=index, due=due, first_token=first, end=free_at,
                                        token_times=tuple(first + i * self.service_s / 2 / (n_gen - 1)
                                                          for i in range(n_gen)), completion_tokens=n_gen))
        return OpenLoopRun(n_prompt=n_prompt, n_gen=n_gen, requests=tuple(served), window_s=arrivals[-1],
                           most_in_flight=max(len(busy), 1), max_in_flight=max_in_flight)


def test_by_rate_the_search_doubles_then_bisects_the_rate_and_names_the_promise_that_ended_it():
    found = []
    engine = QueueEngine(0.1)   # one slot of 100 ms a request: at most 10 requests/s
    # nearly even arrivals (gamma shape 50): the queue stays short up to the slot's 10 requests/s, then grows
    search = harness(engine, [], found).capacity(by="rate", ttft_ms=300, start_rate=2.0, n_gen=8, burstiness=50)
    assert found == [search] and search.by == "rate" and search.ended == "promise"
    assert [level.load for level in search.levels] == [2.0, 4.0, 8.0, 16.0, 12.0, 10.0, 11.0]
    assert (search.most_passing, search.fewest_failing) == (10.0, 11.0)   # the slot's arithmetic: 1 / 100 ms
    assert search.stopped.startswith("11.0 requests/s: TTFT p90 ") and search.stopped.endswith(" > 300 ms")
    for level, schedule in zip(search.levels, engine.schedules[1:], strict=True):
        # each level holds about 1.5 times the 35 requests its verdict needs, from a schedule of its own
        assert level.requests >= 35 and level.requests_per_s == level.load
        assert schedule[-1] <= 1.5 * 35 / level.load
    assert len({schedule[:3] for schedule in engine.schedules[1:]}) == len(engine.schedules) - 1
    assert search_line("t.py::test_users", search).startswith(
        "capacity t.py::test_users: 10.0 requests/s (open loop) with 90% of requests at TTFT <= 300 ms; 11.0 did "
        "not: TTFT p90")
    assert engine.schedules[0] == (0.0,)   # one lone request first: what the default start rate comes from
    assert search.to_json()["by"] == "rate" and search.to_json()["most_passing"] == 10.0


def test_by_rate_a_poisson_level_near_the_limit_is_measured_again_and_may_stay_inconclusive():
    search = harness(QueueEngine(0.1)).capacity(by="rate", ttft_ms=300, start_rate=2.0, n_gen=8)
    straddling = [level for level in search.levels if level.attempts == 2]
    assert straddling and all(level.requests >= 70 for level in straddling)   # two schedules pooled
    assert search.ended == "inconclusive" and search.stopped.startswith(
        f"{figure(search.fewest_failing)} requests/s inconclusive: ")


def test_by_rate_a_first_rate_that_misses_is_halved_and_the_search_ends_at_its_lowest():
    found = []
    search = harness(QueueEngine(1.0), [], found).capacity(by="rate", ttft_ms=100, n_gen=8, budget_s=1000)
    assert [level.load for level in search.levels] == [1.0, 0.5, 0.25, 0.125]   # from 1 / the lone request's 1 s
    assert search.ended == "lowest rate" and search.most_passing == 0
    assert search.stopped.startswith("its lowest rate: 0.125 requests/s (the first, 1.00, halved 3 times) did not "
                                     "hold: TTFT p90 ")


@pytest.mark.parametrize(("call", "message"), [
    (dict(by="speed"), r'by is "users" \(concurrent users, closed loop\) or "rate" \(requests/s, open loop\), got'),
    (dict(by="rate", budget_s=0), r"budget_s must be positive and duration_s 0 or more"),
    (dict(by="rate", start_rate=0), r"requests_per_s must be a positive number, got 0$"),
    (dict(by="rate", burstiness=-1), r"burstiness must be a positive number, got -1$"),
])
def test_bad_rate_searches_are_one_line_errors_naming_the_test(call, message):
    with pytest.raises(AxionError) as err:
        harness(QueueEngine(0.1)).capacity(ttft_ms=300, **call)
    assert str(err.value).startswith("t.py::test_users: axion.capacity(") and "\n" not in str(err.value)
    assert __import__("re").search(message, str(err.value)), str(err.value)


def test_by_rate_the_budget_stops_a_search_before_a_level_would_overrun_it():
    search = harness(QueueEngine(0.1)).capacity(by="rate", ttft_ms=300, start_rate=2.0, budget_s=20)
    assert search.levels == () and search.ended == "budget"
    assert search.stopped == "the time budget: 2.00 requests/s would take about 26 s, over the 20 s left of 20 s"


def test_in_process_an_open_loop_is_one_line_saying_it_needs_a_served_deployment(engine):
    for call in (lambda axion: axion.rate(2.0, ttft_ms=500), lambda axion: axion.capacity(by="rate", ttft_ms=500)):
        with pytest.raises(AxionError) as err:
            call(harness(engine))
        assert str(err.value) == (
            't.py::test_users: an open loop (axion.rate(), axion.capacity(by="rate")) sends requests at a rate to a '
            "served deployment (--axion-serve N or --axion-endpoint URL); in process, search for the most users "
            "with axion.capacity() instead")
