"""Backend-neutral records: what an engine returns (runs of raw timings, facts about the model and build),
the measurements made of them, and every raw sample. Pure Python: nothing here loads a native library,
so reports, verdicts and the offline commands never import llama.cpp.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import Any

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
    """Seconds of each untimed prompt of ``n_prompt`` tokens decoded until the speed settled."""

    n_prompt: int
    seconds: tuple[float, ...]
    settled: bool


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
class CapacitySearch:
    """Where per-user speed falls below a promise as users are added: the bracket, and why the search ended."""

    nodeid: str
    n_prompt: int
    n_gen: int
    threshold_tps: float
    threshold_label: str
    per_user_tps: tuple[tuple[int, float], ...]   # (batch size, median per-user tokens/s), as measured
    stopped: str                                   # why no larger batch was measured

    @property
    def most_passing(self) -> int:
        """The most users that all got the promised speed, at every measured size up to it (0: none)."""
        most = 0
        for batch_size, speed in self.per_user_tps:
            if speed < self.threshold_tps:
                break
            most = batch_size
        return most

    @property
    def fewest_failing(self) -> int | None:
        return next((b for b, speed in self.per_user_tps if speed < self.threshold_tps), None)

    def to_json(self) -> dict[str, object]:
        return {"n_prompt": self.n_prompt, "n_gen": self.n_gen, "threshold_tps": self.threshold_tps,
                "threshold_label": self.threshold_label, "most_passing": self.most_passing,
                "fewest_failing": self.fewest_failing, "stopped": self.stopped,
                "per_user_tps": [{"batch_size": b, "median": v} for b, v in self.per_user_tps]}


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
