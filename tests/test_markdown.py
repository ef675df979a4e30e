"""The Markdown summary for CI: verdicts first, failures and inconclusive ones on top."""

import dataclasses

from pytest_axion.promises.verdict import INCONCLUSIVE, Reading, Verdict
from pytest_axion.report.markdown import PASSES_OPEN, markdown_summary, write_markdown
from tests.test_report import run_record, scaling_run


def mixed_run():
    cells, scaling = scaling_run()
    record = run_record()   # per-user speed: batch 1 and 2 pass, batch 4 fails
    unsure = Verdict(nodeid="t.py::test_prompt", kind="baseline", name="prompt_tps.pp256", label="prompt_tps pp256",
                     outcome=INCONCLUSIVE, reason="every attempt was measured while other processes used 1.0 CPU(s)",
                     readings=(Reading(status="unsure", figure="0.81x", message="prompt_tps pp256: regressed | "
                                                                                "0.81x"),))
    return dataclasses.replace(record, measurements=[*record.measurements, *cells],
                               verdicts=[scaling, *record.verdicts, unsure])


def verdict_rows(text):
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| verdict")]


def test_failures_then_inconclusive_then_passes_with_capacity_and_curves(tmp_path):
    figures = [tmp_path / "figs" / "fig3-per-user-generation.png", tmp_path / "figs" / "fig3-per-user-generation.svg"]
    text = markdown_summary(mixed_run(), figures=figures, relative_to=tmp_path / "out")
    assert text.startswith("## pytest-axion: 1 fail, 1 inconclusive, 3 pass\n")
    rows = verdict_rows(text)
    assert [row.split(" | ")[0] for row in rows] == ["| **FAIL**", "| **inconclusive**", "| pass", "| pass", "| pass"]
    assert "per_user_tps at batch 4" in rows[0] and "< 5.00 t/s" in rows[0]
    assert "regressed \\| 0.81x" in rows[1] and "other processes used 1.0 CPU(s)" in rows[1]   # pipes escaped
    assert "### Capacity\n\n- capacity t.py::test_users: 2 concurrent user(s) at reading speed 5 t/s" in text
    assert "1.30x, 1.75x | gen_tps scales: 1.75x >= 1.5x from batch 1 to 4" in rows[2]   # a pass: what held
    assert ("- `t.py::test_batch` scaling gen_tps pp8+tg16: pass (1.30x, 1.75x); median per cell batch 1: 40.0, "
            "batch 2: 60.0, batch 4: 70.0") in text
    assert "- [fig3-per-user-generation](../figs/fig3-per-user-generation.png)" in text and ".svg" not in text
    assert text.index("### Verdicts") < text.index("### Capacity") < text.index("### Shape curves")


def test_many_passes_fold_away_but_failures_stay_open():
    record = mixed_run()
    passing = [v for v in record.verdicts if v.outcome == "pass"]
    many = dataclasses.replace(record, verdicts=[*record.verdicts, *passing * PASSES_OPEN])
    text = markdown_summary(many)
    opened, folded = text.split("<details>", 1)
    assert "**FAIL**" in opened and "**inconclusive**" in opened and "| pass |" not in opened
    assert f"{3 + 3 * PASSES_OPEN} passed or shown only" in folded and "</details>" in folded


def test_many_passes_and_nothing_else_say_so_instead_of_an_empty_table():
    record = mixed_run()
    passing = [v for v in record.verdicts if v.outcome == "pass"]
    text = markdown_summary(dataclasses.replace(record, verdicts=passing * (PASSES_OPEN + 1)))
    opened, folded = text.split("<details>", 1)
    assert "Nothing failed or stayed inconclusive." in opened and "| verdict |" not in opened
    assert folded.count("| pass |") == 3 * (PASSES_OPEN + 1)


def test_written_to_its_path_and_appended_to_the_github_step_summary(tmp_path):
    step_summary = tmp_path / "step_summary.md"
    step_summary.write_text("earlier step\n")
    write_markdown(tmp_path / "a" / "s.md", "## hello", append_to=str(step_summary))
    write_markdown(tmp_path / "b.md", "## again", append_to=None)
    assert (tmp_path / "a" / "s.md").read_text() == "## hello\n" and (tmp_path / "b.md").read_text() == "## again\n"
    assert step_summary.read_text() == "earlier step\n## hello\n"


def test_a_real_run_writes_the_summary_with_its_failure_on_top_and_the_header_names_the_run(pytester, monkeypatch):
    pytester.makepyfile("""
        import pytest

        @pytest.mark.axion_slo(gen_tps=1)
        def test_generation(axion):
            axion.generate(8)

        @pytest.mark.axion_slo(prompt_tps=1e9)
        def test_prompt_beyond_any_machine(axion):
            axion.prompt(16)
    """)
    step_summary = pytester.path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    result = pytester.runpytest("--axion-slo", "--axion-repetitions=2", "--axion-confirm=0",
                                "--axion-efficiency=off", "--axion-markdown=out/summary.md")
    # the impossible promise fails, or stays inconclusive when other work kept the cores busy meanwhile
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] + outcomes.get("failed", 0) == 2
    result.stdout.fnmatch_lines(["axion: model SmolLM2-135M-Instruct.Q4_1, hardware *, * thread*, in process; "
                                 "baselines in *",
                                 "collected 2 items",   # the header line comes before the first test
                                 "markdown summary: out/summary.md (also in $GITHUB_STEP_SUMMARY)"])
    text = (pytester.path / "out" / "summary.md").read_text()
    assert text.startswith("## pytest-axion: 1 ") and step_summary.read_text() == text
    rows = verdict_rows(text)
    assert rows[0].startswith(("| **FAIL** | `test_a_real_run", "| **inconclusive** | `test_a_real_run"))
    assert "prompt_tps" in rows[0]
    assert any(row.startswith("| pass |") and "gen_tps" in row for row in rows)


def test_measurements_without_a_baseline_are_counted_not_listed_and_the_path_is_relative():
    from pathlib import Path

    from pytest_axion.report.record import BaselineStatus

    path = Path.cwd() / "baselines" / "hw" / "m.json"
    unjudged = [Verdict(nodeid="t.py::test_prompt", kind="baseline", name=f"prompt_tps.pp{n}",
                        label=f"prompt_tps pp{n} vs baseline", outcome="info", reason="",
                        readings=(Reading(status="met", figure="-", message=f"prompt_tps pp{n}: no-baseline",
                                          detail={"word": "no-baseline", "path": str(path)}),)) for n in (64, 128)]
    record = dataclasses.replace(mixed_run(), baseline=BaselineStatus(path=str(path), found=False,
                                                                       estimator="median", tolerance=0.1, confirm=2))
    record = dataclasses.replace(record, verdicts=[*record.verdicts, *unjudged])
    text = markdown_summary(record)
    assert text.startswith("## pytest-axion: 1 fail, 1 inconclusive, 3 pass; 2 measurement(s) without a stored "
                           "baseline\n")
    assert "no-baseline" not in "\n".join(verdict_rows(text))
    assert "> baseline: none for this hardware and model at baselines/hw/m.json" in text and str(Path.cwd()) not in text


def test_an_unwritable_summary_is_one_line_naming_it(tmp_path):
    import pytest

    from pytest_axion.errors import AxionError

    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(AxionError, match=r"cannot write the Markdown summary .*file/s\.md .*: check --axion-markdown"):
        write_markdown(blocked / "s.md", "## x")
    with pytest.raises(AxionError, match=r"cannot append the Markdown summary to \$GITHUB_STEP_SUMMARY"):
        write_markdown(tmp_path / "ok.md", "## x", append_to=str(tmp_path / "no" / "dir" / "summary"))


def test_a_proxy_run_shows_what_it_stands_for_its_sizing_and_the_prediction():
    from pytest_axion.proxy.predict import LayerFigure, PredictedResult, PredictionSet, predict
    from pytest_axion.store.sizing_cache import Sizing

    record = run_record()
    proxy = {"of": "llama-3.3-70b", "layers": 4, "full_layers": 80, "quantization": "Q4_0", "seed": 1}
    prediction = predict([LayerFigure(2, (400.0, 410.0, 390.0), "tokens/s"),
                          LayerFigure(4, (210.0, 200.0, 205.0), "tokens/s")], 80)
    row = PredictedResult(("t.py::test_prompt", "prompt_tps", 1, 512, 0, 2), {2: 400.0, 4: 205.0}, prediction)
    record = dataclasses.replace(record, model=dataclasses.replace(record.model, proxy=proxy),
                                 prompt_sizing=Sizing(256, ((64, 232.0), (256, 265.0)), "swept in this run"),
                                 prediction=PredictionSet("llama-3.3-70b", 80, (2, 4), (row,)))
    text = markdown_summary(record)
    assert "> model: proxy of llama-3.3-70b: 4 of 80 layers, random Q4_0 weights" in text
    assert "> prompt sizing: 256 tokens per call (swept in this run); prompt t/s by tokens per call 64: 232" in text
    assert ("### Prediction\n\nPredicted for `llama-3.3-70b` (80 layers) from proxies of 2, 4 layers: a "
            "prediction") in text
    assert (f"| t.py::test_prompt | prompt_tps | pp512+tg0 x1 | 2L 400, 4L 205 | {prediction.value:.4g} tokens/s "
            "| 95% [") in text
    failed = dataclasses.replace(record, prediction=PredictionSet("llama-3.3-70b", 80, (), problem="only [4]"))
    assert "### Prediction\n\nNone made: only [4]" in markdown_summary(failed)
