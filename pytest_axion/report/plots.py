"""The publication's three figures, drawn from a run's measurements (PNG and SVG).

1. prompt encoding speed by batch size, one line per prompt size;
2. total generation speed by batch size, one line per generation length;
3. per-user generation speed by batch size, with the reading-speed line;
and, in an A/B session, the paired ratios B/A per measurement with the tolerance band; the roofline (fig5) when
the machine's limits were measured; and, for each ``axion.capacity()`` search, each promise's figure by users
with its limit and the bracket (fig6).
matplotlib is optional (``pytest-axion[plots]``); it is imported only here, with the Agg backend.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_axion.errors import SettingsError
from pytest_axion.figures import figure
from pytest_axion.promises.efficiency import GEN_BANDWIDTH, PROMPT_COMPUTE, EfficiencyFigure, Roofs
from pytest_axion.promises.verdict import Verdict
from pytest_axion.records import CapacitySearch, Measurement

PLOTS_HINT = "pip install 'pytest-axion[plots]'"
# A phase of fewer tokens than this exists only to drive the other phase (a 1-token generation after a
# prompt, an 8-token prompt before generation); its speed is mostly fixed overhead, not the figure's subject.
MIN_PHASE_TOKENS = 16


def check_matplotlib(source: str) -> None:
    """Fail early, before measuring, when plots are asked for but cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SettingsError(f"{source} needs matplotlib, which is not installed: run {PLOTS_HINT}") from None


def _series(measurements: Sequence[Measurement], metric: str, by: str) -> dict[int, list[tuple[int, float]]]:
    """{prompt size or generation length: [(batch size, median)]}, the worst median per point."""
    points: dict[int, dict[int, float]] = defaultdict(dict)
    for m in measurements:
        if m.metric != metric:
            continue
        size = m.n_prompt if by == "n_prompt" else m.n_gen
        if size < MIN_PHASE_TOKENS:
            continue
        current = points[size].get(m.batch_size)
        points[size][m.batch_size] = m.median if current is None else min(current, m.median)
    return {size: sorted(values.items()) for size, values in sorted(points.items())}


def _save(fig: Any, directory: Path, stem: str) -> list[Path]:
    """Write the figure as PNG and SVG, and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    written = []
    for suffix in (".png", ".svg"):
        path = directory / f"{stem}{suffix}"
        fig.savefig(path)
        written.append(path)
    plt.close(fig)
    return written


def draw_figures(measurements: Sequence[Measurement], directory: Path, *, title: str,
                 reading_tokens_per_s: float, reading_label: str) -> list[Path]:
    """Write fig1/fig2/fig3 as PNG and SVG; return the files written (figures with no data are skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    figures = [
        ("fig1-prompt-encoding", "prompt_tps", "n_prompt", "prompt size {} tokens",
         "Prompt encoding speed (tokens/s)"),
        ("fig2-total-generation", "gen_tps", "n_gen", "generation length {} tokens",
         "Total token generation speed (tokens/s)"),
        ("fig3-per-user-generation", "per_user_tps", "n_gen", "generation length {} tokens",
         "Per-user generation speed (tokens/s)"),
    ]
    written: list[Path] = []
    for stem, metric, by, legend, ylabel in figures:
        series = _series(measurements, metric, by)
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        for size, points in series.items():
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=legend.format(size))
        if metric == "per_user_tps":
            ax.axhline(reading_tokens_per_s, color="crimson", linestyle="--", label=reading_label)
        batch_sizes = sorted({b for points in series.values() for b, _ in points})
        ax.set_xscale("log", base=2)
        ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
        ax.set_xlabel("batch size (concurrent users)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{ylabel.split(' (')[0]}\n{title}", fontsize=10)
        written += _save(fig, directory, stem)
    return written


def draw_ab_ratios(verdicts: Sequence[Verdict], directory: Path, *, title: str) -> list[Path]:
    """Every pair's ratio B/A per throughput measurement (the A/B verdicts' first attempts), its estimate and
    interval, and the tolerance band; coloured by outcome."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Throughput only: the other metrics repeat these timings.
    shown = [(v.first.detail, v.outcome) for v in verdicts
             if v.kind == "ab" and v.first.detail.get("metric") in ("prompt_tps", "gen_tps")]
    if not shown:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    colours = {"pass": "tab:blue", "fail": "crimson", "inconclusive": "tab:orange", "info": "grey"}
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(shown) + 1.8), dpi=120)
    tolerance = shown[0][0]["tolerance"]
    ax.axvspan(1 - tolerance, 1 + tolerance, color="grey", alpha=0.15, label=f"tolerance +-{tolerance:.0%}")
    ax.axvline(1.0, color="grey", linewidth=0.8)
    for row, (pair, outcome) in enumerate(shown):
        ax.scatter(pair["ratios"], [row] * len(pair["ratios"]), s=9, color="grey", alpha=0.6, zorder=2)
        ratio, (lo, hi) = pair["ratio"], pair["interval"]
        colour = "tab:green" if pair["verdict"] == "improved" else colours[outcome]
        ax.errorbar([ratio], [row], xerr=[[ratio - lo], [hi - ratio]], fmt="o", color=colour, capsize=3, zorder=3)
    ax.set_yticks(range(len(shown)), [f"{p['nodeid'].rsplit('::', 1)[-1]} {p['metric']} {p['workload']}"
                                      for p, _ in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speed ratio B/A per pair (dots), estimate and 95% interval (bars); > 1: B faster")
    ax.set_title(f"A/B paired ratios\n{title}", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, directory, "fig4-ab-ratios")


def draw_roofline(figures: Sequence[EfficiencyFigure], roofs: Roofs, directory: Path, *, title: str) -> list[Path]:
    """The roofline: arithmetic intensity (FLOP per byte moved) against achieved GFLOP/s, one point per measured
    cell (generation by batch size, prompt encoding by prompt size), under the bandwidth roof (read GB/s x
    intensity) and the float32 compute roof."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not figures:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    limits = roofs.limits
    lowest = min(f.intensity for f in figures) / 2
    highest = max(max(f.intensity for f in figures) * 2, 2 * limits.compute_gflops / limits.read_gbs)
    ridge = limits.compute_gflops / limits.read_gbs
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    xs = [lowest, ridge, highest]
    ax.plot(xs, [min(limits.read_gbs * x, limits.compute_gflops) for x in xs], color="black",
            label=f"roofs: read {limits.read_gbs:.1f} GB/s, float32 matmul {limits.compute_gflops:.0f} GFLOP/s")
    beyond = limits.beyond_cache.best_gbs["read"]
    if abs(beyond - limits.read_gbs) > 0.05 * limits.read_gbs:
        beyond_xs = [lowest, limits.compute_gflops / beyond, highest]
        ax.plot(beyond_xs, [min(beyond * x, limits.compute_gflops) for x in beyond_xs], color="grey", linestyle=":",
                label=f"read {beyond:.1f} GB/s beyond the last-level cache")
    for kind, marker, colour, name in ((GEN_BANDWIDTH, "o", "tab:blue", "generation"),
                                       (PROMPT_COMPUTE, "s", "tab:orange", "prompt encoding")):
        mine = [f for f in figures if f.kind == kind]
        if not mine:
            continue
        ax.scatter([f.intensity for f in mine], [f.gflops for f in mine], marker=marker, color=colour, label=name,
                   zorder=3)
        for f in mine:
            ax.annotate(f.cell, (f.intensity, f.gflops), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte read)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"Roofline: how close to the machine's limits\n{title}", fontsize=10)
    return _save(fig, directory, "fig5-roofline")


CAPACITY_PANELS = {"per_user_tps": "per-user speed (tokens/s)", "ttft_ms": "time to first token (ms)",
                   "itl_ms": "inter-token latency (ms)"}
STATUS_COLOURS = {"met": "tab:green", "missed": "crimson", "inconclusive": "tab:orange"}


def draw_capacity(searches: Mapping[str, CapacitySearch], directory: Path, *, title: str) -> list[Path]:
    """One figure per ``axion.capacity()`` search: a panel per promise with the figure its requests kept at the
    attainment by users, coloured by the level's verdict, the promise's limit, and the bracket shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    for nodeid, search in sorted(searches.items()):
        keys = [key for key, _ in search.limits if key in CAPACITY_PANELS]
        levels = sorted(search.levels, key=lambda level: level.load)
        by_rate = search.by == "rate"

        def tick(load: float, by_rate: bool = by_rate) -> str:
            return figure(load) if by_rate else f"{load:.0f}"

        if not keys or not levels:
            continue
        directory.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4.2), dpi=120, squeeze=False)
        low, high = search.most_passing, search.fewest_failing
        limits = dict(search.limits)
        loads = [level.load for level in levels]
        for ax, key in zip(axes[0], keys, strict=True):
            points = [(level.load, dict(level.figures).get(key), level.status) for level in levels]
            shown = [(users, value, status) for users, value, status in points if value is not None]
            ax.plot([u for u, _, _ in shown], [v for _, v, _ in shown], color="grey", linewidth=1, zorder=1)
            for status, colour in STATUS_COLOURS.items():
                mine = [(u, v) for u, v, s in shown if s == status]
                if mine:
                    ax.scatter(*zip(*mine, strict=True), color=colour, label=f"level {status}", zorder=3)
            bound = ">= {} t/s" if key == "per_user_tps" else "<= {} ms"
            ax.axhline(limits[key], color="crimson", linestyle="--",
                       label="promise " + bound.format(figure(limits[key])))
            if high is not None:
                ax.axvspan(max(low, min(loads) / 2), high, color="grey", alpha=0.15,
                           label=f"bracket: {tick(low)} met, {tick(high)} not" if low else
                           f"bracket: {tick(high)} not met")
            ax.set_xscale("log", base=2)
            ax.set_xticks(loads, [tick(load) for load in loads])
            ax.set_xlabel("requests/s (open loop)" if by_rate else "concurrent users")
            ax.set_ylabel(f"{CAPACITY_PANELS[key]}, kept by {search.attainment:.0%} of requests", fontsize=8)
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        name = nodeid.rsplit("::", 1)[-1]
        fig.suptitle(f"Capacity of {name}: {search.service_level}\n{title}", fontsize=9)
        written += _save(fig, directory, f"fig6-capacity-{name}")
    return written
