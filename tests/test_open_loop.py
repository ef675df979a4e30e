"""Open-loop load (``axion.rate``): arrivals on a schedule, each request timed from when it was due, judged as a
capacity level by the test's per-request promises.

The schedule and the rules are pure and checked here directly. The client is checked against a stand-in server
with one slot and a known service time, where the truth is known: below its capacity nothing waits, beyond it a
queue grows with the run. The real llama-server's open loop is measured in test_served.py.
"""

import itertools
import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pytest_axion.engines.arrivals import arrival_times
from pytest_axion.engines.base import no_open_loop
from pytest_axion.engines.endpoint import EndpointEngine
from pytest_axion.errors import SettingsError
from pytest_axion.promises.capacity import RequestPromise, check_open_loop, judge_open_loop, min_requests
from pytest_axion.records import EngineError

TOKENS = 8
TOKEN_S = 0.005   # one slot, 8 tokens 5 ms apart: about 40 ms a request, at most about 25 requests/s


class OneSlot(BaseHTTPRequestHandler):
    """An OpenAI-compatible stand-in serving one request at a time (the others wait for its slot), streaming a
    token every 5 ms, with usage."""

    slot = threading.Lock()

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = json.dumps({"data": [{"id": "stand-in"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        with self.slot:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for _ in range(request["max_tokens"]):
                time.sleep(TOKEN_S)
                self.wfile.write(b'data: {"choices": [{"text": "x", "finish_reason": null}]}\n\n')
                self.wfile.flush()
            usage = json.dumps({"completion_tokens": request["max_tokens"]})
            self.wfile.write(b'data: {"choices": [{"text": "", "finish_reason": "length"}], "usage": '
                             + usage.encode() + b"}\n\ndata: [DONE]\n\n")


@pytest.fixture
def one_slot():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (OneSlot,), {"slot": threading.Lock()}))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1"
    httpd.shutdown()


def test_arrivals_keep_the_mean_rate_and_burstiness_sets_their_spread():
    poisson = arrival_times(10.0, 200.0, seed=1)
    assert 1800 < len(poisson) < 2200 and all(0 < t <= 200 for t in poisson)
    assert list(poisson) == sorted(poisson) and poisson == arrival_times(10.0, 200.0, seed=1)
    assert poisson != arrival_times(10.0, 200.0, seed=2)

    def gap_cv(times):
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return statistics.pstdev(gaps) / statistics.fmean(gaps)

    bursty, even = arrival_times(10.0, 200.0, 0.25, seed=1), arrival_times(10.0, 200.0, 4.0, seed=1)
    assert 1700 < len(bursty) < 2300 and 1800 < len(even) < 2200   # the same mean rate at every burstiness
    # a gamma of shape k has a coefficient of variation of 1/sqrt(k): 2 bursty, 1 Poisson, 0.5 even
    assert 1.7 < gap_cv(bursty) < 2.3 and 0.9 < gap_cv(poisson) < 1.1 and 0.4 < gap_cv(even) < 0.6


@pytest.mark.parametrize("args, expected", [
    ((0, 60, 1.0, 128, 0.9), r"requests_per_s must be a positive number, got 0$"),
    ((-1.5, 60, 1.0, 128, 0.9), r"requests_per_s must be a positive number, got -1\.5$"),
    ((2.0, 60, 0, 128, 0.9), r"burstiness must be a positive number, got 0$"),
    ((2.0, 60, 1.0, 0, 0.9), r"max_in_flight must be a whole number of 1 or more, got 0$"),
    ((2.0, 10, 1.0, 128, 0.9), r"duration_s=10\.0 at 2\.00 requests/s sends about 20 requests; deciding 90% "
                               r"attainment takes at least 35: give duration_s of 17\.5 s or more$"),
])
def test_a_rate_duration_or_bound_that_cannot_decide_is_one_line(args, expected):
    with pytest.raises(SettingsError, match=r"^t\.py::t: axion\.rate\(\): " + expected):
        check_open_loop(*args, where="t.py::t: axion.rate()")
    assert min_requests(0.9) == 35


def test_engines_that_serve_no_endpoint_say_what_rate_needs():
    from pytest_axion.engines.paired import PairedEngine
    from pytest_axion.engines.worker import EngineProcess

    message = str(no_open_loop("in process, search for the most users with axion.capacity() instead"))
    assert message.startswith('an open loop (axion.rate(), axion.capacity(by="rate")) sends requests at a rate to '
                              "a served deployment (--axion-serve N or --axion-endpoint URL); in process")
    for engine_class, why in ((EngineProcess, "in process"), (PairedEngine, "an A/B session")):
        with pytest.raises(EngineError, match=rf"^an open loop .* sends requests .*; {why}"):
            engine_class.__new__(engine_class).open_loop((0.1,), n_prompt=8, n_gen=4, max_in_flight=4)


def test_below_capacity_nothing_waits_and_beyond_it_a_queue_grows_with_the_run(one_slot):
    engine = EndpointEngine(one_slot)
    ttft = RequestPromise("ttft_ms", 200.0)

    def level(rate, duration):
        arrivals = arrival_times(rate, duration, seed=3)
        run = engine.open_loop(arrivals, n_prompt=8, n_gen=TOKENS, max_in_flight=128)
        assert len(run.requests) == len(arrivals) and [r.user for r in run.requests] == list(range(len(arrivals)))
        assert all(r.due == due and r.due <= r.first_token < r.end and r.completion_tokens == TOKENS
                   for r, due in zip(run.requests, arrivals, strict=True))
        return run, judge_open_loop([run], [ttft], 0.9, nodeid="t", requests_per_s=rate, burstiness=1.0,
                                    duration_s=duration, max_in_flight=128)

    run, low = level(8.0, 6.0)   # a third of the slot's time: a request seldom waits long for it
    assert low.status == "met" and low.sent == len(run.requests) >= 35
    first, last = low.ttft_trend_ms
    assert first < 60 and last < 60   # a token's 5 ms, and rarely a wait for the slot
    assert low.level.goodput_rps == pytest.approx(low.level.meeting / run.window_s)

    run, high = level(40.0, 3.0)   # well beyond what one slot serves: the queue grows all run long
    assert high.status == "missed" and "TTFT p90" in high.level.worst
    first, last = high.ttft_trend_ms
    assert last > 2 * first and last > 500
    assert high.level.users == run.most_in_flight > 10   # the waiting requests were all in flight at once
    assert "requests/s (Poisson) for 3.00 s" in high.describe()


RATE_TEST = """
import pytest

@pytest.mark.axion_slo(ttft_ms=500)
def test_steady_load(axion):
    level = axion.rate(10.0, duration_s=5, n_prompt=8, n_gen=8)
    assert level.met, level.describe()

def test_no_promise(axion):
    axion.rate(4.0, duration_s=12)

def test_too_short(axion):
    axion.rate(2.0, duration_s=5, ttft_ms=500)
"""


def test_a_rate_test_against_an_endpoint_is_judged_and_reported(pytester, one_slot, tmp_path):
    pytester.makepyfile(RATE_TEST)
    report = tmp_path / "report.json"
    result = pytester.runpytest("--axion-slo", "--axion-repetitions=2", f"--axion-endpoint={one_slot}",
                                f"--axion-report={report}", "--axion-efficiency=off")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*test_no_promise*axion.rate() needs a per-request promise to judge by: declare axion_slo(*",
        "*test_too_short*axion.rate(): duration_s=5.00 at 2.00 requests/s sends about 10 requests; deciding 90% "
        "attainment takes at least 35: give duration_s of 17.5 s or more*",
        "rate test_*.py::test_steady_load: 10.0 requests/s (Poisson) for 5.00 s: * of * requests met TTFT <= 500 ms "
        "(*; 95% interval *): met; goodput * requests/s; TTFT median * ms in the first third, * ms in the last",
    ])
    data = json.loads(report.read_text())   # the report is validated against its schema when written
    assert data["schema_version"] == 11
    rates = next(t["rate_levels"] for t in data["tests"] if t["nodeid"].endswith("test_steady_load"))
    assert len(rates) == 1 and rates[0]["requests_per_s"] == 10.0 and rates[0]["level"]["status"] == "met"
    assert rates[0]["sent"] == rates[0]["level"]["requests"] >= 35
