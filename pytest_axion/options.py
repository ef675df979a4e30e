"""The plugin's command-line options and ini keys as data: what pytest registers at start-up.

Pure data and nothing to import, so that a pytest run that does not use pytest-axion pays for this
table and not for the code that measures (see ``benchmarks/import_overhead.py``); ``settings.py``
resolves and validates the values once a run asks for them.
"""

from __future__ import annotations

from dataclasses import dataclass

MARKER = "axion_slo"
# What ``pytest --markers`` does not ask for: the marker is registered with this line, and with every key
# (gathered from the kinds of promise) only when the marker help is shown.
MARKER_SHORT_HELP = (f"{MARKER}(**promises): performance promises checked under --axion-slo "
                     "(`pytest --markers` lists its keys)")


# The context per slot of the llama-server that --axion-serve starts, unless --axion-serve-ctx says otherwise.
DEFAULT_SERVE_CTX = 4096


@dataclass(frozen=True)
class OptionSpec:
    name: str           # attribute name in Settings
    flag: str           # command-line flag
    ini: str | None     # ini key, or None for command-line only
    kind: str           # "flag" (command line only), "bool" (flag or ini), "str", "int", "float"
    help: str
    metavar: str | None = None


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("enabled", "--axion-slo", None, "flag",
               "run the performance measurements and check the declared SLOs (without it, tests that "
               "use the axion fixtures are skipped)"),
    OptionSpec("model", "--axion-model", "axion_model", "str",
               "GGUF model to measure (default: the embedded SmolLM2-135M Q4_1 from pytest-axion[model]), or "
               "proxy:NAME[:LAYERS][:QUANT]: a known model's exact shapes and tensor types with a few layers and "
               "random weights, built once into the cache (e.g. proxy:llama-3.3-70b:4, Q4_0 by default), or "
               "proxy:FILE.gguf[:LAYERS]: the same, like the GGUF at FILE (its header is enough; its types kept)",
               "PATH"),
    OptionSpec("predict_from", "--axion-predict-from", "axion_predict_from", "str",
               "comma-separated --axion-report files of this suite run on proxies of the same model at other layer "
               "counts: the summary and the report add the full model's figures predicted from them and this run "
               "(labelled as a prediction; promises judge what was measured)", "REPORTS"),
    OptionSpec("threads", "--axion-threads", "axion_threads", "int",
               "threads for llama.cpp (default, as llama.cpp's tools: one per physical core this process may "
               "use, within its CPU affinity and cgroup quota)", "N"),
    OptionSpec("repetitions", "--axion-repetitions", "axion_repetitions", "int",
               "timed repetitions per measurement, after one warm-up (default: 5, as llama-bench)", "R"),
    OptionSpec("reading_speed", "--axion-reading-speed", "axion_reading_speed", "str",
               "human reading speed for per_user_tps='reading': tokens/s ('5', the default) or words per "
               "minute ('238wpm', converted with the model's tokenizer)", "SPEED"),
    OptionSpec("report", "--axion-report", "axion_report", "str",
               "write a JSON report of every measurement and verdict (schema: pytest_axion/schemas/"
               "report.schema.json)", "PATH"),
    OptionSpec("plots", "--axion-plots", "axion_plots", "str",
               "draw the benchmark's three figures (PNG and SVG) into this folder; needs pytest-axion[plots]",
               "DIR"),
    OptionSpec("markdown", "--axion-markdown", "axion_markdown", "str",
               "write a Markdown summary for CI (verdicts first, failures on top, capacity, shape curves, "
               "figure links); also appended to $GITHUB_STEP_SUMMARY when that is set", "PATH"),
    OptionSpec("hardware", "--axion-hardware", "axion_hardware", "str",
               "hardware id that selects baselines, e.g. gcp-c4a-standard-32 (default: derived from the "
               "CPU; letters, digits, '.', '_' and '-' only)", "ID"),
    OptionSpec("require_features", "--axion-require-features", "axion_require_features", "str",
               "comma-separated llama.cpp build flags (KLEIDIAI,REPACK) or CPU features (sve,i8mm) the run "
               "needs: a missing one stops the run before anything is measured", "LIST"),
    OptionSpec("baselines", "--axion-baselines", "axion_baselines", "str",
               "folder of stored per-hardware baselines (default: baselines/ in the rootdir)", "DIR"),
    OptionSpec("no_baselines", "--axion-no-baselines", None, "flag",
               "check the SLOs only: do not compare with stored baselines"),
    OptionSpec("require_baseline", "--axion-require-baseline", "axion_require_baseline", "bool",
               "fail measurements that have no stored baseline for this hardware and model (default: "
               "report them as no-baseline)"),
    OptionSpec("tolerance", "--axion-tolerance", "axion_tolerance", "str",
               "smallest slowdown against the baseline that counts as a regression: a fraction such as 0.1 "
               "(the default) or a percentage; widened to twice the baseline's between-run spread; marker key "
               "tolerance= sets it per test", "FRAC"),
    OptionSpec("estimator", "--axion-estimator", "axion_estimator", "str",
               "statistic of each run compared with the baseline: median (default) or best", "NAME"),
    OptionSpec("confirm", "--axion-confirm", "axion_confirm", "int",
               "fresh attempts that must also regress before a regression fails (default 2)", "N"),
    OptionSpec("confirm_spacing", "--axion-confirm-spacing", "axion_confirm_spacing", "float",
               "seconds to pause before the first confirming attempt, doubled before each later one (60, 120, "
               "240 s by default), so that the attempts span a slow spell of the machine; an attempt is not made "
               "while other processes still keep the machine busy at the pause's end after contended ones", "S"),
    OptionSpec("budget", "--axion-budget", "axion_budget", "float",
               "seconds of measuring one test may spend, its confirming attempts included (pauses are not "
               "measuring, except one that only waits for other processes to finish): a slow model's cells stop "
               "at 3 repetitions once more would pass 1/8 of it, and a confirmation that would pass it is not made "
               "(default: 120; 0: no budget)", "S"),
    OptionSpec("capacity_budget", "--axion-capacity-budget", "axion_capacity_budget", "float",
               "seconds of measuring an axion.capacity() search may spend after the first measurement of its "
               "batch sizes, where the call sets no budget_s= (default: 120)", "S"),
    OptionSpec("worker_timeout", "--axion-worker-timeout", "axion_worker_timeout", "float",
               "seconds a llama.cpp worker may stay silent before it counts as hung and is killed; a request's own "
               "limit grows with its work at the warm-up's speed (default 60)", "S"),
    OptionSpec("strict", "--axion-strict", "axion_strict", "bool",
               "fail inconclusive verdicts too (default: warn); a refresh refuses noisy entries instead of "
               "recording them with a wide band"),
    OptionSpec("refresh", "--axion-refresh-baselines", None, "flag",
               "record this run's measurements (tests that passed) as the new baselines, from --axion-runs "
               "separate runs; prints the old -> new diff"),
    OptionSpec("runs", "--axion-runs", "axion_runs", "int",
               "separate runs (model loads) a baseline refresh records (default 3)", "K"),
    OptionSpec("run_spacing", "--axion-run-spacing", "axion_run_spacing", "float",
               "seconds between the runs of a refresh (default 60)", "S"),
    OptionSpec("force", "--axion-force", None, "flag",
               "record a refresh even when other processes keep the machine busy (the noisy entries get the "
               "wide band their spread gives them)"),
    OptionSpec("endpoint", "--axion-endpoint", "axion_endpoint", "str",
               "measure a served deployment: the OpenAI-compatible endpoint (e.g. http://host:8000/v1) that "
               "axion.batched(...) sends its concurrent streaming users to; needs pytest-axion[serve]", "URL"),
    OptionSpec("endpoint_model", "--axion-endpoint-model", "axion_endpoint_model", "str",
               "the model name the endpoint serves (default: the first one it lists)", "NAME"),
    OptionSpec("serve", "--axion-serve", "axion_serve", "int",
               "start llama.cpp's llama-server with N parallel slots on 127.0.0.1 for this session (built once "
               "from the installed llama-cpp-python's llama.cpp tree) and measure it as the endpoint", "N"),
    OptionSpec("serve_ctx", "--axion-serve-ctx", "axion_serve_ctx", "int",
               "tokens of context each slot of the --axion-serve server holds (llama-server's -c is slots x N; "
               f"default {DEFAULT_SERVE_CTX}): as the deployment it stands for has it, since a larger cache makes "
               "the server's steps slower with many users", "N"),
    OptionSpec("replay", "--axion-replay", None, "str",
               "judge the samples of an --axion-report file again instead of measuring: each test's workloads are "
               "answered with what that report recorded, on its model, hardware id and threads, so the promises, "
               "baselines and reports say whether that run passes as things stand now", "REPORT"),
    OptionSpec("efficiency", "--axion-efficiency", "axion_efficiency", "str",
               "the machine's own limits (memory bandwidth, float32 compute) that efficiency figures and "
               "promises are read against: cached (default: measured once per hardware id and thread count, "
               "kept a week), fresh (measured in this run) or off", "MODE"),
    OptionSpec("prompt_sizing", "--axion-prompt-sizing", "axion_prompt_sizing", "str",
               "tokens per call that prompt workloads sized with axion.fill_tokens use: rule (default: 32 per "
               "thread, at most 512), sweep (where this machine's prompt speed levels off for this model, measured "
               "once per hardware id, model and threads and cached a week) or a number of tokens", "MODE"),
    OptionSpec("python", "--axion-python", "axion_python", "str",
               "the Python interpreter whose llama-cpp-python measures, in a worker process of its own "
               "(default: this one; e.g. a venv with another llama.cpp build)", "PYTHON"),
    OptionSpec("ab_baseline", "--axion-ab-baseline", "axion_ab_baseline", "str",
               "A/B session: measure every workload also with the llama-cpp-python of this Python "
               "interpreter (A, e.g. .venv-old/bin/python), alternating with the current one (B), and "
               "judge the paired ratios B/A instead of the stored baselines", "PYTHON"),
    OptionSpec("ab_endpoint", "--axion-ab-endpoint", "axion_ab_endpoint", "str",
               "A/B session of two served deployments: measure this OpenAI-compatible endpoint (A, e.g. the "
               "current release's server) alternating with the one of --axion-endpoint or --axion-serve (B), "
               "and judge the paired ratios B/A instead of the stored baselines", "URL"),
    OptionSpec("ab_rounds", "--axion-ab-rounds", "axion_ab_rounds", "int",
               "rounds of an A/B session: one repetition per side each, ABBA order (default 10)", "N"),
    OptionSpec("ab_tolerance", "--axion-ab-tolerance", "axion_ab_tolerance", "str",
               "smallest B/A slowdown that counts as a regression in an A/B session: a fraction such as 0.05 "
               "(the default) or a percentage", "FRAC"),
)


def options_given(cli: dict[str, object]) -> bool:
    """Whether the command line used any of the plugin's options (values as pytest parsed them)."""
    return any(value not in (None, False) for value in cli.values())
