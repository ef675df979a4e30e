import pytest

from pytest_axion.errors import HardwareIdError, SettingsError
from pytest_axion.machine.cpu import UsableCores
from pytest_axion.options import DEFAULT_SERVE_CTX
from pytest_axion.settings import OPTIONS, PLAIN, Sourced, resolve_settings


def resolve(cli=None, ini=None, physical=2, logical=4, quota=None):
    return resolve_settings(cli or {}, ini or {}, cores=UsableCores(logical=logical, physical=physical,
                                                                    quota_cpus=quota, machine_logical=64))


def test_defaults_use_physical_cores_and_five_repetitions():
    settings = resolve()
    assert not settings.enabled
    assert (settings.threads.value, settings.threads.source) == (2, "default")
    assert settings.repetitions.value == 5
    assert settings.model.value is None and settings.hardware.value is None


def test_command_line_beats_ini_and_each_value_knows_its_source():
    settings = resolve(cli={"threads": "3"}, ini={"axion_threads": "1", "axion_repetitions": "7"})
    assert (settings.threads.value, settings.threads.source) == (3, "--axion-threads")
    assert (settings.repetitions.value, settings.repetitions.source) == (7, "ini axion_repetitions")


def test_zero_threads_is_an_error_naming_the_option():
    with pytest.raises(SettingsError, match=r"--axion-threads must be at least 1, got 0"):
        resolve(cli={"threads": "0"})


def test_non_numeric_ini_value_names_the_ini_key():
    with pytest.raises(SettingsError, match=r"ini axion_repetitions must be a whole number, got 'many'"):
        resolve(ini={"axion_repetitions": "many"})


def test_more_threads_than_cpus_is_a_warning_not_an_error():
    settings = resolve(cli={"threads": "8"}, logical=2)
    assert settings.threads.value == 8
    assert any("exceeds the 2 CPU(s) this process may use" in w for w in settings.warnings)


def test_a_cgroup_quota_below_the_cores_sets_the_default_threads_and_the_warning():
    # docker --cpus=1.5 on a big host: llama.cpp must not start one thread per core of the host.
    settings = resolve(physical=8, logical=16, quota=1.5)
    assert (settings.threads.value, settings.threads.source) == (1, "default")
    assert settings.cores.describe() == ("8 physical core(s) of the 16 CPU(s) this process may use (machine: 64), "
                                         "cgroup CPU quota 1.5")
    crowded = resolve(cli={"threads": "4"}, physical=8, logical=16, quota=1.5)
    assert any("exceeds the 1.5 CPU(s) this process may use" in w for w in crowded.warnings)


def test_hardware_id_with_path_separators_is_rejected():
    with pytest.raises(HardwareIdError, match="--axion-hardware"):
        resolve(cli={"hardware": "../etc"})
    assert resolve(cli={"hardware": "gcp-c4a-standard-32"}).hardware.value == "gcp-c4a-standard-32"


def test_model_path_expands_user_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve(ini={"axion_model": "~/m.gguf"}).model.value == str(tmp_path / "m.gguf")


def test_every_ini_key_and_flag_is_unique():
    flags = [spec.flag for spec in OPTIONS]
    inis = [spec.ini for spec in OPTIONS if spec.ini]
    assert len(flags) == len(set(flags)) and len(inis) == len(set(inis))
    assert all(flag.startswith("--axion-") for flag in flags)


def test_baseline_gate_defaults():
    settings = resolve(cli={"enabled": True})
    assert settings.compare_baselines and not settings.require_baseline and not settings.strict
    assert settings.tolerance.value == 0.10 and settings.estimator.value == "median"
    assert settings.confirm.value == 2 and settings.confirm_spacing_s.value == 60.0
    assert settings.runs.value == 3 and settings.run_spacing_s.value == 60.0 and not settings.refresh


def test_the_capacity_budget_defaults_to_120_s_and_takes_the_ini_key():
    assert resolve(cli={"enabled": True}).capacity_budget_s.value == 120.0
    assert resolve(ini={"axion_capacity_budget": "30"}).capacity_budget_s == Sourced(30.0, "ini axion_capacity_budget")


def test_the_measuring_budget_defaults_to_120_s_per_test_takes_the_ini_key_and_0_turns_it_off():
    assert resolve(cli={"enabled": True}).budget_s == Sourced(120.0, "default")
    assert resolve(ini={"axion_budget": "600"}).budget_s == Sourced(600.0, "ini axion_budget")
    assert resolve(cli={"budget": "0"}).budget_s.value == 0.0


@pytest.mark.parametrize("text, value", [("10%", 0.10), ("0.05", 0.05), (" 25 % ".strip(), 0.25), ("0", 0.0)])
def test_tolerance_takes_fractions_and_percentages(text, value):
    assert resolve(ini={"axion_tolerance": text}).tolerance.value == pytest.approx(value)


@pytest.mark.parametrize("cli, message", [
    ({"tolerance": "abc"}, "--axion-tolerance must be a fraction such as 0.1 or a percentage"),
    ({"tolerance": "150%"}, "--axion-tolerance must be at least 0 and below 100%"),
    ({"confirm": "-1"}, "--axion-confirm must be between 0 and 10"),
    ({"runs": "0"}, "--axion-runs must be between 1 and 50"),
    ({"estimator": "mean"}, "--axion-estimator must be one of median, best"),
    ({"confirm_spacing": "-3"}, "--axion-confirm-spacing must be between 0 and 86400"),
    ({"capacity_budget": "0"}, "--axion-capacity-budget must be more than 0 seconds, got 0"),
    ({"budget": "-1"}, "--axion-budget must be between 0 and 86400"),
    ({"serve": "2", "serve_ctx": "16"}, "--axion-serve-ctx must be between 64 and 1048576"),
    ({"serve_ctx": "512"}, "--axion-serve-ctx sizes the slots of the server --axion-serve N starts: give --axion"),
    ({"refresh": True}, "--axion-refresh-baselines measures: add --axion-slo"),
])
def test_gate_options_refuse_bad_values_by_name(cli, message):
    with pytest.raises(SettingsError, match=message):
        resolve(cli=cli)


def test_the_started_servers_context_per_slot_reaches_its_deployment_and_an_ini_value_waits_for_serve():
    assert resolve(cli={"serve": "4", "serve_ctx": "512"}).deployment.serve_ctx == 512
    assert resolve(cli={"serve": "4"}).deployment.serve_ctx == DEFAULT_SERVE_CTX
    assert resolve(ini={"axion_serve_ctx": "1024"}).serve_ctx == Sourced(1024, "ini axion_serve_ctx")


def test_refresh_and_no_baselines_turn_comparison_off_and_bool_ini_keys_parse():
    assert not resolve(cli={"enabled": True, "refresh": True}).compare_baselines
    assert not resolve(cli={"enabled": True, "no_baselines": True}).compare_baselines
    settings = resolve(ini={"axion_strict": "true", "axion_require_baseline": "yes"})
    assert settings.strict and settings.require_baseline
    with pytest.raises(SettingsError, match="ini axion_strict must be true or false"):
        resolve(ini={"axion_strict": "maybe"})


def test_required_features_come_from_the_option_or_the_ini_and_unknown_names_are_refused():
    assert resolve({"require_features": "KLEIDIAI, sve"}).require_features == ("KLEIDIAI", "sve")
    assert resolve(ini={"axion_require_features": "REPACK"}).require_features == ("REPACK",)
    assert resolve().require_features == ()
    with pytest.raises(SettingsError, match=r"ini axion_require_features: unknown feature\(s\) KLEIDAI"):
        resolve(ini={"axion_require_features": "KLEIDAI"})


@pytest.mark.parametrize("cli, message", [
    ({"ab_endpoint": "http://a:8080/v1"}, "--axion-ab-endpoint is side A of a served A/B session: give side B"),
    ({"ab_endpoint": "a:8080/v1", "serve": "4"}, "--axion-ab-endpoint must be an http"),
    ({"ab_endpoint": "http://a:8080/v1", "serve": "4", "ab_baseline": "/venv/bin/python"},
     "--axion-ab-baseline .* does not mix with .*--axion-ab-endpoint"),
    ({"ab_endpoint": "http://a:8080/v1", "serve": "4", "enabled": True, "refresh": True},
     "--axion-ab-endpoint and --axion-refresh-baselines do not mix"),
])
def test_served_ab_session_needs_side_b_and_refuses_what_does_not_mix(cli, message):
    with pytest.raises(SettingsError, match=message):
        resolve(cli=cli)


def test_served_ab_session_judges_pairs_instead_of_stored_baselines():
    settings = resolve(cli={"enabled": True, "ab_endpoint": "http://a:8080/v1", "endpoint": "http://b:8080/v1"})
    assert settings.deployment.ab_source == "http://a:8080/v1" and not settings.compare_baselines
    assert settings.deployment.kind == "served A/B" and settings.deployment.paired
    assert resolve(cli={"enabled": True}).deployment.ab_source is None


def test_prompt_sizing_is_rule_sweep_or_tokens_and_anything_else_names_its_source():
    assert resolve().prompt_sizing.value == "rule"
    assert resolve(cli={"prompt_sizing": "Sweep"}).prompt_sizing.value == "sweep"
    assert resolve(ini={"axion_prompt_sizing": "256"}).prompt_sizing == \
        type(resolve().prompt_sizing)(256, "ini axion_prompt_sizing")
    for bad in ("0", "fast", "99999"):
        with pytest.raises(SettingsError, match=r"--axion-prompt-sizing must be rule, sweep or a number of tokens"):
            resolve(cli={"prompt_sizing": bad})


def test_predict_from_is_a_list_of_reports():
    assert resolve().predict_from.value == ()
    assert resolve(cli={"predict_from": "a.json, b.json"}).predict_from.value == ("a.json", "b.json")
    with pytest.raises(SettingsError, match=r"--axion-predict-from must name one or more report files"):
        resolve(cli={"predict_from": " , "})


REPLAYED = str(__import__("pathlib").Path(__file__).parent / "data" / "many-core" / "reference-suite-16t-report.json")


@pytest.mark.parametrize(("cli", "kind"), [
    ({}, "in process"),
    ({"ab_baseline": "/other/python"}, "installation A/B"),
    ({"serve": "4"}, "llama-server"),
    ({"endpoint": "http://b:8080/v1"}, "endpoint"),
    ({"serve": "4", "ab_endpoint": "http://a:8080/v1"}, "served A/B"),
    ({"replay": REPLAYED}, "replay"),
])
def test_the_deployment_is_decided_once_from_the_settings(cli, kind):
    deployment = resolve(cli={"enabled": True, **cli}).deployment
    assert deployment.kind == kind
    assert deployment.paired == (kind in ("installation A/B", "served A/B"))
    assert deployment.computes_here == (kind not in ("endpoint", "replay"))
    assert deployment.sweeps_prompt == (kind == "in process") and deployment.measures == (kind != "replay")


def test_a_replay_reads_its_report_at_start_and_names_its_machine_and_threads():
    deployment = resolve(cli={"enabled": True, "replay": REPLAYED}).deployment
    assert deployment.hardware_id() == "x86_64-icelake-16c-d338d0dc" and deployment.run_threads() == 16
    assert deployment.model_name() == "SmolLM2-135M-Instruct.Q4_1"


@pytest.mark.parametrize(("cli", "message"), [
    ({"replay": REPLAYED}, "--axion-replay judges a recorded run under --axion-slo: add --axion-slo"),
    ({"enabled": True, "replay": "/no/such.json"}, "--axion-replay: /no/such.json does not exist"),
    ({"enabled": True, "replay": REPLAYED, "serve": "2"}, "so --axion-serve / --axion-endpoint does not apply"),
    ({"enabled": True, "replay": REPLAYED, "ab_baseline": "/p"}, "so an A/B session does not apply"),
    ({"enabled": True, "replay": REPLAYED, "refresh": True}, "so --axion-refresh-baselines does not apply"),
    ({"enabled": True, "replay": REPLAYED, "threads": "4"}, r"so --axion-threads=4 \(it recorded 16\) does not"),
    ({"enabled": True, "replay": REPLAYED, "model": "m.gguf"}, "so --axion-model m.gguf does not apply"),
    ({"enabled": True, "replay": REPLAYED, "require_features": "avx2"}, "so --axion-require-features"),
    ({"enabled": True, "replay": REPLAYED, "reading_speed": "250wpm"}, "has no tokenizer"),
])
def test_a_replay_refuses_what_only_measuring_can_do(cli, message):
    with pytest.raises(SettingsError, match=message):
        resolve(cli=cli)


def test_a_replay_takes_values_that_restate_the_recording():
    settings = resolve(cli={"enabled": True, "replay": REPLAYED, "threads": "16", "prompt_sizing": "sweep"},
                       ini={"axion_model": "/models/SmolLM2-135M-Instruct.Q4_1.gguf"})
    assert settings.deployment.kind == "replay" and settings.deployment.run_threads() == 16


def test_every_option_is_plain_or_has_a_rule_of_its_own_and_plain_numbers_refuse_their_bounds():
    own_rules = {spec.name for spec in OPTIONS} - set(PLAIN)
    # a new option is resolved by its kind (PLAIN) unless it is added here with its own rule in resolve_settings
    assert own_rules == {"model", "predict_from", "threads", "reading_speed", "hardware", "require_features",
                         "tolerance", "ab_tolerance", "endpoint", "ab_endpoint", "serve", "prompt_sizing"}
    for spec in OPTIONS:
        rule = PLAIN.get(spec.name)
        if rule is None or spec.kind != "int":
            continue
        companion = {"serve": "2"} if spec.name == "serve_ctx" else {}   # it sizes the server --axion-serve starts
        assert getattr(resolve(cli={spec.name: str(rule.default), **companion}), spec.name).value == rule.default
        with pytest.raises(SettingsError, match=f"^{spec.flag} must be between {rule.low} and {rule.high}, got "):
            resolve(cli={spec.name: str(rule.high + 1), **companion})
    for spec in OPTIONS:
        rule = PLAIN.get(spec.name)
        if rule is not None and rule.choices:
            with pytest.raises(SettingsError, match=f"^{spec.flag} must be one of {', '.join(rule.choices)}"):
                resolve(cli={spec.name: "nonsense"})
