"""Command-line options and ini values, resolved once into one validated, frozen record.

One table (:data:`pytest_axion.options.OPTIONS`) drives the pytest options, the ini keys, the help
text and the resolution, so they cannot disagree. Precedence: command line > ini > default. Every value keeps
where it came from, so an error can say which option or ini key to fix.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pytest_axion.budget import DEFAULT_BUDGET_S
from pytest_axion.comparison import DEFAULT_ESTIMATOR, DEFAULT_TOLERANCE, ESTIMATORS, parse_tolerance
from pytest_axion.credentials import Secret, api_key, public_url
from pytest_axion.errors import AxionError, SettingsError
from pytest_axion.machine.cpu import UsableCores, usable_cores
from pytest_axion.machine.features import parse_features
from pytest_axion.machine.hardware import validate_hardware_id
from pytest_axion.options import DEFAULT_SERVE_CTX, OPTIONS, OptionSpec
from pytest_axion.promises.ab import DEFAULT_AB_ROUNDS, DEFAULT_AB_TOLERANCE
from pytest_axion.promises.capacity import DEFAULT_CAPACITY_BUDGET_S
from pytest_axion.promises.reading import DEFAULT_READING_SPEED, ReadingSpeedSpec, parse_reading_speed

if TYPE_CHECKING:
    from pytest_axion.engines.deployment import Deployment
    from pytest_axion.machine.gguf import GgufInfo

T = TypeVar("T")


DEFAULT_REPETITIONS = 5
DEFAULT_CONFIRM = 2
DEFAULT_CONFIRM_SPACING_S = 60.0
DEFAULT_WORKER_TIMEOUT_S = 60.0
DEFAULT_PROXY_QUANTIZATION = "Q4_0"   # the article's 4 bits, the format KleidiAI's Arm kernels take
DEFAULT_RUNS = 3
DEFAULT_RUN_SPACING_S = 60.0
MAX_RUNS = 50
MAX_REPETITIONS = 1000
EFFICIENCY_MODES = ("cached", "fresh", "off")
MAX_SERVE_SLOTS = 256
MIN_SERVE_CTX, MAX_SERVE_CTX = 64, 1 << 20
DEFAULT_EFFICIENCY = "cached"
PROMPT_SIZING_MODES = ("rule", "sweep")
DEFAULT_PROMPT_SIZING = "rule"
MAX_FILL_TOKENS = 8192


_ONE_CORE = UsableCores(logical=1, physical=1)


@dataclass(frozen=True)
class Rule:
    """What a plain option may be, beyond the kind the option table gives it: its default, and the bounds of a
    number or the choices of a word."""

    default: object = None
    low: int | None = None
    high: int | None = None
    positive: bool = False          # seconds: more than 0, not merely 0 or more
    choices: tuple[str, ...] = ()


# The options resolved by their kind alone; the others (threads, model, tolerances, URLs, ...) each have a rule
# of their own in resolve_settings.
PLAIN: dict[str, Rule] = {
    "enabled": Rule(), "no_baselines": Rule(), "refresh": Rule(), "force": Rule(),
    "require_baseline": Rule(), "strict": Rule(),
    "repetitions": Rule(DEFAULT_REPETITIONS, 1, MAX_REPETITIONS),
    "confirm": Rule(DEFAULT_CONFIRM, 0, 10),
    "runs": Rule(DEFAULT_RUNS, 1, MAX_RUNS),
    "ab_rounds": Rule(DEFAULT_AB_ROUNDS, 2, MAX_REPETITIONS),
    "confirm_spacing": Rule(DEFAULT_CONFIRM_SPACING_S),
    "run_spacing": Rule(DEFAULT_RUN_SPACING_S),
    "worker_timeout": Rule(DEFAULT_WORKER_TIMEOUT_S, positive=True),
    "budget": Rule(DEFAULT_BUDGET_S),
    "capacity_budget": Rule(DEFAULT_CAPACITY_BUDGET_S, positive=True),
    "estimator": Rule(DEFAULT_ESTIMATOR, choices=tuple(ESTIMATORS)),
    "efficiency": Rule(DEFAULT_EFFICIENCY, choices=EFFICIENCY_MODES),
    "baselines": Rule(), "report": Rule(), "plots": Rule(), "markdown": Rule(), "python": Rule(),
    "endpoint_model": Rule(), "ab_baseline": Rule(), "replay": Rule(),
    "serve_ctx": Rule(DEFAULT_SERVE_CTX, MIN_SERVE_CTX, MAX_SERVE_CTX),
}


@dataclass(frozen=True)
class Sourced(Generic[T]):
    """A value and where it came from: ``--axion-threads``, ``ini axion_threads`` or ``default``."""

    value: T
    source: str


@dataclass(frozen=True)
class Settings:
    enabled: bool
    model: Sourced[str | None]      # None: the embedded model
    threads: Sourced[int]
    repetitions: Sourced[int]
    hardware: Sourced[str | None]   # None: derive from the CPU
    reading_speed: ReadingSpeedSpec
    report: Sourced[str | None]
    plots: Sourced[str | None]
    markdown: Sourced[str | None] = Sourced(None, "default")   # None: no Markdown summary
    require_features: tuple[str, ...] = ()
    baselines: Sourced[str | None] = Sourced(None, "default")   # None: <rootdir>/baselines
    compare_baselines: bool = True
    require_baseline: bool = False
    tolerance: Sourced[float] = Sourced(DEFAULT_TOLERANCE, "default")
    estimator: Sourced[str] = Sourced(DEFAULT_ESTIMATOR, "default")
    confirm: Sourced[int] = Sourced(DEFAULT_CONFIRM, "default")
    confirm_spacing_s: Sourced[float] = Sourced(DEFAULT_CONFIRM_SPACING_S, "default")
    worker_timeout_s: Sourced[float] = Sourced(DEFAULT_WORKER_TIMEOUT_S, "default")
    budget_s: Sourced[float] = Sourced(DEFAULT_BUDGET_S, "default")   # seconds of measuring per test; 0: none
    capacity_budget_s: Sourced[float] = Sourced(DEFAULT_CAPACITY_BUDGET_S, "default")
    strict: bool = False
    refresh: bool = False
    runs: Sourced[int] = Sourced(DEFAULT_RUNS, "default")
    run_spacing_s: Sourced[float] = Sourced(DEFAULT_RUN_SPACING_S, "default")
    force: bool = False
    python: Sourced[str | None] = Sourced(None, "default")       # None: this interpreter (sys.executable)
    ab_baseline: Sourced[str | None] = Sourced(None, "default")  # None: no A/B session
    ab_rounds: Sourced[int] = Sourced(DEFAULT_AB_ROUNDS, "default")
    ab_tolerance: Sourced[float] = Sourced(DEFAULT_AB_TOLERANCE, "default")
    efficiency: Sourced[str] = Sourced(DEFAULT_EFFICIENCY, "default")   # cached, fresh or off
    prompt_sizing: Sourced[str | int] = Sourced(DEFAULT_PROMPT_SIZING, "default")   # rule, sweep or tokens
    endpoint: Sourced[str | None] = Sourced(None, "default")     # a served deployment's URL, or None
    ab_endpoint: Sourced[str | None] = Sourced(None, "default")  # A of a served A/B session, or None
    endpoint_model: Sourced[str | None] = Sourced(None, "default")
    # Their API keys (from the URL's user info or AXION_API_KEY / OPENAI_API_KEY); the URLs above are public.
    endpoint_key: Secret | None = None
    ab_endpoint_key: Secret | None = None
    serve_slots: Sourced[int | None] = Sourced(None, "default")   # start llama-server with this many slots
    serve_ctx: Sourced[int] = Sourced(DEFAULT_SERVE_CTX, "default")   # ... each of this many tokens
    # Reports of this suite on proxies of the same model at other layer counts: predict the full model.
    predict_from: Sourced[tuple[str, ...]] = Sourced((), "default")

    replay: Sourced[str | None] = Sourced(None, "default")   # a report judged again instead of measuring

    warnings: tuple[str, ...] = ()
    cores: UsableCores = _ONE_CORE   # what the default thread count rests on

    @functools.cached_property
    def deployment(self) -> Deployment:
        """How this run measures: decided here once, asked by everything that differs by it."""
        from pytest_axion.engines.deployment import Deployment  # the engines: only once a run measures

        return Deployment(
            threads=self.threads.value, model_path=self.model.value, python=self.python.value,
            worker_timeout_s=self.worker_timeout_s.value, hardware_override=self.hardware.value,
            hardware_source=self.hardware.source, ab_python=self.ab_baseline.value, ab_rounds=self.ab_rounds.value,
            serve_slots=self.serve_slots.value, serve_ctx=self.serve_ctx.value, endpoint=self.endpoint.value,
            endpoint_model=self.endpoint_model.value, endpoint_key=self.endpoint_key,
            ab_endpoint=self.ab_endpoint.value, ab_endpoint_key=self.ab_endpoint_key, replay=self.replay.value)


def resolve_settings(cli: Mapping[str, object], ini: Mapping[str, str], *, cores: UsableCores) -> Settings:
    """Build :class:`Settings` from raw option values (``None`` = not given) and raw ini strings.

    ``cores`` are the cores this process may use: the default thread count and its limits.
    Raises :class:`SettingsError` naming the option or ini key and the fix.
    """
    warnings: list[str] = []
    raw = {spec.name: _pick(spec, cli, ini) for spec in OPTIONS}

    threads = _as_int(raw["threads"], default=cores.default_threads)
    if threads.value < 1:
        raise SettingsError(
            f"{threads.source} must be at least 1, got {threads.value}: "
            f"omit it to use {cores.default_threads} ({cores.describe()})"
        )
    usable = min(cores.logical, cores.quota_cpus or cores.logical)
    if threads.value > usable:
        warnings.append(
            f"{threads.source}={threads.value} exceeds the {usable:g} CPU(s) this process may use "
            f"({cores.describe()}): threads will wait on each other and the figures will be low"
        )

    plain = {spec.name: _typed(spec, raw[spec.name], PLAIN[spec.name]) for spec in OPTIONS if spec.name in PLAIN}

    hardware = _as_optional_str(raw["hardware"])
    if hardware.value is not None:
        validate_hardware_id(hardware.value, source=hardware.source)

    model = _as_optional_str(raw["model"])
    if model.value is not None:
        model = Sourced(os.path.expanduser(model.value), model.source)

    reading_raw = _as_optional_str(raw["reading_speed"])
    reading_speed = (DEFAULT_READING_SPEED if reading_raw.value is None
                     else parse_reading_speed(reading_raw.value, source=reading_raw.source))

    refresh, ab_baseline, replay = plain["refresh"].value, plain["ab_baseline"], plain["replay"]
    prompt_sizing = _as_prompt_sizing(raw["prompt_sizing"])

    (endpoint, endpoint_key), (ab_endpoint, ab_endpoint_key) = _as_url(raw["endpoint"]), _as_url(raw["ab_endpoint"])
    serve_raw = raw["serve"]
    serve_slots: Sourced[int | None] = Sourced(None, "default")
    if serve_raw.value is not None:
        slots = _as_int(serve_raw, default=0)
        serve_slots = Sourced(slots.value, slots.source)
    if serve_slots.value is not None and not 1 <= serve_slots.value <= MAX_SERVE_SLOTS:
        raise SettingsError(f"{serve_slots.source} must be between 1 and {MAX_SERVE_SLOTS} slots, got "
                            f"{serve_slots.value}")

    features = _as_optional_str(raw["require_features"])
    required = () if features.value is None else parse_features(features.value, source=features.source)
    _check_combinations(enabled=plain["enabled"].value, refresh=refresh, ab_baseline=ab_baseline,
                        ab_endpoint=ab_endpoint, serve_slots=serve_slots, serve_ctx=plain["serve_ctx"],
                        endpoint=endpoint, replay=replay, threads=threads, model=model,
                        reading_unit=reading_speed.unit, features=bool(required))

    return Settings(
        enabled=plain["enabled"].value,
        require_features=required,
        baselines=plain["baselines"],
        # An A/B session judges B against A measured side by side, not against stored baselines.
        compare_baselines=(not plain["no_baselines"].value and not refresh and ab_baseline.value is None
                           and ab_endpoint.value is None),
        require_baseline=plain["require_baseline"].value,
        tolerance=_as_tolerance(raw["tolerance"]),
        estimator=plain["estimator"],
        confirm=plain["confirm"],
        confirm_spacing_s=plain["confirm_spacing"],
        worker_timeout_s=plain["worker_timeout"],
        budget_s=plain["budget"],
        capacity_budget_s=plain["capacity_budget"],
        strict=plain["strict"].value,
        refresh=refresh,
        runs=plain["runs"],
        run_spacing_s=plain["run_spacing"],
        force=plain["force"].value,
        python=plain["python"],
        ab_baseline=ab_baseline,
        efficiency=plain["efficiency"],
        prompt_sizing=prompt_sizing,
        endpoint=endpoint,
        ab_endpoint=ab_endpoint,
        endpoint_model=plain["endpoint_model"],
        endpoint_key=endpoint_key,
        ab_endpoint_key=ab_endpoint_key,
        serve_slots=serve_slots,
        serve_ctx=plain["serve_ctx"],
        ab_rounds=plain["ab_rounds"],
        ab_tolerance=_as_tolerance(raw["ab_tolerance"], default=DEFAULT_AB_TOLERANCE),
        reading_speed=reading_speed,
        report=plain["report"],
        plots=plain["plots"],
        markdown=plain["markdown"],
        predict_from=_as_paths(raw["predict_from"]),
        replay=replay,
        model=model,
        threads=threads,
        repetitions=plain["repetitions"],
        hardware=hardware,
        warnings=tuple(warnings),
        cores=cores,
    )


def _check_combinations(*, enabled: bool, refresh: bool, ab_baseline: Sourced[str | None],
                        ab_endpoint: Sourced[str | None], serve_slots: Sourced[int | None], serve_ctx: Sourced[int],
                        endpoint: Sourced[str | None], replay: Sourced[str | None], threads: Sourced[int],
                        model: Sourced[str | None], reading_unit: str, features: bool) -> None:
    """Every rule about which options combine, in one place: each valid on its own, some not together."""
    if refresh and not enabled:
        raise SettingsError("--axion-refresh-baselines measures: add --axion-slo")
    if ab_baseline.value is not None and refresh:
        raise SettingsError("--axion-ab-baseline and --axion-refresh-baselines do not mix: run the A/B session, "
                            "then record baselines in a separate run")
    if serve_slots.value is not None and endpoint.value is not None:
        raise SettingsError("--axion-serve starts a server to measure, --axion-endpoint measures one already "
                            "running: give one of them")
    if serve_ctx.source.startswith("--") and serve_slots.value is None:   # an ini value waits for --axion-serve
        raise SettingsError(f"{serve_ctx.source} sizes the slots of the server --axion-serve N starts: give "
                            "--axion-serve N too (a server at --axion-endpoint has the context it was started with)")
    served = serve_slots.value is not None or endpoint.value is not None
    if (served or ab_endpoint.value is not None) and ab_baseline.value is not None:
        raise SettingsError("--axion-ab-baseline compares two llama-cpp-python installations in worker processes; "
                            "it does not mix with --axion-endpoint / --axion-serve / --axion-ab-endpoint")
    if ab_endpoint.value is not None and not served:
        raise SettingsError(f"{ab_endpoint.source} is side A of a served A/B session: give side B with "
                            "--axion-endpoint URL or --axion-serve N")
    if ab_endpoint.value is not None and refresh:
        raise SettingsError("--axion-ab-endpoint and --axion-refresh-baselines do not mix: run the A/B session, "
                            "then record baselines in a separate run")
    if replay.value is not None:
        _check_replay(replay, enabled=enabled, refresh=refresh, served=served, threads=threads,
                      ab=ab_baseline.value is not None or ab_endpoint.value is not None, model=model,
                      reading_unit=reading_unit, features=features)


def _check_replay(replay: Sourced[str | None], *, enabled: bool, refresh: bool, served: bool, ab: bool,
                  threads: Sourced[int], model: Sourced[str | None], reading_unit: str, features: bool) -> None:
    """A replay judges a recorded run: it needs --axion-slo and a readable report, and measures nothing. A value
    that only restates the recording (an ini file's threads, say) is no clash."""
    from pytest_axion.engines.replay import read_recorded_run  # reads the report (jsonschema): only for a replay

    if not enabled:
        raise SettingsError(f"{replay.source} judges a recorded run under --axion-slo: add --axion-slo")
    try:
        recorded = read_recorded_run(str(replay.value))
    except AxionError as err:
        raise SettingsError(str(err)) from None
    other_model = model.value is not None and Path(model.value).name != recorded.model.file_name
    clash = ("--axion-refresh-baselines" if refresh else "--axion-serve / --axion-endpoint" if served
             else "an A/B session" if ab else f"{model.source} {model.value}" if other_model
             else f"{threads.source}={threads.value} (it recorded {recorded.threads})"
             if threads.source != "default" and threads.value != recorded.threads
             else "--axion-require-features (this machine's build is not what was measured)" if features else None)
    if clash is not None:
        raise SettingsError(f"{replay.source} replays what the report recorded (its model, machine and threads) and "
                            f"measures nothing, so {clash} does not apply: run that without --axion-replay")
    if reading_unit == "wpm":
        raise SettingsError(f"{replay.source} has no tokenizer to turn words per minute into tokens: give "
                            "--axion-reading-speed in tokens/s (the report's settings.reading_speed_tokens_per_s)")


def _pick(spec: OptionSpec, cli: Mapping[str, object], ini: Mapping[str, str]) -> Sourced[object]:
    value = cli.get(spec.name)
    if value is not None and value is not False:
        return Sourced(value, spec.flag)
    if spec.ini is not None:
        text = ini.get(spec.ini, "")
        if text is not None and str(text).strip():
            return Sourced(str(text).strip(), f"ini {spec.ini}")
    return Sourced(None, "default")


def _typed(spec: OptionSpec, raw: Sourced[object], rule: Rule) -> Sourced[Any]:
    """A plain option's value by its kind in the option table, within its rule; errors name the option."""
    if spec.kind in ("flag", "bool"):
        return Sourced(_as_bool(raw), raw.source)
    if spec.kind == "int":
        assert isinstance(rule.default, int)
        number = _as_int(raw, default=rule.default)
        if rule.low is not None and rule.high is not None and not rule.low <= number.value <= rule.high:
            raise SettingsError(f"{number.source} must be between {rule.low} and {rule.high}, got {number.value}")
        return number
    if spec.kind == "float":
        assert isinstance(rule.default, float)
        seconds = _as_seconds(raw, default=rule.default)
        return _positive(seconds) if rule.positive else seconds
    word = _as_optional_str(raw)
    if word.value is None:
        return Sourced(rule.default, word.source)
    if rule.choices and word.value not in rule.choices:
        raise SettingsError(f"{word.source} must be one of {', '.join(rule.choices)}, got {word.value!r}")
    return word


def _as_int(raw: Sourced[object], *, default: int) -> Sourced[int]:
    if raw.value is None:
        return Sourced(default, "default")
    return Sourced(_convert(raw, int, "a whole number"), raw.source)


def _as_bool(raw: Sourced[object]) -> bool:
    if raw.value is None or isinstance(raw.value, bool):
        return bool(raw.value)
    text = str(raw.value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{raw.source} must be true or false, got {raw.value!r}")


def _as_tolerance(raw: Sourced[object], *, default: float = DEFAULT_TOLERANCE) -> Sourced[float]:
    if raw.value is None:
        return Sourced(default, "default")
    return Sourced(parse_tolerance(str(raw.value), source=raw.source), raw.source)


def _as_seconds(raw: Sourced[object], *, default: float) -> Sourced[float]:
    if raw.value is None:
        return Sourced(default, "default")
    value = _convert(raw, float, "a number of seconds")
    if not 0 <= value <= 86400:
        raise SettingsError(f"{raw.source} must be between 0 and 86400 seconds, got {raw.value!r}")
    return Sourced(value, raw.source)


def _positive(value: Sourced[float]) -> Sourced[float]:
    if value.value <= 0:
        raise SettingsError(f"{value.source} must be more than 0 seconds, got {value.value:g}")
    return value


def _as_optional_str(raw: Sourced[object]) -> Sourced[str | None]:
    if raw.value is None:
        return Sourced(None, "default")
    return Sourced(str(raw.value), raw.source)


def _as_prompt_sizing(raw: Sourced[object]) -> Sourced[str | int]:
    if raw.value is None:
        return Sourced(DEFAULT_PROMPT_SIZING, "default")
    text = str(raw.value).strip().lower()
    if text in PROMPT_SIZING_MODES:
        return Sourced(text, raw.source)
    if text.isascii() and text.isdigit() and len(text) <= 6 and 1 <= int(text) <= MAX_FILL_TOKENS:
        return Sourced(int(text), raw.source)
    raise SettingsError(f"{raw.source} must be rule, sweep or a number of tokens from 1 to {MAX_FILL_TOKENS}, "
                        f"got {raw.value!r}")


def _as_paths(raw: Sourced[object]) -> Sourced[tuple[str, ...]]:
    if raw.value is None:
        return Sourced((), "default")
    paths = tuple(os.path.expanduser(part.strip()) for part in str(raw.value).split(",") if part.strip())
    if not paths:
        raise SettingsError(f"{raw.source} must name one or more report files, got {raw.value!r}")
    return Sourced(paths, raw.source)


def _as_url(raw: Sourced[object]) -> tuple[Sourced[str | None], Secret | None]:
    """The public URL (no user info, query or fragment: it is shown and written) and the key to send to it."""
    url = _as_optional_str(raw)
    if url.value is None:
        return url, None
    if not url.value.startswith(("http://", "https://")):
        raise SettingsError(f"{url.source} must be an http(s) URL such as http://127.0.0.1:8080/v1, got "
                            f"{public_url(url.value)!r}")
    try:
        return Sourced(public_url(url.value), url.source), api_key(url.value)
    except ValueError:   # a port that is not a number, say
        raise SettingsError(f"{url.source} is not a valid URL ({_url_shown(url.value)}): give one such as "
                            "http://127.0.0.1:8080/v1") from None


def _url_shown(url: str) -> str:
    try:
        return public_url(url)
    except ValueError:
        return url.split("://", 1)[0] + "://..."


def _convert(raw: Sourced[object], convert: Callable[[str], T], expected: str) -> T:
    try:
        return convert(str(raw.value).strip())
    except ValueError:
        raise SettingsError(f"{raw.source} must be {expected}, got {raw.value!r}") from None


def settings_for_this_machine(cli: Mapping[str, object], ini: Mapping[str, str]) -> Settings:
    """Resolve settings with this machine's core counts as the defaults and limits."""
    settings = resolve_settings(cli, ini, cores=usable_cores())
    if settings.enabled and settings.replay.value is None:   # a replay loads no model: its report was checked
        # A missing or broken model is a usage error, found before any test runs (imported here: a run
        # without --axion-slo pays nothing for the GGUF reader).
        from pytest_axion.machine.gguf import read_gguf_info
        from pytest_axion.machine.model import embedded_model_path

        if settings.model.value is not None and settings.model.value.startswith("proxy:"):
            settings = with_proxy_model(settings)
        info = read_gguf_info(settings.model.value or str(embedded_model_path()))
        if settings.predict_from.value:
            check_predict_from(settings, info)
    return settings


def check_predict_from(settings: Settings, info: GgufInfo) -> None:
    """``--axion-predict-from``: readable reports of runs on proxies of the model this run measures a proxy of."""
    from pytest_axion.machine.model import proxy_of as proxy_of_model
    from pytest_axion.proxy.predict import proxy_of as proxy_of_report
    from pytest_axion.store.compare import read_report

    source = settings.predict_from.source
    if settings.prompt_sizing.value == "sweep":
        raise SettingsError(f"{source} fits rows measured alike on each proxy, but --axion-prompt-sizing sweep sizes "
                            "each proxy apart (its own sweep): pin a number of tokens instead, e.g. "
                            "--axion-prompt-sizing 256")
    mine = proxy_of_model(info)
    if mine is None:
        raise SettingsError(f"{source} predicts a full model from proxies, but {info.path} is not a proxy: "
                            "measure one with --axion-model proxy:NAME:LAYERS")
    for path in settings.predict_from.value:
        try:
            theirs = proxy_of_report(read_report(Path(path)), path)
        except AxionError as err:
            raise SettingsError(f"{source}: {err}") from None
        if theirs["of"] != mine["of"]:
            raise SettingsError(f"{source}: {path} measured a proxy of {theirs['of']}, this run one of "
                                f"{mine['of']}: give reports of proxies of the same model")
        if theirs.get("quantization") != mine["quantization"]:
            raise SettingsError(f"{source}: {path} measured {theirs.get('quantization')} weights, this run "
                                f"{mine['quantization']}: give reports of proxies of the same quantization")


def with_proxy_model(settings: Settings) -> Settings:
    """``--axion-model proxy:NAME[:LAYERS][:QUANT]`` or ``proxy:FILE.gguf[:LAYERS]``: the proxy of that model (its
    shapes, types and tokenizer size, a few layers, random weights), built once into the cache and measured like
    any GGUF."""
    import dataclasses
    from importlib import metadata

    from pytest_axion.proxy import ensure_proxy
    from pytest_axion.proxy.spec import parse_proxy_request

    assert settings.model.value is not None
    request = parse_proxy_request(settings.model.value)
    quantization = request.quantization
    if quantization is None and request.like is None:
        quantization = DEFAULT_PROXY_QUANTIZATION
    try:
        version = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        version = "unknown"
    info = ensure_proxy(request.spec(), quantization=quantization, llama_cpp_version=version, layers=request.layers)
    return dataclasses.replace(settings, model=Sourced(info.path, f"{settings.model.source} ({info.label})"))
