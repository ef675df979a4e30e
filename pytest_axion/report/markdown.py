"""The run as a Markdown page for CI (``--axion-markdown``, and GitHub's job summary): verdicts first, what
failed or stayed inconclusive on top, then capacity, the shape curves and links to the figures.

A release pipeline's reader wants the answer, not the 100-row measurement table: that stays in the
terminal log and the JSON report. Pure: no pytest.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pytest_axion.errors import AxionError
from pytest_axion.figures import figure
from pytest_axion.promises.verdict import FAIL, INCONCLUSIVE, INFO, PASS, Reading, Verdict
from pytest_axion.records import threads_text
from pytest_axion.report.record import RunRecord, shown_flags
from pytest_axion.report.terminal import baseline_lines, capacity_lines, sizing_lines

_ORDER = {FAIL: 0, INCONCLUSIVE: 1, PASS: 2, INFO: 3}
_SHOWN = {FAIL: "**FAIL**", INCONCLUSIVE: "**inconclusive**", PASS: "pass", INFO: "info"}
PASSES_OPEN = 15   # more passing verdicts than this fold away behind <details>


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _test(nodeid: str) -> str:
    return nodeid.rsplit("/", 1)[-1]


def _telling(v: Verdict) -> Reading:
    """A miss is told by its first reading, a pass by its last (what held)."""
    return v.first if v.outcome in (FAIL, INCONCLUSIVE) else v.readings[-1]


def _why(v: Verdict) -> str:
    return _cell(_telling(v).message) + (f"; {_cell(v.reason)}" if v.reason else "")


def _verdict_rows(verdicts: Sequence[Verdict]) -> list[str]:
    return [f"| {_SHOWN[v.outcome]} | `{_cell(_test(v.nodeid))}` | {_cell(v.label)} | "
            f"{_cell(', '.join(r.figure for r in v.readings))} | {_why(v)} |" for v in verdicts]


def _table(rows: list[str]) -> list[str]:
    return ["| verdict | test | promise | observed (each attempt) | why |", "|---|---|---|---|---|", *rows]


def _curves(verdicts: Sequence[Verdict]) -> list[str]:
    lines = []
    for v in verdicts:
        detail = _telling(v).detail
        curve = detail.get("curve")
        if v.kind not in ("steady", "scaling") or not curve:
            continue
        knee = detail.get("levels_off_at_tokens")
        cells = ", ".join(f"{c['cell']}: {figure(c['median'])}" for c in curve)
        lines.append(f"- `{_cell(_test(v.nodeid))}` {v.kind} {_cell(v.label)}: {_SHOWN[v.outcome]} "
                     f"({', '.join(r.figure for r in v.readings)}); median per cell {cells}"
                     + (f"; prompt speed levels off at {knee} tokens per batch" if knee is not None else ""))
    return lines


def _no_baseline(v: Verdict) -> bool:
    return v.kind == "baseline" and v.first.detail.get("word") == "no-baseline"


def _prediction(run: RunRecord) -> list[str]:
    """The full model's predicted figures (--axion-predict-from), labelled as a prediction."""
    prediction = run.prediction
    if prediction is None:
        return []
    if prediction.problem is not None:
        return ["### Prediction", "", f"None made: {_cell(prediction.problem)}", ""]
    from pytest_axion.proxy.predict import rows_of

    head = (f"Predicted for `{prediction.of}` ({prediction.layers} layers) from proxies of "
            f"{', '.join(map(str, prediction.from_layers))} layers: a prediction, not a measurement.")
    rows = ["| " + " | ".join(_cell(str(c)) for c in row) + " |" for row in rows_of(prediction.rows)]
    return ["### Prediction", "", head, "", "| test | metric | workload | proxies (median) | predicted | interval |",
            "|---|---|---|---|---|---|", *rows, ""]


def markdown_summary(run: RunRecord, *, figures: Sequence[Path] = (), relative_to: Path | None = None) -> str:
    """The page; figure links are relative to ``relative_to`` (the summary's folder) when given. Measurements
    without a stored baseline are counted in one line, not listed: the note above the table says why."""
    unjudged = [v for v in run.verdicts if _no_baseline(v)]
    verdicts = sorted((v for v in run.verdicts if not _no_baseline(v)), key=lambda v: _ORDER.get(v.outcome, 9))
    counts = Counter(v.outcome for v in verdicts)
    tally = ", ".join(f"{counts[o]} {o}" for o in (FAIL, INCONCLUSIVE, PASS, INFO) if counts[o]) or "no verdicts"
    if unjudged:
        tally += f"; {len(unjudged)} measurement(s) without a stored baseline"
    hardware = run.hardware
    mode = (f"A/B: B {run.ab.current.name} against A {run.ab.baseline.name}" if run.ab is not None
            else f"served: {run.served}" if run.served
            else f"replay of `{run.replay_of}`, nothing measured" if run.replay_of else "in process")
    lines = [f"## pytest-axion: {tally}", "",
             f"Model `{run.model.label}` on `{hardware.hardware_id}` ({hardware.cpu_description}), "
             f"{threads_text(run.threads)}, "
             + (f"llama-cpp-python {hardware.llama_cpp_python} ({shown_flags(hardware.llama_cpp_system_info)})"
                if not run.served else "served") + f"; {mode}.", ""]
    lines += [f"> {_cell(line)}" for line in (*([f"model: {run.model.stands_for}"] if run.model.stands_for else []),
                                               *sizing_lines(run.prompt_sizing), *baseline_lines(run.baseline),
                                               *(f"environment: {w}" for w in run.environment))]
    if lines[-1] != "":
        lines.append("")
    open_rows = [v for v in verdicts if v.outcome in (FAIL, INCONCLUSIVE)]
    passed = [v for v in verdicts if v.outcome not in (FAIL, INCONCLUSIVE)]
    lines += ["### Verdicts", ""]
    if not verdicts:
        lines += ["No promise was judged.", ""]
    elif len(passed) > PASSES_OPEN:
        lines += [*(_table(_verdict_rows(open_rows)) if open_rows else ["Nothing failed or stayed inconclusive."]),
                  "", f"<details><summary>{len(passed)} passed or shown only"
                  "</summary>", "", *_table(_verdict_rows(passed)), "", "</details>", ""]
    else:
        lines += [*_table(_verdict_rows([*open_rows, *passed])), ""]
    capacity = capacity_lines(run)
    if capacity:
        lines += ["### Capacity", "", *(f"- {_cell(line)}" for line in capacity), ""]
    lines += _prediction(run)
    curves = _curves(verdicts)
    if curves:
        lines += ["### Shape curves", "", *curves, ""]
    images = [f for f in figures if f.suffix == ".png"]
    if images:
        lines += ["### Figures", ""]
        for image in images:
            target = Path(os.path.relpath(image, relative_to)) if relative_to is not None else image
            lines.append(f"- [{image.stem}]({target.as_posix()})")
        lines.append("")
    return "\n".join(lines)


def write_markdown(path: Path, text: str, *, append_to: str | None = None) -> None:
    """Write the page; also append it to ``append_to`` (GitHub's ``$GITHUB_STEP_SUMMARY``) when given."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    except OSError as err:
        raise AxionError(f"cannot write the Markdown summary {path} ({err.strerror}): check --axion-markdown") from None
    if append_to:
        try:
            with open(append_to, "a", encoding="utf-8") as summary:
                summary.write(text + "\n")
        except OSError as err:
            raise AxionError(f"cannot append the Markdown summary to $GITHUB_STEP_SUMMARY {append_to} "
                             f"({err.strerror})") from None
