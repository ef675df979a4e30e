"""The ``pytest-axion`` command: argparse adapters over keyword-only functions that return exit codes."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tabulate import tabulate

from pytest_axion.comparison import DEFAULT_ESTIMATOR, DEFAULT_TOLERANCE, ESTIMATORS, parse_tolerance
from pytest_axion.errors import AxionError, BaselineError
from pytest_axion.store.baselines import Baseline, baseline_files, read_baseline, summarise_entries
from pytest_axion.store.compare import TABLE_HEADERS, any_regressed, compare_sides, load_side, table_rows, version_lines

DEFAULT_BASELINES = Path("baselines")


def _check_location(path: Path, baseline: Baseline) -> None:
    # The folder and file name select a baseline; a file moved by hand must not judge another machine.
    if path.parent.name != baseline.hardware_id or path.stem != baseline.model_label:
        raise BaselineError(
            f"baseline file {path} says hardware {baseline.hardware_id!r} and model {baseline.model_label!r} but "
            f"lies at {path.parent.name}/{path.name}: move it to {baseline.hardware_id}/{baseline.model_label}.json"
        )


def validate(*, root: Path, out: TextIO) -> int:
    """Schema-check every baseline file under ``root``; 1 if any is bad, else 0."""
    files = baseline_files(root)
    if not files:
        print(f"no baseline files under {root}", file=out)
        return 0
    bad = 0
    for path in files:
        try:
            baseline = read_baseline(path)
            _check_location(path, baseline)
        except AxionError as err:
            bad += 1
            print(f"FAIL {err}", file=out)
            continue
        capacities = f", {len(baseline.capacities)} capacity search(es)" if baseline.capacities else ""
        print(f"ok   {path} ({len(baseline.entries)} entries{capacities})", file=out)
    print(f"{len(files) - bad} valid, {bad} invalid", file=out)
    return 1 if bad else 0


def show(*, root: Path, out: TextIO) -> int:
    """What is stored, per hardware and model, with each entry's between-run spread."""
    files = baseline_files(root)
    if not files:
        print(f"no baseline files under {root}", file=out)
        return 0
    status = 0
    for path in files:
        try:
            baseline = read_baseline(path)
        except AxionError as err:
            print(f"FAIL {err}", file=out)
            status = 1
            continue
        p = baseline.provenance
        print(f"{baseline.hardware_id} / {baseline.model_label}: recorded {p['recorded_at']}, llama-cpp-python "
              f"{p['llama_cpp_python']}, commit {p['git_commit'] or 'unknown'} ({path})", file=out)
        rows = [[r["key"], f"{r['level']:.2f} {r['unit']}", r["runs"], r["samples"],
                 f"{r['between_run_cv'] * 100:.1f}%"] for r in summarise_entries(baseline)]
        print(tabulate(rows, headers=["entry", "level (median of run medians)", "runs", "samples",
                                      "between-run CV"], tablefmt="simple", disable_numparse=True), file=out)
        if baseline.capacities:
            searches = [[key, f"{entry.floor:g} {entry.by}", entry.runs_text(), entry.service_level]
                        for key, entry in sorted(baseline.capacities.items())]
            print(tabulate(searches, headers=["capacity search", "every run met", "runs (met/not met)",
                                              "service level"], tablefmt="simple", disable_numparse=True), file=out)
        print("", file=out)
    return status


def compare_files(*, old: Path, new: Path, tolerance: float, estimator: str, out: TextIO) -> int:
    """Per-measurement speedup table of NEW over OLD; 1 if anything regressed, 2 on bad input."""
    try:
        before, after = load_side(old), load_side(new)
    except AxionError as err:
        print(f"error: {err}", file=out)
        return 2
    rows, unmatched = compare_sides(before, after, tolerance=tolerance, estimator=estimator)
    for line in version_lines(before, after):
        print(line, file=out)
    print(f"speedup = new/old of the {estimator} per run (latency inverted: above 1 is faster); 95% interval from "
          f"within- and between-run spread; band = max(tolerance {tolerance:.0%}, 2x between-run spread)", file=out)
    print(tabulate(table_rows(rows), headers=TABLE_HEADERS, tablefmt="simple", disable_numparse=True), file=out)
    if unmatched:
        print(f"{len(unmatched)} measurement(s) in only one file, not compared", file=out)
    counts = {verdict: sum(r.verdict == verdict for r in rows) for verdict in ("ok", "improved", "regressed",
                                                                              "inconclusive")}
    print(", ".join(f"{n} {verdict}" for verdict, n in counts.items()), file=out)
    alone = sum(r.comparison.verdict == "regressed" and r.verdict != "regressed" for r in rows)
    if alone:
        print(f"{alone} row(s) slower beyond the band are significant alone but not among all {len(rows)} rows "
              "(Holm, 5% familywise), so inconclusive: with this many rows some stray that far by chance", file=out)
    if rows and not any(r.comparison.between_run_known for r in rows):
        print("one run on each side: how much whole runs differ is unknown and assumed 10%; record baselines from "
              "several runs (pytest-axion refresh) or gate with A/B for anything finer", file=out)
    if not rows:
        print("error: the two files share no measurement", file=out)
        return 2
    return 1 if any_regressed(rows) else 0


def refresh(*, runs: int | None, pytest_args: Sequence[str]) -> int:
    """The K-run refresh: ``pytest --axion-slo --axion-refresh-baselines --axion-runs K [args]``."""
    command = [sys.executable, "-m", "pytest", "--axion-slo", "--axion-refresh-baselines"]
    if runs is not None:
        command += ["--axion-runs", str(runs)]
    return subprocess.call([*command, *pytest_args])


def ab(*, baseline_python: str, rounds: int | None, tolerance: str | None, pytest_args: Sequence[str]) -> int:
    """The A/B upgrade gate: ``pytest --axion-slo --axion-ab-baseline PYTHON [args]``."""
    command = [sys.executable, "-m", "pytest", "--axion-slo", "--axion-ab-baseline", baseline_python]
    if rounds is not None:
        command += ["--axion-ab-rounds", str(rounds)]
    if tolerance is not None:
        command += ["--axion-ab-tolerance", tolerance]
    return subprocess.call([*command, *pytest_args])


def hardware(*, threads: int | None, python: str | None, as_json: bool, out: TextIO) -> int:
    """This machine's hardware id, the fingerprint behind it, llama.cpp's build flags and the environment
    warnings: what a CI engineer needs to name a runner type's baseline folder."""
    from pytest_axion.engines.worker import WorkerError, probe_build
    from pytest_axion.machine.cpu import usable_cores
    from pytest_axion.machine.environment import environment_warnings, other_processes_cpus
    from pytest_axion.machine.hardware import collect_hardware
    from pytest_axion.report.record import shown_flags

    cores = usable_cores()
    threads = threads or cores.default_threads
    interpreter = python or sys.executable
    try:
        build = probe_build(interpreter)
    except WorkerError as err:
        print(f"pytest-axion hardware: {err}", file=sys.stderr)
        return 2
    fingerprint = collect_hardware(system_info=build["system_info"],
                                   llama_cpp_python_version=build["llama_cpp_python_version"])
    warnings = environment_warnings(threads=threads, physical_cores=cores.physical, logical_cores=cores.logical,
                                    other_cpus=other_processes_cpus())
    if as_json:
        print(json.dumps({"hardware_id": fingerprint.hardware_id, "fingerprint": fingerprint.to_json(),
                          "threads": threads, "threads_source": cores.describe(),
                          "environment_warnings": warnings}, indent=2), file=out)
        return 0
    f = fingerprint
    isa = ", ".join(f.isa_features) or "none reported"
    rows = [("hardware id", f"{f.hardware_id} (scheme {f.hardware_id_scheme})"),
            ("cpu", f.cpu_description),
            ("in the id", f"{f.arch}, {f.cpu_vendor} family {f.cpu_family or '?'} model {f.cpu_model_number or '?'}, "
                          f"ISA features, {f.physical_cores} cores" if f.arch == "x86_64"
             else f"{f.arch}, {f.cpu_model}, ISA features, {f.physical_cores} cores"),
            ("isa features", isa),
            ("cores", f"{f.logical_cores} logical / {f.physical_cores} physical; default threads {threads} "
                      f"({cores.describe()})"),
            ("not in the id", f"stepping {f.cpu_stepping or '?'}, microcode {f.microcode or '?'}, "
                              f"caches {f.caches or '?'}, machine {f.dmi or 'not named by the platform'}"),
            ("memory", f"{f.memory_bytes / 2**30:.1f} GiB"),
            ("llama.cpp", f"llama-cpp-python {f.llama_cpp_python}: {shown_flags(f.llama_cpp_system_info)}"),
            ("python", f.python + (f" ({python})" if python else "")),
            ("baseline folder", f"baselines/{f.hardware_id}/")]
    print(tabulate(rows, tablefmt="plain"), file=out)
    for warning in warnings:
        print(f"warning: {warning}", file=out)
    return 0


def proxy(*, name: str | None, like: Path | None, layers: int | None, quantization: str | None,
          out_path: Path | None, out: TextIO) -> int:
    """Write (or find in the cache) a proxy model and print where it is and what it stands for."""
    from importlib import metadata

    from pytest_axion.proxy import (
        ensure_proxy,
        known_spec,
        parse_proxy_spec,
        read_proxy_info,
        spec_from_gguf,
        write_proxy,
    )
    from pytest_axion.proxy.spec import check_layers

    try:
        if (name is None) == (like is None):
            raise AxionError("pytest-axion proxy: name a known model (e.g. llama-3.3-70b) or give --like FILE.gguf")
        if like is not None:
            spec = spec_from_gguf(like)
        else:
            assert name is not None
            spec_name, spec_layers = parse_proxy_spec(name if name.startswith("proxy:") else f"proxy:{name}")
            spec, layers = known_spec(spec_name), layers if layers is not None else spec_layers
            if quantization is None:
                from pytest_axion.settings import DEFAULT_PROXY_QUANTIZATION

                quantization = DEFAULT_PROXY_QUANTIZATION
        if layers is not None:
            check_layers(spec, layers)
        if out_path is not None:
            from pytest_axion.machine.limits import last_level_cache_bytes
            from pytest_axion.proxy import default_layers

            chosen = layers if layers is not None else default_layers(
                spec, quantization, last_level_cache_bytes=last_level_cache_bytes())
            info = write_proxy(spec, layers=chosen, quantization=quantization, path=out_path)
        else:
            try:
                version = metadata.version("llama-cpp-python")
            except metadata.PackageNotFoundError:
                version = "unknown"
            info = ensure_proxy(spec, quantization=quantization, llama_cpp_version=version, layers=layers)
    except AxionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    described = read_proxy_info(info.path) or info
    print(f"{described.path}\n{described.label}, {described.size_bytes / 2**20:.0f} MiB; measure it with "
          f"--axion-model {described.path}", file=out)
    return 0


def predict(*, reports: Sequence[Path], layers: int | None, out: TextIO) -> int:
    """Predict the full model's figures from the reports of one suite run on proxies of two or more layer counts."""
    from pytest_axion.proxy.predict import predict_reports, rows_of
    from pytest_axion.store.compare import read_report

    try:
        if layers is not None and layers < 1:
            raise AxionError(f"--layers must be a positive layer count, got {layers}")
        proxy, predicted = predict_reports([(str(path), read_report(path)) for path in reports], full_layers=layers)
    except AxionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not any(row.prediction is not None for row in predicted):
        reasons = sorted({row.reason or "" for row in predicted}) or ["the reports have no results"]
        print(f"error: no row could be predicted: {'; '.join(reasons)}", file=sys.stderr)
        return 1
    counts = sorted({n for row in predicted for n in row.measured})
    target = layers or proxy["full_layers"]
    print(f"predicted for {proxy['of']} at {target} layers from proxies of {', '.join(map(str, counts))} layers: "
          "time per unit of work = fixed + layers x per-layer, fitted per row; 95% bootstrap interval. "
          "A prediction, not a measurement: promises judge what was measured.", file=out)
    headers = ["test", "metric", "workload", "proxies (median)", "predicted", "interval, error"]
    print(tabulate(rows_of(predicted), headers=headers, tablefmt="simple"), file=out)
    return 0


def _tolerance(text: str) -> float:
    try:
        return parse_tolerance(text, source="--tolerance")
    except AxionError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytest-axion",
                                     description="Manage and compare pytest-axion baselines; run A/B upgrade gates.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("validate", "schema-check every baseline file; exit 1 if any is bad"),
                            ("show", "list stored baselines with their between-run spread")):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("root", nargs="?", type=Path, default=DEFAULT_BASELINES,
                         help=f"baselines folder (default: {DEFAULT_BASELINES})")
    text = "compare two reports or baseline files; exit 1 if anything regressed"
    sub = commands.add_parser("compare", help=text, description=text)
    sub.add_argument("old", type=Path, help="the reference: a --axion-report file or a baseline file")
    sub.add_argument("new", type=Path, help="the candidate: a --axion-report file or a baseline file")
    sub.add_argument("--tolerance", type=_tolerance, default=DEFAULT_TOLERANCE,
                     help="smallest slowdown that counts, e.g. 0.1 or 10%% (default 0.1)")
    sub.add_argument("--estimator", choices=sorted(ESTIMATORS), default=DEFAULT_ESTIMATOR,
                     help="statistic of each run (default median)")
    text = "record baselines from K separate runs: pytest --axion-slo --axion-refresh-baselines [pytest args]"
    sub = commands.add_parser("refresh", help=text, description=text)
    sub.add_argument("--runs", type=int, default=None, help="separate runs to record (default 3)")
    sub.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed to pytest (tests, -k, --axion-*)")
    text = ("A/B upgrade gate: measure every workload with the baseline interpreter's llama-cpp-python (A) and "
            "the current one (B) in alternating rounds; exit 1 if B regressed")
    sub = commands.add_parser("ab", help=text, description=text)
    sub.add_argument("--baseline-python", required=True, metavar="PYTHON",
                     help="python of the environment with the old llama-cpp-python (e.g. .venv-old/bin/python)")
    sub.add_argument("--rounds", type=int, default=None, help="ABBA rounds per measurement (default 10)")
    sub.add_argument("--tolerance", default=None, help="smallest B/A slowdown that counts (default 5%%)")
    sub.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed to pytest (tests, -k, --axion-*)")
    text = ("write a proxy model: a known model's exact tensor shapes, types and tokenizer size with a few "
            "layers and random weights (cached; --out writes it elsewhere)")
    sub = commands.add_parser("proxy", help=text, description=text)
    sub.add_argument("name", nargs="?", default=None,
                     help="llama-3.3-70b, llama-3.1-8b, qwen2.5-7b, mistral-7b or smollm2-135m (NAME or NAME:LAYERS)")
    sub.add_argument("--like", type=Path, default=None, metavar="FILE.gguf",
                     help="copy the shapes and tensor types of this GGUF (its header is enough) instead")
    sub.add_argument("--layers", type=int, default=None,
                     help="transformer layers (default: the fewest that keep the full model's memory regime, >= 2)")
    sub.add_argument("--quant", default=None, metavar="TYPE",
                     help="Q4_0 (default for a known model), Q4_K_M, Q8_0, F16 ... (--like copies the file's types)")
    sub.add_argument("--out", type=Path, default=None, metavar="PATH", help="write here instead of the cache")
    text = ("predict the full model's figures from --axion-report files of one suite run on proxies of two or "
            "more layer counts (e.g. proxy:llama-3.3-70b:2 and :4)")
    sub = commands.add_parser("predict", help=text, description=text)
    sub.add_argument("reports", nargs="+", type=Path, metavar="REPORT.json", help="reports of the proxy runs")
    sub.add_argument("--layers", type=int, default=None,
                     help="layers of the model predicted (default: the full model's, as the proxies record it)")
    text = ("this machine's hardware id, the fingerprint behind it, llama.cpp's build flags and the environment "
            "warnings (name a runner type's baseline folder with it)")
    sub = commands.add_parser("hardware", help=text, description=text)
    sub.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub.add_argument("--threads", type=int, default=None,
                     help="llama.cpp threads the warnings are read for (default: one per physical core)")
    sub.add_argument("--python", default=None, metavar="PYTHON",
                     help="the interpreter whose llama-cpp-python build to report (default: this one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "compare":
        return compare_files(old=args.old, new=args.new, tolerance=args.tolerance, estimator=args.estimator,
                             out=sys.stdout)
    if args.command == "refresh":
        return refresh(runs=args.runs, pytest_args=[a for a in args.pytest_args if a != "--"])
    if args.command == "hardware":
        return hardware(threads=args.threads, python=args.python, as_json=args.json, out=sys.stdout)
    if args.command == "proxy":
        return proxy(name=args.name, like=args.like, layers=args.layers, quantization=args.quant,
                     out_path=args.out, out=sys.stdout)
    if args.command == "predict":
        return predict(reports=args.reports, layers=args.layers, out=sys.stdout)
    if args.command == "ab":
        return ab(baseline_python=args.baseline_python, rounds=args.rounds, tolerance=args.tolerance,
                  pytest_args=[a for a in args.pytest_args if a != "--"])
    command = {"validate": validate, "show": show}[args.command]
    return command(root=args.root, out=sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
