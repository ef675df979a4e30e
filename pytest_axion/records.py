"""Backend-neutral records: what an engine returns (runs of raw timings, facts about the model and build),
the measurements made of them, and every raw sample. Pure Python: nothing here loads a native library,
so reports, verdicts and the offline commands never import llama.cpp.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import Any

from pytest_axion.figures import figure
from pytest_axion.stats import Summary


@dataclass(frozen=True)
class MetricSpec:
    unit: str
    higher_is_better: bool
    description: str
    # One sample per generation step, not per repetition: a run's samples are not repetitions of one figure, so
    # their spread is not the run's noise (a refresh and the busy check skip it) and a round takes their median.
    per_step: bool = False


METRICS: dict[str, MetricSpec] = {
    "prompt_tps": MetricSpec("tokens/s", True, "prompt processing speed (llama-bench pp, batched S_PP)"),
    "gen_tps": MetricSpec("tokens/s", True, "total token generation speed over the batch (tg, S_TG)"),
    "per_user_tps": MetricSpec("tokens/s", True, "generation speed each user sees (S_TG / batch size)"),
    "ttft_ms": MetricSpec("ms", False, "time to first token: the prompt phase of a batched run"),
    "itl_ms": MetricSpec("ms", False, "inter-token latency: one generation step of the whole batch", per_step=True),
}


MAX_SEQUENCES = 256     # llama.cpp's LLAMA_MAX_SEQ: the most sequences (users) one context can hold

ProgressCallback = Callable[[str, int, int], None]  # (workload, repetitions done, total)


class EngineError(Exception):
    """The engine refused a model, a context or a batch; the message is one line."""


class NotRecorded(EngineError):
    """A replayed report holds no such workload: where a search for capacity goes beyond the recording, it ends."""


@dataclass(frozen=True)
class PromptRun:
    """Wall-clock seconds of each repetition of a prompt of ``n_prompt`` tokens (llama-bench ``pp``)."""

    n_prompt: int
    seconds: tuple[float, ...]


@dataclass(frozen=True)
class GenerationRun:
    """Wall-clock seconds of each repetition of ``n_gen`` single-token decodes (llama-bench ``tg``)."""

    n_gen: int
    seconds: tuple[float, ...]


@dataclass(frozen=True)
class BatchedRun:
    """Per repetition: prompt phase seconds, generation phase seconds, and each generation step."""

    n_prompt: int
    n_gen: int
    batch_size: int
    prompt_seconds: tuple[float, ...]
    gen_seconds: tuple[float, ...]
    step_seconds: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class ServedRequest:
    """One streamed request to a served endpoint; times in seconds from the start of the run.

    ``due`` is when the request was due (closed loop: when the same user's last answer ended), so a request
    that waited for a free connection or slot has that wait in its time to first token. ``token_times``
    holds the arrival of the first byte of every event that carried text.
    """

    user: int
    due: float
    first_token: float
    end: float
    token_times: tuple[float, ...]
    completion_tokens: int               # by the stream's usage (cross-checked by the client)


@dataclass(frozen=True)
class ServedRun:
    """``batch_size`` users, each sending ``repetitions`` requests back to back (closed loop) to an endpoint."""

    n_prompt: int
    n_gen: int
    batch_size: int
    requests: tuple[ServedRequest, ...]   # in order of each user's requests: round r is every user's r-th
    client_lag_ms: float = 0.0             # the client's own worst event-loop delay while measuring


@dataclass(frozen=True)
class OpenLoopRun:
    """Requests sent to an endpoint at scheduled arrival times, whatever the answers before them (an open loop):
    each request's ``due`` is its arrival time, so a wait for a slot, or for the client's bound on requests in
    flight, counts in its time to first token."""

    n_prompt: int
    n_gen: int
    requests: tuple[ServedRequest, ...]   # in order of arrival; ``user`` is the request's index
    window_s: float                       # the schedule's length: from its start to its last arrival
    most_in_flight: int                   # the most requests outstanding at once
    max_in_flight: int                    # the client's bound: a request due beyond it waited for one to end
    client_lag_ms: float = 0.0


Run = PromptRun | GenerationRun | BatchedRun | ServedRun
RUN_KINDS: dict[str, type[Any]] = {"prompt": PromptRun, "generation": GenerationRun, "batched": BatchedRun}


def run_from_json(kind: str, data: Mapping[str, Any]) -> Run:
    """A run record from an engine's JSON answer (lists become tuples)."""
    fields = {f.name: data[f.name] for f in dataclasses.fields(RUN_KINDS[kind])}
    for name, value in fields.items():
        if isinstance(value, list):
            fields[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    run: Run = RUN_KINDS[kind](**fields)
    return run


@dataclass(frozen=True)
class WarmUpRun:
    """Seconds of each untimed prompt of ``n_prompt`` tokens decoded until the speed stopped rising (``settled``)."""

    n_prompt: int
    seconds: tuple[float, ...]
    settled: bool
    other_cpus: float | None = None   # other processes' CPUs meanwhile (None: not known)

    @property
    def tokens_per_s(self) -> float | None:
        """The warm-up's fastest prompt speed (it ran until the speed stopped rising); None without runs."""
        return self.n_prompt / min(self.seconds) if self.seconds and min(self.seconds) > 0 else None


@dataclass(frozen=True)
class ModelFacts:
    """What llama.cpp itself reports about the loaded model and build."""

    description: str
    n_params: int
    size_bytes: int
    n_vocab: int
    n_ctx_train: int
    model_buffers: tuple[str, ...]  # e.g. ("CPU_Mapped", "CPU_REPACK", "CPU_KLEIDIAI")
    system_info: str
    llama_cpp_python_version: str
    ggml_commit: str = "unknown"    # the llama.cpp/ggml commit the library was built from
    ggml_version: str = "unknown"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelFacts:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["model_buffers"] = tuple(values.get("model_buffers", ()))
        return cls(**values)


# Contention: other processes using more than half a CPU, and more than a quarter of llama.cpp's threads'
# worth, while a workload runs make its figures describe them rather than the build.
BUSY_MIN_CPUS = 0.5
BUSY_THREAD_FRACTION = 0.25


def threads_text(threads: int) -> str:
    """"1 thread", "2 threads": how headers, titles and summaries name a thread count."""
    return f"{threads} thread" + ("" if threads == 1 else "s")


def busy_limit(threads: int) -> float:
    """CPUs' worth of other work beyond which a measurement with ``threads`` threads is contended."""
    return max(BUSY_MIN_CPUS, BUSY_THREAD_FRACTION * threads)


@dataclass(frozen=True)
class Measurement:
    """One metric of one workload shape, with all its samples.

    For throughput and TTFT there is one sample per repetition; for ``itl_ms`` one per generation
    step of every repetition, so that its percentiles mean something. ``other_cpus`` is how many
    CPUs' worth of other processes' work (and hypervisor steal) ran meanwhile, None where unknown.
    """

    nodeid: str
    metric: str
    batch_size: int
    n_prompt: int
    n_gen: int
    threads: int
    samples: tuple[float, ...]
    other_cpus: float | None = None

    @property
    def contended(self) -> bool:
        """Measured while other work took CPUs llama.cpp's threads needed (see :func:`busy_limit`)."""
        return self.other_cpus is not None and self.other_cpus > busy_limit(self.threads)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; known: {', '.join(METRICS)}")
        if not self.samples:
            raise ValueError(f"{self.metric} measurement of {self.nodeid} has no samples")

    @property
    def unit(self) -> str:
        return METRICS[self.metric].unit

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric].higher_is_better

    @cached_property
    def summary(self) -> Summary:
        return Summary.of(self.samples)

    @property
    def median(self) -> float:
        return self.summary.median

    @property
    def key(self) -> str:
        """Identity of the measurement across runs (what a baseline entry is keyed by)."""
        return (f"{self.nodeid}::{self.metric}::b{self.batch_size}::pp{self.n_prompt}"
                f"::tg{self.n_gen}::t{self.threads}")

    @property
    def shape(self) -> str:
        """Short human label of the workload, e.g. ``pp512``, ``tg128``, ``pp128+tg64 x4``."""
        if self.n_gen == 0:
            return f"pp{self.n_prompt}" + (f" x{self.batch_size}" if self.batch_size > 1 else "")
        if self.n_prompt == 0:
            return f"tg{self.n_gen}"
        return f"pp{self.n_prompt}+tg{self.n_gen} x{self.batch_size}"

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "metric": self.metric,
            "unit": self.unit,
            "batch_size": self.batch_size,
            "n_prompt": self.n_prompt,
            "n_gen": self.n_gen,
            "threads": self.threads,
            "samples": list(self.samples),
            "summary": self.summary.to_json(),
            "other_cpus": self.other_cpus,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Measurement:
        return cls(
            nodeid=str(data["nodeid"]),
            metric=str(data["metric"]),
            batch_size=int(data["batch_size"]),
            n_prompt=int(data["n_prompt"]),
            n_gen=int(data["n_gen"]),
            threads=int(data["threads"]),
            samples=tuple(float(v) for v in data["samples"]),
            other_cpus=None if data.get("other_cpus") is None else float(data["other_cpus"]),
        )


@dataclass(frozen=True)
class CapacityLevel:
    """One number of users a capacity search measured: how many of its requests met every promise, the
    interval around that share, and the verdict (met, missed, inconclusive)."""

    users: int
    requests: int                     # every user's request, and those that met every promise
    meeting: int
    low: float                        # the Wilson interval of the share, over the observations
    high: float
    status: str                       # "met", "missed" or "inconclusive"
    attempts: int = 1                 # 2: it straddled the target and was measured again
    worst: str = ""                   # the promise most of its requests missed, with its figure
    figures: tuple[tuple[str, float | None], ...] = ()   # each promise's figure at the attainment's percentile
    goodput_rps: float | None = None  # requests/s that met every promise (closed loop: users / mean request time)
    goodput_tps: float | None = None  # their output tokens/s
    observations: int = 0             # independent ones: requests served apart; in process, repetitions
    requests_per_s: float | None = None   # an open loop's offered rate (users: the most requests in flight)

    @property
    def load(self) -> float:
        """What the level put on the deployment: its requests per second where it was an open loop, else its users."""
        return self.requests_per_s if self.requests_per_s is not None else self.users

    @property
    def load_text(self) -> str:
        """``8 users``, ``1.50 requests/s``."""
        if self.requests_per_s is not None:
            return f"{figure(self.requests_per_s)} requests/s"
        return f"{self.users} user{'s' if self.users != 1 else ''}"

    @property
    def attainment(self) -> float:
        return self.meeting / self.requests if self.requests else 0.0

    @property
    def evidence(self) -> str:
        """``68 of 80 requests``; in process, where a repetition is one observation of all its users, with them."""
        shared = self.observations and self.observations < self.requests
        where = f" in {self.observations} repetitions" if shared else ""
        return f"{self.meeting} of {self.requests} requests{where}"

    @property
    def share_text(self) -> str:
        """``(85%; 95% interval 76%-91%)``: the share that met every promise, and its interval."""
        return f"({self.attainment:.0%}; 95% interval {self.low:.0%}-{self.high:.0%})"

    def inconclusive_text(self) -> str:
        """``10 users inconclusive: 68 of 80 requests (85%; 95% interval 76%-91%) met every promise, measured 2
        time(s)``."""
        return (f"{self.load_text} inconclusive: {self.evidence} {self.share_text} met every promise, measured "
                f"{self.attempts} time(s)")

    def to_json(self) -> dict[str, object]:
        return {"users": self.users, "requests": self.requests, "meeting": self.meeting,
                "attainment": self.attainment, "interval": [self.low, self.high], "status": self.status,
                "attempts": self.attempts, "worst": self.worst, "figures": dict(self.figures),
                "goodput_rps": self.goodput_rps, "goodput_tps": self.goodput_tps, "observations": self.observations,
                "requests_per_s": self.requests_per_s}


@dataclass(frozen=True)
class RateLevel:
    """One open-loop run (``axion.rate``) judged by the test's per-request promises: its level's ``users`` is the
    most requests that were in flight at once, its goodput the requests that met every promise per second of
    the schedule. ``ttft_trend_ms``: the median TTFT of the first and of the last third of the requests, by
    arrival; a last third far slower than the first is a queue that grows with the run."""

    nodeid: str
    requests_per_s: float              # offered: the schedule's mean rate
    burstiness: float
    duration_s: float
    n_prompt: int
    n_gen: int
    sent: int                          # requests the schedule held
    service_level: str
    level: CapacityLevel
    ttft_trend_ms: tuple[float, float]
    max_in_flight: int

    @property
    def status(self) -> str:
        return self.level.status

    @property
    def met(self) -> bool:
        return self.level.status == "met"

    def describe(self) -> str:
        """``1.5 requests/s (Poisson) for 60 s: 84 of 90 requests met TTFT <= 2 s (93%; 95% interval 86-97%):
        met; goodput 1.4 requests/s; TTFT median 410 ms in the first third, 520 ms in the last``."""
        arrivals = "Poisson" if self.burstiness == 1 else f"gamma, burstiness {figure(self.burstiness)}"
        level = self.level
        text = (f"{figure(self.requests_per_s)} requests/s ({arrivals}) for {figure(self.duration_s)} s: "
                f"{level.evidence} met {self.service_level} {level.share_text}: {level.status}")
        if level.worst:
            text += f" ({level.worst})"
        if level.goodput_rps is not None:
            text += f"; goodput {figure(level.goodput_rps)} requests/s"
        first, last = self.ttft_trend_ms
        return text + f"; TTFT median {figure(first)} ms in the first third, {figure(last)} ms in the last"

    def to_json(self) -> dict[str, object]:
        return {"requests_per_s": self.requests_per_s, "burstiness": self.burstiness, "duration_s": self.duration_s,
                "n_prompt": self.n_prompt, "n_gen": self.n_gen, "sent": self.sent,
                "service_level": self.service_level, "max_in_flight": self.max_in_flight,
                "ttft_trend_ms": list(self.ttft_trend_ms), "level": self.level.to_json()}


def bracket_of(levels: Iterable[CapacityLevel]) -> tuple[float, float | None]:
    """(the most load met, with every level measured below it met too (0: none); the least load not met, None
    when every level was met). The load is the users, or an open loop's requests per second."""
    levels = list(levels)
    high = min((level.load for level in levels if level.status != "met"), default=None)
    low = max((level.load for level in levels if level.status == "met" and (high is None or level.load < high)),
              default=0)
    return low, high


# why a capacity search ended
ENDED_ON = ("promise", "inconclusive", "budget", "sequence limit", "max_users", "recording", "lowest rate")


@dataclass(frozen=True)
class CapacitySearch:
    """The most users (``by="users"``) or the highest open-loop rate (``by="rate"``) whose requests kept every
    per-request promise: the levels measured, the bracket, and why the search ended (``ended``: one of
    :data:`ENDED_ON`; ``stopped``: the sentence)."""

    nodeid: str
    n_prompt: int
    n_gen: int
    service_level: str                             # "per-user speed >= reading speed 5 t/s, TTFT <= 2 s"
    attainment: float
    levels: tuple[CapacityLevel, ...]              # in the order measured
    ended: str
    stopped: str
    limits: tuple[tuple[str, float], ...] = ()     # each promise's limit by key (per_user_tps, ttft_ms, itl_ms)
    by: str = "users"                              # "rate": levels are open loops at requests per second
    itl_percentile: int | None = None              # the percentile of each request's own gaps its itl_ms limit is at

    @property
    def most_passing(self) -> float:
        """The most load met (users, or requests/s), with every level measured below it met too (0: none)."""
        return bracket_of(self.levels)[0]

    @property
    def fewest_failing(self) -> float | None:
        """The least load whose level was not met (missed or inconclusive); None: every level was met."""
        return bracket_of(self.levels)[1]

    @property
    def ending_level(self) -> CapacityLevel | None:
        high = self.fewest_failing
        return next((level for level in self.levels if level.load == high), None)

    @property
    def best_level(self) -> CapacityLevel | None:
        most = self.most_passing
        return next((level for level in self.levels if level.load == most), None)

    def to_json(self) -> dict[str, object]:
        return {"n_prompt": self.n_prompt, "n_gen": self.n_gen, "service_level": self.service_level,
                "attainment": self.attainment, "most_passing": self.most_passing,
                "fewest_failing": self.fewest_failing, "ended": self.ended, "stopped": self.stopped,
                "limits": dict(self.limits), "by": self.by, "itl_percentile": self.itl_percentile,
                "levels": [level.to_json() for level in sorted(self.levels, key=lambda lv: lv.load)]}


@dataclass(frozen=True)
class RequestFigures:
    """What one user's request got: its time to first token, its speed after the first token (None with one
    output token), every gap between its tokens, and its whole time, from when it was due to its last token. A
    capacity search judges each request by all of them at once.

    In process a repetition's users share every step and got the same figures: one record stands for them all
    (``users``), as one observation."""

    ttft_ms: float
    per_user_tps: float | None
    itl_ms: tuple[float, ...]
    latency_s: float = 0.0
    users: int = 1


def requests_of(run: Run | OpenLoopRun) -> tuple[RequestFigures, ...]:
    """Every request of a batched or served run, in order (a prompt or generation run serves no users)."""
    if isinstance(run, ServedRun | OpenLoopRun):
        return tuple(RequestFigures(
            ttft_ms=(r.first_token - r.due) * 1e3,
            per_user_tps=((r.completion_tokens - 1) / (r.end - r.first_token)
                          if r.completion_tokens > 1 and r.end > r.first_token else None),
            itl_ms=tuple((later - earlier) * 1e3 for earlier, later in pairwise(r.token_times)),
            latency_s=r.end - r.due)
            for r in run.requests)
    if isinstance(run, BatchedRun):
        return tuple(RequestFigures(ttft_ms=prompt * 1e3, per_user_tps=run.n_gen / gen if gen > 0 else None,
                                    itl_ms=tuple(s * 1e3 for s in steps), latency_s=prompt + gen,
                                    users=run.batch_size)
                     for prompt, gen, steps in zip(run.prompt_seconds, run.gen_seconds, run.step_seconds, strict=True))
    return ()


def served_apart(measurements: Mapping[str, Measurement]) -> bool:
    """Whether a batched cell's requests were timed one by one (served: a TTFT per request, more than its rounds)
    or together (in process: one TTFT per repetition, standing for all its users)."""
    ttft = measurements.get("ttft_ms")
    rounds = measurements.get("prompt_tps") or measurements.get("gen_tps")
    return ttft is not None and (rounds is None or len(ttft.samples) > len(rounds.samples))


def requests_from_measurements(measurements: Mapping[str, Measurement]) -> tuple[RequestFigures, ...]:
    """A batched workload's requests rebuilt from its measurements, as a replayed report holds them: in process
    one record per repetition for all its users, its steps split evenly between repetitions (a served
    recording's requests, whose gaps are pooled, are split evenly too where they can be, else each gets all)."""
    ttft = measurements.get("ttft_ms")
    if ttft is None:
        return ()
    per_user = measurements.get("per_user_tps")
    itl = measurements.get("itl_ms")
    count = len(ttft.samples)
    speeds: list[float | None] = (list(per_user.samples) if per_user is not None
                                  and len(per_user.samples) == count else [None] * count)
    gaps = itl.samples if itl is not None else ()
    per_request = len(gaps) // count if gaps and len(gaps) % count == 0 else 0
    steps = [gaps[i * per_request:(i + 1) * per_request] for i in range(count)] if per_request else [gaps] * count
    in_process = not served_apart(measurements)
    users = ttft.batch_size if in_process else 1
    # the whole time: the first token, then the tokens after it at the request's speed (in process every one of
    # the n_gen tokens comes from a generation step; served the first comes with the prompt)
    after_first = ttft.n_gen if in_process else ttft.n_gen - 1
    return tuple(RequestFigures(ttft_ms=t, per_user_tps=v, itl_ms=tuple(g),
                                latency_s=t / 1e3 + (after_first / v if v else 0.0), users=users)
                 for t, v, g in zip(ttft.samples, speeds, steps, strict=True))


# -- runs -> measurements ------------------------------------------------------------------------

def measurements_of(run: Run, *, nodeid: str, threads: int, other_cpus: float | None = None) -> dict[str, Measurement]:
    """Every metric of a run record, by metric name, as llama-bench and llama-batched-bench define them
    (S_PP, S_TG, S_TG / B, T_PP as TTFT, per-step latency), each knowing how much other work ran meanwhile."""
    def measurement(metric: str, batch_size: int, n_prompt: int, n_gen: int, samples: list[float]) -> Measurement:
        return Measurement(nodeid=nodeid, metric=metric, batch_size=batch_size, n_prompt=n_prompt, n_gen=n_gen,
                           threads=threads, samples=tuple(samples), other_cpus=other_cpus)

    if isinstance(run, PromptRun):
        return {"prompt_tps": measurement("prompt_tps", 1, run.n_prompt, 0, [run.n_prompt / s for s in run.seconds])}
    if isinstance(run, GenerationRun):
        return {"gen_tps": measurement("gen_tps", 1, 0, run.n_gen, [run.n_gen / s for s in run.seconds])}
    if isinstance(run, ServedRun):
        return {metric: measurement(metric, run.batch_size, run.n_prompt, run.n_gen, values)
                for metric, values in served_samples(run).items()}
    b, pp, tg = run.batch_size, run.n_prompt, run.n_gen
    samples = {
        "prompt_tps": [b * pp / s for s in run.prompt_seconds],
        "gen_tps": [b * tg / s for s in run.gen_seconds],
        "per_user_tps": [tg / s for s in run.gen_seconds],
        "ttft_ms": [s * 1e3 for s in run.prompt_seconds],
        "itl_ms": [s * 1e3 for steps in run.step_seconds for s in steps],
    }
    return {metric: measurement(metric, b, pp, tg, values) for metric, values in samples.items()}


def served_samples(run: ServedRun) -> dict[str, list[float]]:
    """A served run's samples, in the in-process metrics' names and units: TTFT per request from when it was
    due; per-user speed per request after its first token; total speed per round (every user's r-th request,
    tokens after the first over the generation span); every gap between two text events; the server's prompt
    speed."""
    rounds: dict[int, list[ServedRequest]] = {}
    seen: dict[int, int] = {}
    for request in run.requests:
        index = seen.get(request.user, 0)
        seen[request.user] = index + 1
        rounds.setdefault(index, []).append(request)
    samples = {
        "ttft_ms": [(r.first_token - r.due) * 1e3 for r in run.requests],
        "per_user_tps": [(r.completion_tokens - 1) / (r.end - r.first_token) for r in run.requests
                         if r.completion_tokens > 1 and r.end > r.first_token],
        # as in process: the generation phase only, every token after each user's first, over the span from the
        # round's first first-token to its last answer's end
        "gen_tps": [sum(r.completion_tokens - 1 for r in group)
                    / (max(r.end for r in group) - min(r.first_token for r in group))
                    for group in rounds.values() if max(r.end for r in group) > min(r.first_token for r in group)
                    and any(r.completion_tokens > 1 for r in group)],   # one token each: no generation phase
        "itl_ms": [(later - earlier) * 1e3 for r in run.requests for earlier, later in pairwise(r.token_times)],
        "prompt_tps": _round_prompt_speeds(run.n_prompt, list(rounds.values())),
    }
    return {metric: values for metric, values in samples.items() if values}


def _round_prompt_speeds(n_prompt: int, rounds: list[list[ServedRequest]]) -> list[float]:
    """As in process (S_PP = B x pp / T_PP): each round's prompt tokens over its prompt span, from its first
    request being due (or the previous round's last first token, if later: users drift apart in a closed loop,
    and time counted for one round is not counted again) to its last first token. A server's own per-request
    timings would give one slot's share of a prompt step the slots shared (1/B of the total), and not every
    server reports them."""
    speeds, previous_end = [], float("-inf")
    for group in rounds:
        start = max(min(r.due for r in group), previous_end)
        end = max(r.first_token for r in group)
        if end > start:
            speeds.append(len(group) * n_prompt / (end - start))
        previous_end = max(previous_end, end)
    return speeds


Workload = tuple[str, int, int, int]   # (kind, batch size, prompt tokens, generated tokens)


def workload_of(m: Measurement) -> Workload:
    """The workload a measurement came from: its several metrics share one."""
    return (_workload_kind(m), m.batch_size, m.n_prompt, m.n_gen)


def workload_request(m: Measurement) -> tuple[str, dict[str, int]]:
    """(kind, shape arguments) to measure the workload behind ``m`` again."""
    kind = _workload_kind(m)
    shape = {"prompt": {"n_prompt": m.n_prompt}, "generation": {"n_gen": m.n_gen},
             "batched": {"n_prompt": m.n_prompt, "n_gen": m.n_gen, "batch_size": m.batch_size}}[kind]
    return kind, shape


def _workload_kind(m: Measurement) -> str:
    """Which harness call produced a measurement, read from its shape."""
    if m.n_gen == 0 and m.batch_size == 1 and m.metric == "prompt_tps":
        return "prompt"
    if m.n_prompt == 0 and m.batch_size == 1:
        return "generation"
    return "batched"
