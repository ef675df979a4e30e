"""A served deployment as the engine: N concurrent streaming users against an OpenAI-compatible endpoint.

``run("batched", n_prompt, n_gen, batch_size)`` starts ``batch_size`` users at once; each sends its
requests back to back (closed loop), ``repetitions`` of them after one untimed warm-up request each.
A request is ``POST {url}/completions`` with a prompt of exactly ``n_prompt`` random token ids (no
tokenizer needed, no prompt cache can help), ``max_tokens=n_gen`` with ``ignore_eos``, greedy, streamed
with ``stream_options.include_usage``.

Counted, not guessed: the output tokens come from the stream's usage and must equal ``n_gen``; the
server's own ``timings.predicted_n`` (llama-server) must agree; the text events may not outnumber them;
``finish_reason`` must be ``length``. Anything else (a truncated stream, no usage, an HTTP error, a
timeout) makes the measurement invalid with the reason: an :class:`EngineError`, never a figure.

Timing: ``time.perf_counter`` at the arrival of the first byte of each SSE event (the chunk that holds
it); TTFT runs from when the request was due, so time spent waiting for a connection or a slot counts.
The client's own event-loop lag is measured meanwhile (a 5 ms ticker): a client that cannot keep up
with the stream would report its own slowness as the server's, so a run with a lag beyond
``MAX_CLIENT_LAG_MS`` is measured again (a pause of the client's own, such as a burst of other work on a
shared core, passes), and is an error when every try lagged. httpx is imported only here, and only when
an endpoint is used (``pytest-axion[serve]``).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pytest_axion.credentials import KEY_VARIABLES, Secret, is_loopback
from pytest_axion.engines.base import Measured, measure_run
from pytest_axion.errors import AxionError
from pytest_axion.records import (
    EngineError,
    ModelFacts,
    OpenLoopRun,
    ProgressCallback,
    Run,
    ServedRequest,
    ServedRun,
    WarmUpRun,
)

T = TypeVar("T")
REQUEST_TIMEOUT_S = 300.0     # idle limit of one read, and (below) the whole request's deadline
REQUEST_DEADLINE_S = 300.0    # a server that drips a byte every few minutes still ends here
MAX_BODY_BYTES = 1 * 2**20    # an answer to GET /models, /props, /tokenize, or an error body
MAX_EVENT_BYTES = 1 * 2**20   # one SSE event; a real one is a few hundred bytes
MAX_STREAM_BYTES = 64 * 2**20  # one streamed answer, all events
MAX_CLIENT_LAG_MS = 50.0
LAGGED_RUN_RETRIES = 2        # a run whose client lagged is measured again this many times before it is an error
TICK_S = 0.005
DEFAULT_VOCAB = 32000
FIRST_TOKEN_ID = 100          # past the special tokens most vocabularies start with
SERVE_HINT = "pip install 'pytest-axion[serve]'"


class EndpointError(EngineError, AxionError):
    """The endpoint cannot be measured, or a measurement of it is invalid; one line naming the endpoint."""


class ClientLagError(EndpointError):
    """The measuring client, not the server, was too slow to keep up with the stream."""


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise EndpointError(f"measuring an endpoint needs httpx, which is not installed: run {SERVE_HINT}") from None
    return httpx


@dataclass(frozen=True)
class ServerFacts:
    """What the endpoint says about itself (llama-server's ``/props``; other servers say less)."""

    model: str
    build: str
    slots: int | None
    n_vocab: int
    slot_ctx: int | None = None   # tokens of context per slot (llama-server's /props), which its step costs follow


def _opener(url: str) -> urllib.request.OpenerDirector:
    """No proxy between this machine and a server on it (a CI runner's HTTP_PROXY would otherwise take loopback)."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({})) if is_loopback(url) \
        else urllib.request.build_opener()


def _call(url: str, key: Secret | None, *, data: bytes | None = None, timeout: float = 10.0) -> Any:
    """GET (or POST ``data`` as JSON) and parse the answer, read up to :data:`MAX_BODY_BYTES`."""
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, headers={**headers, **(key.bearer() if key else {})})
    with _opener(url).open(request, timeout=timeout) as response:
        body = response.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"the answer is over {MAX_BODY_BYTES // 2**20} MiB")
    return json.loads(body)


def refused_message(url: str, code: int, key: Secret | None, option: str) -> str:
    """What to do about an HTTP 401/403: send a key, or another one."""
    if key is None:
        return (f"endpoint {url} refused the request (HTTP {code}): it wants an API key; set {KEY_VARIABLES[0]} "
                f"(or {KEY_VARIABLES[1]}) to it before running pytest ({option})")
    return (f"endpoint {url} refused the API key from {key.source} (HTTP {code}): check that it is this "
            "endpoint's key")


def probe_endpoint(url: str, model: str | None, option: str = "--axion-endpoint",
                   key: Secret | None = None) -> ServerFacts:
    """The served model's name, the server's build and slot count; a one-line error when nothing answers,
    naming the ``option`` that gave the URL."""
    base = url.rstrip("/")
    try:
        listed = _call(f"{base}/models", key)
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise EndpointError(refused_message(url, err.code, key, option)) from None
        raise EndpointError(f"endpoint {url} answered GET /models with HTTP {err.code}: check that the URL ends in "
                          "/v1 (e.g. http://127.0.0.1:8080/v1) and that the server is OpenAI-compatible") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise EndpointError(f"nothing answers at endpoint {url} ({reason}): start the server first, or check the "
                          f"host, port and the /v1 suffix of {option}") from None
    names = [str(entry.get("id")) for entry in listed.get("data", []) if isinstance(entry, dict)]
    if model is None:
        if not names:
            hint = ("give its name with --axion-endpoint-model" if option == "--axion-endpoint"
                    else "side A must list the model it serves at /models")
            raise EndpointError(f"endpoint {url} lists no model: {hint}")
        model = names[0]
    elif names and model not in names:
        raise EndpointError(f"endpoint {url} does not serve model {model!r} (it lists {', '.join(names)}): fix "
                          "--axion-endpoint-model")
    entry = next((e for e in listed.get("data", []) if isinstance(e, dict) and e.get("id") == model), {})
    n_vocab = int((entry.get("meta") or {}).get("n_vocab") or DEFAULT_VOCAB)
    build, slots, slot_ctx = "unknown", None, None
    try:
        props = _call(base.removesuffix("/v1") + "/props", key)
        build = str(props.get("build_info", "unknown"))
        slots = int(props["total_slots"]) if "total_slots" in props else None
        slot_ctx = int((props.get("default_generation_settings") or {}).get("n_ctx") or 0) or None
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # not llama-server: vLLM and others have no /props
    return ServerFacts(model=model, build=build, slots=slots, n_vocab=n_vocab, slot_ctx=slot_ctx)


def slots_phrase(slots: int, slot_ctx: int | None) -> str:
    """"4 slots of 4096 tokens": a server's slots and, where known, the context each holds."""
    return f"{slots} slot{'s' if slots != 1 else ''}" + (f" of {slot_ctx} tokens" if slot_ctx else "")


def served_model_name(model_id: str) -> str:
    """The served model's name as baselines know it: llama-server lists a model started without ``--alias``
    by its file path, which differs from machine to machine, so a path becomes its file name. Repository
    ids such as ``meta-llama/Llama-3.3-70B-Instruct`` stay whole."""
    looks_like_path = model_id.startswith(("/", "~", "./", "../")) or re.match(r"^[A-Za-z]:[\\/]", model_id) \
        or model_id.lower().endswith(".gguf")
    return re.split(r"[\\/]", model_id)[-1] if looks_like_path else model_id


@dataclass
class _Stream:
    """What one streamed answer carried."""

    first_token: float | None = None
    token_times: list[float] = field(default_factory=list)
    completion_tokens: int | None = None
    predicted_n: int | None = None
    finish_reason: str | None = None
    finished_at: float | None = None   # arrival of the event that carried finish_reason
    done: bool = False


def _read_event(data: str, arrived: float, stream: _Stream) -> None:
    if data.strip() == "[DONE]":
        stream.done = True
        return
    try:
        payload = json.loads(data)
    except ValueError:
        raise EndpointError(f"invalid: the stream carried data that is not JSON: {data.strip()[:80]!r}") from None
    if not isinstance(payload, dict):
        raise EndpointError(f"invalid: the stream carried a JSON {type(payload).__name__}, not an object")
    if "error" in payload:
        raise EndpointError(f"the server reported an error in the stream: {payload['error']}")
    for choice in payload.get("choices") or []:
        if choice.get("text"):
            stream.token_times.append(arrived)
            if stream.first_token is None:
                stream.first_token = arrived
        if choice.get("finish_reason"):
            stream.finish_reason = choice["finish_reason"]
            stream.finished_at = arrived
    usage = payload.get("usage")
    if usage:
        stream.completion_tokens = int(usage.get("completion_tokens", 0))
    timings = payload.get("timings")
    if timings:
        stream.predicted_n = timings.get("predicted_n")


class EndpointEngine:
    """The engine interface over an OpenAI-compatible endpoint (``url`` ends in ``/v1``)."""

    def __init__(self, url: str, *, model: str | None = None, label: str = "endpoint",
                 restart_server: Any = None, server: Any = None, seed: int = 1234,
                 option: str = "--axion-endpoint", api_key: Secret | None = None) -> None:
        self.url, self.label, self._key, self._option = url.rstrip("/"), label, api_key, option
        self.request_deadline_s = REQUEST_DEADLINE_S
        self._restart_server = restart_server   # a managed llama-server restarts; an external endpoint cannot
        self._managed = server                  # the LlamaServer this session started, stopped on close()
        self.measures_contention = server is not None   # our child process: its CPU time is ours
        self.requests_apart = True                       # every user's request streams on its own
        self.server = probe_endpoint(self.url, model, option, api_key)
        self._rng = random.Random(seed)
        self._warm_up_tokens = 0
        self.facts = ModelFacts(description=f"{self.server.model} served at {self.url}", n_params=0, size_bytes=0,
                                n_vocab=self.server.n_vocab, n_ctx_train=0, model_buffers=(),
                                system_info=self.server.build, llama_cpp_python_version="served")

    @property
    def alive(self) -> bool:
        return self._managed.alive if self._managed is not None else True

    def describe(self) -> str:
        slots = ("slots not reported" if self.server.slots is None
                 else slots_phrase(self.server.slots, self.server.slot_ctx))
        return f"endpoint {self.url}: model {self.server.model}, build {self.server.build}, {slots}"

    # -- the engine interface ------------------------------------------------------------------------

    def measure(self, kind: str, *, nodeid: str, threads: int, repetitions: int, max_seconds: float | None = None,
                progress: ProgressCallback | None = None, **shape: int) -> Measured:
        return measure_run(self, kind, nodeid=nodeid, threads=threads, repetitions=repetitions, progress=progress,
                           **shape)

    def run(self, kind: str, *, repetitions: int, warmup: bool = True, max_seconds: float | None = None,
            progress: ProgressCallback | None = None, **shape: int) -> Run:
        # max_seconds is not applied: every user keeps its rounds, which are read round by round
        if kind != "batched":
            raise EndpointError(f"an endpoint serves users: measure it with axion.batched(...), not axion."
                              f"{'prompt' if kind == 'prompt' else 'generate'}(...)")
        return _unless_lagging(lambda: self._users(shape["n_prompt"], shape["n_gen"], shape["batch_size"],
                                                   repetitions, warmup, progress))

    def open_loop(self, arrivals: Sequence[float], *, n_prompt: int, n_gen: int, max_in_flight: int,
                  progress: ProgressCallback | None = None) -> OpenLoopRun:
        """Requests due at ``arrivals`` (seconds from the start), at most ``max_in_flight`` outstanding at once,
        after one untimed request; measured again when the client could not keep the schedule."""
        return _unless_lagging(lambda: self._open_loop(arrivals, n_prompt, n_gen, max_in_flight, progress))

    def warm_up(self, n_prompt: int) -> WarmUpRun:
        self._warm_up_tokens = n_prompt
        start = time.perf_counter()
        self.run("batched", n_prompt=n_prompt, n_gen=4, batch_size=1, repetitions=1, warmup=False)
        return WarmUpRun(n_prompt=n_prompt, seconds=(time.perf_counter() - start,), settled=True)

    def count_tokens(self, text: str) -> int:
        try:
            return len(_call(self.url.removesuffix("/v1") + "/tokenize", self._key,
                             data=json.dumps({"content": text}).encode())["tokens"])
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as err:
            raise EndpointError(f"endpoint {self.url} cannot count tokens ({err}): give the reading speed in tokens/s "
                              "(--axion-reading-speed 5) instead of words per minute") from None

    def restart(self) -> None:
        """A managed server restarts and is warmed up again, so that a confirming attempt does not pit a cold
        server against a warm one; an external endpoint cannot be restarted and stays as it is."""
        if self._restart_server is not None:
            self._restart_server()
            if self._warm_up_tokens:
                self.warm_up(self._warm_up_tokens)

    def close(self) -> None:
        if self._managed is not None:
            self._managed.stop()

    # -- measuring -------------------------------------------------------------------------------------

    def _prompt(self, n_prompt: int) -> list[int]:
        top = max(self.server.n_vocab, FIRST_TOKEN_ID + 2)
        return [self._rng.randrange(FIRST_TOKEN_ID, top) for _ in range(n_prompt)]

    def _client(self, connections: int) -> Any:
        httpx = _httpx()
        # A fresh connection per request: a reused idle one can be closed by the server just as a request goes out.
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=0)
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, connect=10.0)
        headers = self._key.bearer() if self._key else {}
        # trust_env off for loopback: no proxy between this client and a server on this machine
        return httpx.AsyncClient(limits=limits, timeout=timeout, headers=headers, trust_env=not is_loopback(self.url))

    async def _users(self, n_prompt: int, n_gen: int, batch_size: int, repetitions: int, warmup: bool,
                     progress: ProgressCallback | None) -> ServedRun:
        lag = _LagWatch()
        async with self._client(batch_size + 1) as client:
            if warmup:
                await asyncio.gather(*(self._request(client, n_prompt, min(n_gen, 4), user, 0.0, 0.0)
                                       for user in range(batch_size)))
            start = time.perf_counter()
            done = {"count": 0}
            total = batch_size * repetitions

            async def user(index: int) -> list[ServedRequest]:
                answers = []
                due = 0.0
                for _ in range(repetitions):
                    answer = await self._request(client, n_prompt, n_gen, index, start, due)
                    answers.append(answer)
                    due = answer.end   # closed loop: the next request is due when this answer ends
                    done["count"] += 1
                    if progress is not None:
                        progress(f"served pp{n_prompt} tg{n_gen} x{batch_size}", done["count"], total)
                return answers

            async with lag:
                per_user = await asyncio.gather(*(user(i) for i in range(batch_size)))
        if lag.worst_ms > MAX_CLIENT_LAG_MS:
            raise ClientLagError(f"the measuring client fell {lag.worst_ms:.0f} ms behind while streaming {batch_size} "
                              f"users from {self.url}: its figures would include its own delay; give the client a "
                              "core of its own (fewer server threads) or measure fewer users")
        ordered = tuple(answer for round_index in range(repetitions) for answers in per_user
                        for answer in [answers[round_index]])
        return ServedRun(n_prompt=n_prompt, n_gen=n_gen, batch_size=batch_size, requests=ordered,
                         client_lag_ms=round(lag.worst_ms, 2))

    async def _open_loop(self, arrivals: Sequence[float], n_prompt: int, n_gen: int, max_in_flight: int,
                         progress: ProgressCallback | None) -> OpenLoopRun:
        lag = _LagWatch()
        late = {"worst": 0.0}
        in_flight = {"now": 0, "most": 0, "done": 0}
        async with self._client(max_in_flight + 1) as client:
            await self._request(client, n_prompt, min(n_gen, 4), 0, 0.0, 0.0)   # untimed: a cold first request
            bound = asyncio.Semaphore(max_in_flight)
            start = time.perf_counter()

            async def send(index: int, due: float) -> ServedRequest:
                wait = due - (time.perf_counter() - start)
                if wait > 0:
                    await asyncio.sleep(wait)
                late["worst"] = max(late["worst"], (time.perf_counter() - start - due) * 1e3)
                async with bound:   # beyond the bound a request waits here, and its TTFT runs from when it was due
                    in_flight["now"] += 1
                    in_flight["most"] = max(in_flight["most"], in_flight["now"])
                    try:
                        answer = await self._request(client, n_prompt, n_gen, index, start, due)
                    finally:
                        in_flight["now"] -= 1
                in_flight["done"] += 1
                if progress is not None:
                    progress(f"open loop pp{n_prompt} tg{n_gen}", in_flight["done"], len(arrivals))
                return answer

            async with lag:
                answers = await asyncio.gather(*(send(i, due) for i, due in enumerate(arrivals)))
        worst = max(lag.worst_ms, late["worst"])
        if worst > MAX_CLIENT_LAG_MS:
            raise ClientLagError(f"the measuring client could not keep the schedule: it sent a request or read a "
                                 f"stream {worst:.0f} ms late while {in_flight['most']} requests were in flight to "
                                 f"{self.url}; give the client a core of its own (fewer server threads) or send "
                                 "fewer requests per second")
        return OpenLoopRun(n_prompt=n_prompt, n_gen=n_gen, requests=tuple(answers),
                           window_s=arrivals[-1] if arrivals else 0.0, most_in_flight=in_flight["most"],
                           max_in_flight=max_in_flight, client_lag_ms=round(worst, 2))

    async def _request(self, client: Any, n_prompt: int, n_gen: int, user: int, start: float,
                       due: float) -> ServedRequest:
        try:   # a total deadline: httpx's timeouts are per read, which a server dripping bytes never trips
            return await asyncio.wait_for(self._streamed(client, n_prompt, n_gen, user, start, due),
                                          self.request_deadline_s)
        except asyncio.TimeoutError:
            raise EndpointError(f"invalid: a request of {n_prompt} prompt tokens and {n_gen} output tokens to "
                                f"{self.url} did not finish within {self.request_deadline_s:.0f} s") from None

    async def _streamed(self, client: Any, n_prompt: int, n_gen: int, user: int, start: float,
                        due: float) -> ServedRequest:
        httpx = _httpx()
        body = {"model": self.server.model, "prompt": self._prompt(n_prompt), "max_tokens": n_gen, "stream": True,
                "stream_options": {"include_usage": True}, "ignore_eos": True, "temperature": 0.0,
                "cache_prompt": False}
        what = f"a request of {n_prompt} prompt tokens and {n_gen} output tokens to {self.url}"
        stream = _Stream()
        try:
            async with client.stream("POST", f"{self.url}/completions", json=body) as response:
                if response.status_code in (401, 403):
                    raise EndpointError(refused_message(self.url, response.status_code, self._key, self._option))
                if response.status_code != 200:
                    text = await _capped_body(response)
                    raise EndpointError(f"invalid: HTTP {response.status_code} for {what}: {text.strip()}")
                buffer, event_start, received = "", None, 0
                async for chunk in response.aiter_text():
                    arrived = time.perf_counter() - start
                    received += len(chunk)
                    if received > MAX_STREAM_BYTES:
                        raise EndpointError(f"invalid: the answer to {what} went over {MAX_STREAM_BYTES // 2**20} "
                                            "MiB, far more than its tokens can take")
                    if not buffer.strip():
                        event_start = arrived   # this chunk holds the first byte of the next event
                    buffer += chunk
                    if len(buffer) > MAX_EVENT_BYTES and "\n\n" not in buffer:
                        raise EndpointError(f"invalid: one event of the answer to {what} went over "
                                            f"{MAX_EVENT_BYTES // 2**20} MiB without ending: not an SSE stream")
                    while "\n\n" in buffer:
                        event, buffer = buffer.split("\n\n", 1)
                        data = "\n".join(line[5:].lstrip() for line in event.splitlines() if line.startswith("data:"))
                        if data:
                            _read_event(data, event_start if event_start is not None else arrived, stream)
                        event_start = arrived if buffer.strip() else None
        except httpx.TimeoutException:
            raise EndpointError(f"invalid: no answer within {REQUEST_TIMEOUT_S:.0f} s for {what}") from None
        except httpx.HTTPError as err:
            raise EndpointError(f"invalid: {type(err).__name__} ({err}) during {what}: the server closed the "
                              "stream or died; check its log") from None
        end = time.perf_counter() - start
        return _checked(stream, n_gen=n_gen, user=user, due=due, end=end, what=what)


class _LagWatch:
    """How late the event loop wakes up while the block runs (a 5 ms ticker): the client's own lag, which would
    pass for the server's."""

    def __init__(self) -> None:
        self.worst_ms = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while not self._stop.is_set():
            due = time.perf_counter() + TICK_S
            await asyncio.sleep(TICK_S)
            self.worst_ms = max(self.worst_ms, (time.perf_counter() - due) * 1e3)

    async def __aenter__(self) -> _LagWatch:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def _capped_body(response: Any) -> str:
    """The start of an error answer, read no further than it is shown."""
    body = b""
    async for part in response.aiter_bytes():
        body += part
        if len(body) > 2000:
            break
    return body.decode("utf-8", "replace")[:200]


def _unless_lagging(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """A measurement whose client lagged is measured again, up to :data:`LAGGED_RUN_RETRIES` times."""
    for tries_left in range(LAGGED_RUN_RETRIES, -1, -1):
        try:
            return _in_thread(make)
        except ClientLagError as err:
            if not tries_left:
                raise ClientLagError(f"{err} (in each of {LAGGED_RUN_RETRIES + 1} tries)") from None
    raise AssertionError("unreachable")


def _in_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine's event loop in a thread of its own while this thread waits in short joins: Ctrl-C is then
    pytest's KeyboardInterrupt at once, whatever the loop awaits (in the main thread asyncio would turn it into
    a cancellation that every stream must honour first); the abandoned loop dies with the process, and the
    session's teardown stops the server."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(make())
        except BaseException as err:
            outcome["error"] = err

    thread = threading.Thread(target=target, name="axion-endpoint-client", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


def _checked(stream: _Stream, *, n_gen: int, user: int, due: float, end: float, what: str) -> ServedRequest:
    """The request's record, or an EngineError saying why its figures cannot be trusted."""
    if not stream.token_times and stream.finished_at is not None:
        # A server holds back the text of a token that ends inside a UTF-8 character: an answer of one such
        # token streams no text, only its finishing event, which then marks when the token was out.
        stream.token_times, stream.first_token = [stream.finished_at], stream.finished_at
    if stream.first_token is None or not stream.token_times:
        raise EndpointError(f"invalid: {what} streamed no text (does the server stream?)")
    if stream.completion_tokens is None:
        raise EndpointError(f"invalid: {what} streamed no usage: the server ignores stream_options.include_usage, so "
                          "its tokens cannot be counted (llama-cpp-python's own server sends none; use llama-server "
                          "or vLLM)")
    if stream.finish_reason != "length" or stream.completion_tokens != n_gen:
        raise EndpointError(f"invalid: {what} ended with finish_reason {stream.finish_reason!r} after "
                          f"{stream.completion_tokens} tokens: the stream was cut short or ignore_eos was ignored")
    if stream.predicted_n is not None and stream.predicted_n != stream.completion_tokens:
        raise EndpointError(f"invalid: {what}: usage says {stream.completion_tokens} tokens, the server's timings "
                          f"{stream.predicted_n}")
    if len(stream.token_times) > stream.completion_tokens:
        raise EndpointError(f"invalid: {what}: {len(stream.token_times)} text events for {stream.completion_tokens} "
                          "tokens by usage")
    return ServedRequest(user=user, due=due, first_token=stream.first_token, end=end,
                         token_times=tuple(stream.token_times), completion_tokens=stream.completion_tokens)
