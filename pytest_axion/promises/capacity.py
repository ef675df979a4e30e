"""Capacity under every service level: the most concurrent users whose requests keep all of a test's per-request
promises at once (per-user speed, time to first token, inter-token latency).

A level (a number of users) is judged as DistServe judges goodput: by the share of its requests that met every
promise (the attainment, 90% by default), with a Wilson score interval around that share. A level is ``met``
when the whole interval lies at or above the target, ``missed`` when it lies below, and otherwise straddles it:
then it is measured again, the requests pooled, and stays ``inconclusive`` if it still straddles (GuideLLM marks
such a level unresolved too). With attainment 1.0 every request must meet every promise and no interval applies.

The search doubles the users while every level is met, then bisects between the most users met and the fewest
not met until the bracket is no wider than 10% of its lower end (or one user). Each level measures at least
:func:`min_requests` requests: the fewest that, all meeting, put the interval above the target. Pure.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from pytest_axion.errors import SettingsError
from pytest_axion.figures import figure
from pytest_axion.promises.latency import DEFAULT_PERCENTILE
from pytest_axion.promises.marker import PromiseContext, SloSpec
from pytest_axion.promises.thresholds import per_user_limit
from pytest_axion.promises.verdict import INCONCLUSIVE, MET, MISSED
from pytest_axion.records import CapacityLevel, OpenLoopRun, RateLevel, RequestFigures, bracket_of, requests_of
from pytest_axion.stats import median, quantile

DEFAULT_CAPACITY_BUDGET_S = 120.0   # seconds of a search's measuring after its batch sizes' first
DEFAULT_ATTAINMENT = 0.9       # DistServe's goodput: at least 90% of requests within every limit
CONFIDENCE = 0.95              # of the Wilson interval around a level's attainment
BRACKET_WIDTH = 0.10           # the search ends once its bracket is this narrow (relative to its lower end)
DEFAULT_MAX_IN_FLIGHT = 128    # an open loop's bound on requests outstanding at once (beyond it they wait, timed)
RATE_MARGIN = 1.5              # a rate search's level holds about this many times the requests the rule needs
RATE_HALVINGS = 3              # a rate search whose first rate misses halves it at most this many times

# what each promise is called where a level's figure is shown
NAMES = {"per_user_tps": "per-user speed", "ttft_ms": "TTFT", "itl_ms": "ITL"}


@dataclass(frozen=True)
class RequestPromise:
    """One per-request limit: ``per_user_tps`` at least ``limit`` tokens/s; ``ttft_ms`` at most ``limit`` ms;
    ``itl_ms`` at most ``limit`` ms at ``percentile`` of the request's own gaps between tokens."""

    key: str
    limit: float
    label: str = ""            # how the limit was obtained ("reading speed 5 t/s (default)")
    percentile: int | None = None

    @property
    def upper(self) -> bool:
        return self.key != "per_user_tps"

    def figure(self, request: RequestFigures) -> float | None:
        """This request's value of the promised figure (None: the request has none, e.g. one output token)."""
        if self.key == "per_user_tps":
            return request.per_user_tps
        if self.key == "ttft_ms":
            return request.ttft_ms
        if not request.itl_ms:
            return None
        return quantile(request.itl_ms, (self.percentile or DEFAULT_PERCENTILE) / 100)

    def met_by(self, request: RequestFigures) -> bool:
        value = self.figure(request)
        if value is None:
            return False
        return value <= self.limit if self.upper else value >= self.limit

    def share(self, attainment: float) -> float:
        """The quantile across requests that ``attainment`` of them did at least as well as."""
        return attainment if self.upper else 1 - attainment

    @property
    def limit_text(self) -> str:
        return self.label or _value(self.key, self.limit)

    def describe(self) -> str:
        """``per-user speed >= reading speed 5 t/s (default)``, ``TTFT <= 2 s``, ``ITL p99 <= 200 ms``."""
        name = NAMES[self.key] + (f" p{self.percentile}" if self.key == "itl_ms" and self.percentile else "")
        return f"{name} {'<=' if self.upper else '>='} {self.limit_text}"


def _value(key: str, value: float) -> str:
    if key == "per_user_tps":
        return f"{value:.3g} t/s"
    return f"{value / 1000:.3g} s" if value >= 1000 else f"{value:.3g} ms"


def check_attainment(attainment: float, where: str) -> float:
    if isinstance(attainment, bool) or not isinstance(attainment, int | float) or not 0 < attainment <= 1:
        raise SettingsError(f"{where}: attainment is the share of requests that must meet every promise, within "
                            f"(0, 1] (0.9: 90%), got {attainment!r}")
    return float(attainment)


def _z() -> float:
    return NormalDist().inv_cdf(1 - (1 - CONFIDENCE) / 2)


def wilson_interval(successes: int, n: int, z: float | None = None) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (``z``: the normal quantile, 1.96 at 95%)."""
    if n <= 0:
        return 0.0, 1.0
    z = _z() if z is None else z
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def min_requests(attainment: float) -> int:
    """The fewest observations a level needs for its interval to clear ``attainment`` when every one of them met
    every promise (35 at 90%); 1 at attainment 1.0, where one miss decides. An observation is a request served
    on its own, or in process one repetition of all the level's users (they share every step)."""
    if attainment >= 1:
        return 1
    z = _z()
    return math.ceil(z * z * attainment / (1 - attainment) - 1e-9)


def level_status(meeting: int, n: int, attainment: float) -> tuple[str, tuple[float, float]]:
    """``met``, ``missed`` or ``inconclusive`` (the interval straddles the target), with the interval."""
    if attainment >= 1:
        return (MET if meeting == n else MISSED), (meeting / n if n else 0.0, meeting / n if n else 0.0)
    low, high = wilson_interval(meeting, n)
    if low >= attainment:
        return MET, (low, high)
    if high < attainment:
        return MISSED, (low, high)
    return INCONCLUSIVE, (low, high)


def judge_level(users: int, requests: Sequence[RequestFigures], promises: Sequence[RequestPromise],
                attainment: float, *, attempts: int = 1, n_gen: int = 0) -> CapacityLevel:
    """One level's verdict over its requests, and the promise most of them missed, shown at the attainment's
    percentile across the level's requests (the figure that would have had to change for the level to hold).

    Its goodput, as DistServe's: the requests per second that met every promise. ``users`` send one request
    after another (a closed loop), so they complete ``users / mean request time`` requests a second, of which
    the share that met every promise counts; times ``n_gen`` output tokens each for tokens per second."""
    # the interval counts observations: a request served apart, or in process a repetition of all its users
    kept = [all(p.met_by(r) for p in promises) for r in requests]
    status, interval = level_status(sum(kept), len(requests), attainment)
    meeting = sum(r.users for r, met in zip(requests, kept, strict=True) if met)
    figures = []
    for promise in promises:
        values = [v for v in (promise.figure(r) for r in requests) if v is not None]
        # the value that the attainment's share of requests did at least as well as
        share = promise.share(attainment)
        figures.append((promise.key, quantile(values, share) if values else None))
    misses = [sum(r.users for r in requests if not p.met_by(r)) for p in promises]
    worst = ""
    if status != MET and any(misses):
        index = max(range(len(promises)), key=lambda i: misses[i])
        worst = _shortfall(promises[index], figures[index][1], attainment, misses[index],
                           sum(r.users for r in requests))
    times = [r.latency_s for r in requests]
    goodput = (meeting / sum(r.users for r in requests) * users / (sum(times) / len(times))
               if requests and all(t > 0 for t in times) else None)
    return CapacityLevel(users=users, requests=sum(r.users for r in requests), meeting=meeting, low=interval[0],
                         high=interval[1], status=status, attempts=attempts, worst=worst, figures=tuple(figures),
                         goodput_rps=goodput, goodput_tps=None if goodput is None else goodput * n_gen,
                         observations=len(requests))


def _shortfall(promise: RequestPromise, value: float | None, attainment: float, missed: int, total: int) -> str:
    """``TTFT p90 2.9 s > 2 s``: the missed promise at the attainment's percentile across requests; where that
    figure is within the limit (the misses of several promises add up), how many requests missed it."""
    name = NAMES[promise.key] + (f" (each request's p{promise.percentile})" if promise.key == "itl_ms" else "")
    broken = value is not None and (value > promise.limit if promise.upper else value < promise.limit)
    if not broken:
        return f"{missed} of {total} requests missed {promise.describe()}"
    assert value is not None
    percentile = round(promise.share(attainment) * 100)
    return f"{name} p{percentile} {_value(promise.key, value)} {'>' if promise.upper else '<'} {promise.limit_text}"


def next_users(levels: Sequence[CapacityLevel], max_users: int) -> int | None:
    """The next number of users to measure, or None when the bracket is closed (or ``max_users`` was met)."""
    if not levels:
        return 1
    low, high = bracket_of(levels)
    if high is None:
        top = max(level.users for level in levels)
        return min(top * 2, max_users) if top < max_users else None
    if bracket_closed(int(low), int(high)):
        return None
    return int(low + high) // 2


def bracket_closed(low: int, high: int) -> bool:
    """No wider than 10% of its lower end, or one user."""
    return high - low <= max(1, math.floor(BRACKET_WIDTH * low))


def capacity_promises(spec: SloSpec | None, context: PromiseContext) -> list[RequestPromise]:
    """The test's own per-request promises, as its marker declares them: per-user speed (``'reading'``
    through the tokenizer), ``ttft_ms`` and ``itl_ms`` at ``itl_percentile``."""
    if spec is None:
        return []
    made = []
    if spec.declares("per_user_tps"):
        limit, label = per_user_limit(spec.per_user_tps, context)
        made.append(RequestPromise("per_user_tps", limit, label=label))
    if spec.declares("ttft_ms"):
        made.append(RequestPromise("ttft_ms", float(spec.ttft_ms)))
    if spec.declares("itl_ms"):
        made.append(RequestPromise("itl_ms", float(spec.get("itl_ms")), percentile=spec.get("itl_percentile")))
    return made


def check_open_loop(requests_per_s: float, duration_s: float, burstiness: float, max_in_flight: int,
                    attainment: float, where: str) -> None:
    """One line for a rate, duration, burstiness or bound an open loop cannot run with. The duration must let the
    schedule hold, on average, the requests the early-stopping rule needs (:func:`min_requests`): fewer, and
    even a level whose every request met every promise could not be told from luck."""
    for name, value in (("requests_per_s", requests_per_s), ("duration_s", duration_s), ("burstiness", burstiness)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise SettingsError(f"{where}: {name} must be a positive number, got {value!r}")
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
        raise SettingsError(f"{where}: max_in_flight must be a whole number of 1 or more, got {max_in_flight!r}")
    needed = min_requests(attainment)
    shortest = needed / requests_per_s
    if requests_per_s * duration_s < needed:
        raise SettingsError(f"{where}: duration_s={figure(duration_s)} at {figure(requests_per_s)} requests/s sends "
                            f"about {requests_per_s * duration_s:.0f} requests; deciding {attainment:.0%} attainment "
                            f"takes at least {needed}: give duration_s of {figure(shortest)} s or more")


def judge_open_loop(runs: Sequence[OpenLoopRun], promises: Sequence[RequestPromise], attainment: float, *,
                    nodeid: str, requests_per_s: float, burstiness: float, duration_s: float,
                    max_in_flight: int) -> RateLevel:
    """Open-loop runs of one rate (two when the first straddled the target), judged as a level of the search
    judges one: the Wilson interval over all their requests, each served apart; the goodput the requests that
    met every promise per second of the schedules; the TTFT trend of the first run."""
    requests = [request for run in runs for request in requests_of(run)]
    window = sum(run.window_s for run in runs)
    n_gen = runs[0].n_gen
    level = judge_level(max(run.most_in_flight for run in runs), requests, promises, attainment,
                        attempts=len(runs), n_gen=n_gen)
    goodput = level.meeting / window if window > 0 else None
    level = dataclasses.replace(level, goodput_rps=goodput, goodput_tps=None if goodput is None else goodput * n_gen,
                                requests_per_s=requests_per_s)
    first = requests_of(runs[0])
    third = max(1, len(first) // 3)
    trend = (median([r.ttft_ms for r in first[:third]]), median([r.ttft_ms for r in first[-third:]]))
    return RateLevel(nodeid=nodeid, requests_per_s=requests_per_s, burstiness=burstiness, duration_s=duration_s,
                     n_prompt=runs[0].n_prompt, n_gen=n_gen, sent=len(requests),
                     service_level=", ".join(p.describe() for p in promises), level=level, ttft_trend_ms=trend,
                     max_in_flight=max_in_flight)


def rate_duration(requests_per_s: float, duration_s: float, attainment: float) -> float:
    """A search level's schedule: ``duration_s``, or longer where that would hold fewer than about
    :data:`RATE_MARGIN` times the requests the early-stopping rule needs (a Poisson count falls short of its mean
    often enough that a schedule of exactly the minimum would leave many levels undecided)."""
    return max(duration_s, RATE_MARGIN * min_requests(attainment) / requests_per_s)


def next_rate(levels: Sequence[CapacityLevel], start: float) -> float | None:
    """The next rate to measure (requests/s), or None when the bracket is closed: ``start`` first, then doubling
    while every level holds, then bisecting to within 10%; a first rate that already misses is halved, at most
    :data:`RATE_HALVINGS` times (the search then ends at its lowest rate)."""
    if not levels:
        return start
    low, high = bracket_of(levels)
    if high is None:
        return max(level.load for level in levels) * 2
    if low == 0:
        lowest = min(level.load for level in levels) / 2
        return lowest if lowest >= start / 2**RATE_HALVINGS * (1 - 1e-9) else None
    return None if high - low <= BRACKET_WIDTH * low else (low + high) / 2
