import dataclasses
import sys

import pytest

from pytest_axion.errors import SettingsError
from pytest_axion.promises.ab import AbPromise
from pytest_axion.promises.confirm import confirm
from pytest_axion.records import CapacityLevel, CapacitySearch, Measurement
from pytest_axion.report.plots import check_matplotlib, draw_ab_ratios, draw_capacity, draw_figures


def fake_run():
    out = []
    for n_prompt in (32, 128):
        for b in (1, 2, 4):
            out.append(Measurement("t::p", "prompt_tps", b, n_prompt, 1, 2, (400.0 + b,)))
    for n_gen in (16, 64):
        for b in (1, 2, 4):
            out.append(Measurement("t::g", "gen_tps", b, 8, n_gen, 2, (100.0 * b ** 0.5,)))
            out.append(Measurement("t::g", "per_user_tps", b, 8, n_gen, 2, (100.0 / b ** 0.5,)))
    return out


def test_three_figures_in_two_formats(tmp_path):
    written = draw_figures(fake_run(), tmp_path / "figs", title="m on hw", reading_tokens_per_s=5.0,
                           reading_label="reading speed 5 t/s")
    names = sorted(p.name for p in written)
    assert names == sorted(f"{stem}.{ext}" for stem in ("fig1-prompt-encoding", "fig2-total-generation",
                                                        "fig3-per-user-generation") for ext in ("png", "svg"))
    assert all(p.stat().st_size > 1000 for p in written)
    svg = (tmp_path / "figs" / "fig3-per-user-generation.svg").read_text()
    assert "reading speed 5 t/s" in svg and "batch size" in svg


def test_figures_without_data_are_skipped(tmp_path):
    only_prompt = [m for m in fake_run() if m.metric == "prompt_tps"]
    written = draw_figures(only_prompt, tmp_path, title="t", reading_tokens_per_s=5.0, reading_label="r")
    assert {p.stem for p in written} == {"fig1-prompt-encoding"}


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SettingsError, match=r"--axion-plots needs matplotlib.*pytest-axion\[plots\]"):
        check_matplotlib("--axion-plots")


def test_ab_ratio_figure_shows_throughput_pairs_only(tmp_path):
    a = Measurement("t::p", "prompt_tps", 1, 32, 0, 2, tuple(300.0 + i for i in range(8)))
    b = Measurement("t::p", "prompt_tps", 1, 32, 0, 2, tuple(270.0 + i for i in range(8)))
    ta = Measurement("t::p", "ttft_ms", 1, 32, 0, 2, tuple(100.0 + i for i in range(8)))
    side = {b.key: (a, b), ta.key: (ta, ta)}
    verdicts = confirm("t::p", [AbPromise(side, rounds=8, tolerance=0.05)], [b, ta], attempts=1, measure_again=None)
    written = draw_ab_ratios(verdicts, tmp_path / "figs", title="m on hw")
    assert [p.name for p in written] == ["fig4-ab-ratios.png", "fig4-ab-ratios.svg"]
    assert all(p.stat().st_size > 1000 for p in written)
    assert draw_ab_ratios(verdicts[1:], tmp_path / "none", title="t") == []


def test_a_capacity_figure_per_search_with_each_promise_its_limit_and_the_bracket(tmp_path):
    def level(users, status, speed, ttft):
        return CapacityLevel(users=users, requests=35 * users, meeting=35 * users if status == "met" else 0, low=0.9,
                             high=1.0, status=status, figures=(("per_user_tps", speed), ("ttft_ms", ttft)))
    search = CapacitySearch(nodeid="t.py::test_users", n_prompt=16, n_gen=16,
                            service_level="per-user speed >= 5 t/s, TTFT <= 2 s", attainment=0.9,
                            levels=(level(1, "met", 40.0, 300.0), level(2, "met", 30.0, 900.0),
                                    level(4, "inconclusive", 20.0, 1990.0), level(8, "missed", 9.0, 4100.0)),
                            ended="promise", stopped="TTFT p90 4.1 s > 2 s", limits=(("per_user_tps", 5.0),
                                                                                   ("ttft_ms", 2000.0)))
    written = draw_capacity({search.nodeid: search}, tmp_path / "figs", title="m on hw")
    assert [p.name for p in written] == ["fig6-capacity-test_users.png", "fig6-capacity-test_users.svg"]
    svg = written[1].read_text()
    assert "bracket: 2 met, 4 not" in svg and "promise &lt;= 2000.0 ms" in svg and "promise &gt;= 5.00 t/s" in svg
    assert "time to first token" in svg and "level inconclusive" in svg
    no_limits = CapacitySearch(nodeid="t.py::x", n_prompt=16, n_gen=16, service_level="", attainment=0.9,
                               levels=search.levels, ended="promise", stopped="")
    assert draw_capacity({"t.py::x": no_limits}, tmp_path / "none", title="t") == []
    by_rate = dataclasses.replace(search, nodeid="t.py::test_rate", by="rate", levels=tuple(
        dataclasses.replace(lv, requests_per_s=0.75 * lv.users) for lv in search.levels))
    svg = draw_capacity({by_rate.nodeid: by_rate}, tmp_path / "rate", title="t")[1].read_text()
    assert "requests/s (open loop)" in svg and "bracket: 1.50 met, 3.00 not" in svg
