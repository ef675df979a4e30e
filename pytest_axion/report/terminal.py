"""The run for people: the header, the measurement table, the promise and A/B tables, capacity and refresh lines.

Every table reads the one verdict record (:class:`pytest_axion.promises.verdict.Verdict`): a promise on one
measurement (a threshold, the stored baseline, the A/B gate) appears on that measurement's row; a promise
over several cells (steadiness, scaling, and any kind that comes next) gets a row of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from tabulate import tabulate

from pytest_axion.figures import figure
from pytest_axion.promises.efficiency import GEN_BANDWIDTH
from pytest_axion.promises.verdict import Verdict
from pytest_axion.records import CapacitySearch, Measurement, WarmUpRun
from pytest_axion.report.record import BaselineStatus, RunRecord, shown_flags, shown_path
from pytest_axion.store.gate import no_baseline_message
from pytest_axion.store.refresh import DIFF_HEADERS, RefreshResult
from pytest_axion.store.sizing_cache import Sizing

PER_MEASUREMENT_KINDS = ("threshold", "baseline", "ab")   # one row each: the measurement's own


def header_lines(run: RunRecord) -> list[str]:
    """What was measured, on what, with what: the lines above the table."""
    model, hardware = run.model, run.hardware
    flags = hardware.llama_cpp_system_info
    shown = shown_flags(flags)
    served_elsewhere = run.served_elsewhere   # an endpoint reports neither the file nor the build
    if served_elsewhere:
        model_line = (f"model: {model.file_name} (served elsewhere: size and parameters not reported; "
                      f"id {model.sha256[:12]})")
    else:
        model_line = (f"model: {model.file_name} ({model.architecture}, {model.quantization}, "
                      f"{model.n_params / 1e6:.0f}M params, {model.size_bytes / 2**20:.0f} MiB, sha256 "
                      f"{model.sha256[:12]})" + ("" if run.replay_of else f" loaded in {run.load_seconds:.2f} s"))
        if model.stands_for:
            model_line += f"; {model.stands_for}: the full model's kernels and shapes per layer, not its speed"
    if run.replay_of:
        engine_lines = [f"replay of {run.replay_of}: its samples judged again, nothing measured in this run; "
                        f"recorded with llama-cpp-python {hardware.llama_cpp_python}, threads {run.threads}"]
    elif run.served:
        engine_lines = [] if served_elsewhere else [f"llama-server started here, threads {run.threads}"]
    else:
        engine_lines = [f"llama-cpp-python {hardware.llama_cpp_python}, threads {run.threads}, llama.cpp: {shown}"]
    return [
        model_line,
        f"hardware: {hardware.hardware_id} ({hardware.hardware_id_source}): {hardware.cpu_description}, "
        f"{hardware.logical_cores} logical / {hardware.physical_cores} physical cores",
        *engine_lines,
        *([f"served: {run.served}; users stream closed-loop, TTFT from when each request was due"]
          if run.served else []),
        f"statistic: median of {run.ab.rounds if run.ab else run.repetitions} repetitions (IQR, CV); "
        f"{run.reading.label}",
        *warm_up_lines(run.warm_up),
        *sizing_lines(run.prompt_sizing),
        *baseline_lines(run.baseline),
        *(run.ab.header_lines() if run.ab else []),
        *(f"environment: {warning}" for warning in run.environment),
    ]


def sizing_lines(sizing: Sizing | None) -> list[str]:
    """The tokens per call of prompt workloads (axion.fill_tokens), how they were found, and the sweep."""
    if sizing is None:
        return []
    swept = ", ".join(f"{tokens}: {speed:.0f}" for tokens, speed in sizing.points)
    return [f"prompt sizing: {sizing.fill_tokens} tokens per call ({sizing.source})"
            + (f"; prompt t/s by tokens per call {swept}" if swept else "")]


def warm_up_lines(warm_up: WarmUpRun | None) -> list[str]:
    """How long the session warmed up before its first measurement, and whether the speed stopped rising."""
    if warm_up is None or not warm_up.seconds:
        return []
    first, last = (warm_up.n_prompt / s for s in (warm_up.seconds[0], warm_up.seconds[-1]))
    how = ("until the speed stopped rising" if warm_up.settled
           else "and the speed was still changing at its deadline (a busy machine?)")
    return [f"warm-up: {len(warm_up.seconds)} prompt(s) of {warm_up.n_prompt} tokens in {sum(warm_up.seconds):.1f} s "
            f"{how} (first {figure(first)} t/s, last {figure(last)} t/s)"]


def baseline_lines(status: BaselineStatus | None) -> list[str]:
    if status is None:
        return []
    rule = (f"estimator {status.estimator} per run, tolerance {status.tolerance:.0%} (or 2x the baseline's "
            f"between-run spread), {status.confirm} confirming attempt(s) before a regression fails")
    if not status.found:
        return [f"baseline: {no_baseline_message(shown_path(status.path))}"]
    lines = [f"baseline: {shown_path(status.path)} ({status.runs} run(s) per entry, recorded {status.recorded_at} "
             f"with llama-cpp-python {status.llama_cpp_python}, git {(status.git_commit or 'none')[:12]}); {rule}"]
    if status.differences:
        lines.append(f"baseline differs from this run: {'; '.join(status.differences)}")
    return lines


def _short(nodeid: str) -> str:
    path, _, name = nodeid.partition("::")
    return f"{os.path.basename(path)}::{name}" if name else nodeid


def _on(verdicts: Iterable[Verdict], kind: str) -> dict[str, Verdict]:
    """The verdicts of one per-measurement kind, by the measurement key they rest on."""
    return {v.involved[0]: v for v in verdicts if v.kind == kind and len(v.involved) == 1}


def _slo_cells(verdict: Verdict | None) -> list[str]:
    if verdict is None:
        return ["", ""]
    return [str(verdict.first.detail.get("promise", "")), verdict.outcome]


def _baseline_cells(verdict: Verdict | None) -> list[str]:
    if verdict is None:
        return ["", "", "", ""]
    d = verdict.first.detail
    if "speedup" not in d:
        return ["-", "-", "0", d.get("word", verdict.outcome)]
    low, high = d["interval"]
    return [figure(d["baseline_level"]), f"{d['speedup']:.2f}x [{low:.2f}-{high:.2f}]", str(len(verdict.readings)),
            verdict.outcome if verdict.outcome != "pass" else d.get("word", "ok")]


def measurement_table(measurements: Iterable[Measurement], verdicts: Sequence[Verdict] = ()) -> str:
    """One row per measurement: workload, median with dispersion, its SLO and its baseline verdict.

    ``speedup`` is the current run's estimator over the baseline's (above 1 is faster, latency included),
    with its 95% interval; ``tries`` counts the attempts, confirmations included.
    """
    slos, baselines = _on(verdicts, "threshold"), _on(verdicts, "baseline")
    rows = []
    for m in measurements:
        s = m.summary
        row = [_short(m.nodeid), m.metric, m.batch_size, m.n_prompt, m.n_gen,
               f"{figure(s.median)} {m.unit}", figure(s.iqr), f"{s.cv * 100:.1f}%", s.n, *_slo_cells(slos.get(m.key))]
        if baselines:
            row += _baseline_cells(baselines.get(m.key))
        rows.append(row)
    headers = ["test", "metric", "batch", "prompt", "gen", "median", "IQR", "CV", "n", "SLO", "verdict"]
    if baselines:
        headers += ["baseline", "speedup [95% CI]", "tries", "vs baseline"]
    table: str = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    return table


def prediction_lines(run: RunRecord) -> list[str]:
    """The full model's figures predicted from proxies (--axion-predict-from), labelled as a prediction."""
    prediction = run.prediction
    if prediction is None:
        return []
    if prediction.problem is not None:
        return [f"prediction: none made: {prediction.problem}"]
    from pytest_axion.proxy.predict import rows_of

    head = (f"prediction for {prediction.of} ({prediction.layers} layers) from proxies of "
            f"{', '.join(map(str, prediction.from_layers))} layers: time per unit of work = fixed + layers x "
            "per-layer; 95% bootstrap interval. A prediction, not a measurement: promises judge what was measured.")
    headers = ["test", "metric", "workload", "proxies (median)", "predicted", "interval, error"]
    return [head, tabulate(rows_of(prediction.rows), headers=headers, tablefmt="simple")]


def efficiency_lines(run: RunRecord) -> list[str]:
    """The machine's limits, the model's costs, and one row per measured cell: how much of the roof it used."""
    roofs = run.roofs
    if roofs is None:
        return [f"efficiency: not measured: {run.roofs_source}"] if run.roofs_source else []
    rows = []
    for f in run.efficiency:
        what = "generation bandwidth" if f.kind == GEN_BANDWIDTH else "prompt compute"
        rows.append([_short(f.nodeid), f.cell, what, f"{figure(f.achieved)} {f.unit}", f"{figure(f.roof)} {f.unit}",
                     f"{f.fraction:.0%}", f"{f.intensity:.1f}"])
    if not rows:
        return []
    table = tabulate(rows, headers=["test", "cell", "efficiency", "achieved", "machine limit", "of limit",
                                    "FLOP/byte"], tablefmt="simple", disable_numparse=True)
    return [f"{roofs.limits.summary()}; {run.roofs_source}", f"model costs: {roofs.costs.describe()}",
            *roofs.limits.notes, "", table]


def promise_table(verdicts: Sequence[Verdict]) -> str:
    """Promises over several cells, one row each: every attempt's figure, the outcome, and the cells.

    For prompt speed, "levels off" is the fewest tokens per batch (prompt x users) that reached 90% of
    the fastest cell: below it the machine's threads were not all busy.
    """
    rows = []
    for v in verdicts:
        if v.kind in PER_MEASUREMENT_KINDS and len(v.involved) == 1:
            continue
        d = v.first.detail
        knee = f"{d['levels_off_at_tokens']} tokens" if d.get("levels_off_at_tokens") is not None else ""
        curve = ", ".join(f"{c['cell']}: {figure(c['median'])}" for c in d.get("curve", []))
        rows.append([_short(v.nodeid), v.kind, v.label, _promise_text(v), ", ".join(r.figure for r in v.readings),
                     v.outcome, knee, curve])
    if not rows:
        return ""
    table: str = tabulate(rows, headers=["test", "promise", "cells", "limit", "observed (each attempt)", "verdict",
                                         "levels off at", "median t/s per cell"], tablefmt="simple",
                          disable_numparse=True)
    return table


def _promise_text(v: Verdict) -> str:
    threshold = v.first.detail.get("threshold")
    if threshold is None:
        return ""
    return f"within {threshold:.0%}" if v.kind == "steady" else f">= {threshold:g}x" if v.kind == "scaling" else str(
        threshold)


def ab_table(verdicts: Sequence[Verdict]) -> str:
    """One row per measurement: both sides' medians, the paired ratio and its interval, the verdict."""
    rows = []
    for v in verdicts:
        if v.kind != "ab":
            continue
        d = v.first.detail
        lo, hi = d["interval"]
        rows.append([_short(d["nodeid"]), d["metric"], d["workload"], figure(d["baseline_median"]),
                     figure(d["current_median"]), d["unit"], f"{d['ratio']:.3f}x",
                     f"[{lo:.3f}-{hi:.3f}]" + ("" if d["exact_interval"] else "*"), len(d["ratios"]),
                     ", ".join(r.figure for r in v.readings), v.outcome])
    if not rows:
        return ""
    table: str = tabulate(rows, headers=["test", "metric", "workload", "A median", "B median", "unit", "B/A",
                                         "95% CI", "pairs", "attempts", "verdict"], tablefmt="simple",
                          disable_numparse=True)
    return table


def capacity_lines(run: RunRecord) -> list[str]:
    """Per test with a per-user promise or a capacity search: how many concurrent users it serves, as a bracket
    where a search found the end, with the promise (or the budget, or the limit) that ended it; then every
    open-loop run (``axion.rate``) with its verdict."""
    lines = []
    for nodeid, most in {**run.capacities, **dict.fromkeys(run.capacity_searches)}.items():
        search = run.capacity_searches.get(nodeid)
        if search is not None:
            lines.append(search_line(_short(nodeid), search))
            continue
        if most is None:
            continue
        per_user = [v.first.detail for v in run.verdicts if v.nodeid == nodeid and v.kind == "threshold"
                    and v.first.detail.get("metric") == "per_user_tps"]
        label = per_user[0]["threshold_label"] or f"{figure(per_user[0]['threshold'])} t/s"
        measured = sorted({d["batch_size"] for d in per_user})
        # Every measured size passed: the true capacity lies beyond what was measured.
        bound = "at least " if most == measured[-1] else ""
        lines.append(f"capacity {_short(nodeid)}: {bound}{most} concurrent user(s) at {label} "
                     f"(measured batch sizes {', '.join(map(str, measured))})")
    for nodeid, levels in run.rate_levels.items():
        lines += [f"rate {_short(nodeid)}: {level.describe()}" for level in levels]
    return lines


def search_line(name: str, search: CapacitySearch) -> str:
    """``capacity t.py::test: 8 concurrent user(s) with 90% of requests at per-user speed >= ..., TTFT <= 2 s;
    12 did not: TTFT p90 2.9 s > 2 s; goodput ... (levels measured: 1, 2, 4, 8, 16, 12)``."""
    return f"capacity {name}: {search_text(search)}"


def search_text(search: CapacitySearch) -> str:
    """A capacity search in words: the bracket, what ended it, the goodput at the most users met, the levels."""
    by_rate = search.by == "rate"

    def load(value: float) -> str:
        return figure(value) if by_rate else f"{value:.0f}"

    most, high = search.most_passing, search.fewest_failing
    levels = ", ".join(load(level.load) + ("?" if level.status == "inconclusive" else "") for level in search.levels)
    bound = "at least " if high is None else ""
    share = "every request" if search.attainment >= 1 else f"{search.attainment:.0%} of requests"
    unit = "requests/s (open loop)" if by_rate else "concurrent user(s)"
    text = f"{bound}{load(most)} {unit} with {share} at {search.service_level}"
    ending = search.ending_level
    if ending is not None and ending.status == "missed":
        text += f"; {load(ending.load)} did not: {ending.worst}"
    elif ending is not None:
        text += (f"; {load(ending.load)} inconclusive ({ending.evidence} met every promise, "
                 f"95% interval {ending.low:.0%}-{ending.high:.0%})")
    if search.ended not in ("promise", "inconclusive"):
        text += f"; stopped by {search.stopped}"
    best = search.best_level
    if best is not None and best.goodput_rps is not None:
        text += (f"; goodput at {best.load_text} {best.goodput_rps:.2f} requests/s "
                 f"({best.goodput_tps:.0f} tokens/s)")
    return text + f" (levels measured: {levels})"


def refresh_lines(result: RefreshResult | None) -> list[str]:
    """The refresh's old -> new table, what it left out, and whether it wrote."""
    if result is None:
        return []
    lines = ["", f"baseline refresh: {result.runs} run(s) -> {shown_path(result.path)}",
             tabulate(result.rows, headers=DIFF_HEADERS, tablefmt="simple", disable_numparse=True)]
    lines += [f"not recorded: {text}" for text in result.skipped]
    lines += [f"dropped: {text}" for text in result.dropped]
    if result.noisy and not result.written:
        lines.append(f"REFUSED (--axion-strict): {len(result.noisy)} entr(ies) too noisy to be a tight reference, "
                     f"worst: {result.noisy[0]}; nothing was written: refresh again when the machine is quiet, or "
                     "without --axion-strict to record them with the wide band their spread gives them")
    elif result.noisy:
        lines.append(f"noisy: {len(result.noisy)} entr(ies) recorded with a wide band from their own spread "
                     "(regressions smaller than the band cannot be seen there; refresh on a quiet machine to "
                     "tighten it):")
        lines += [f"  {text}" for text in result.noisy[:10]]
        if len(result.noisy) > 10:
            lines.append(f"  ... and {len(result.noisy) - 10} more")
    if result.written:
        lines.append(f"written: {shown_path(result.path)} ({len(result.rows)} entries recorded)")
    return lines

