"""pytest glue: options, markers, fixtures, the SLO gate and the reports. It translates; the core decides."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_axion.engine import ProgressCallback
from pytest_axion.errors import AxionError
from pytest_axion.harness import Axion, LoadedModel
from pytest_axion.plots import check_matplotlib, draw_figures
from pytest_axion.report import RunRecord, capacity_lines, header_lines, measurement_table, write_report
from pytest_axion.session import AxionSession, settings_for_this_machine
from pytest_axion.settings import OPTIONS
from pytest_axion.slo import MARKER, SloSpec, marker_help, merge_marker_kwargs, parse_slo

SESSION_KEY = pytest.StashKey[AxionSession]()
SLO_SPEC_KEY = pytest.StashKey[SloSpec]()

_SKIP_REASON = "performance measurement is off: run pytest with --axion-slo to measure"


def _dest(name: str) -> str:
    return f"axion_{name}"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("axion", "pytest-axion: performance conformance of CPU LLM inference")
    for spec in OPTIONS:
        if spec.kind == "flag":
            group.addoption(spec.flag, action="store_true", default=False, dest=_dest(spec.name), help=spec.help)
        else:
            group.addoption(spec.flag, default=None, dest=_dest(spec.name), metavar=spec.metavar, help=spec.help)
        if spec.ini is not None:
            parser.addini(spec.ini, help=spec.help, type="string", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", marker_help())
    cli = {spec.name: config.getoption(_dest(spec.name)) for spec in OPTIONS}
    ini = {spec.ini: str(config.getini(spec.ini)) for spec in OPTIONS if spec.ini is not None}
    try:
        settings = settings_for_this_machine(cli, ini)
        if settings.plots.value is not None:
            check_matplotlib(settings.plots.source)
    except AxionError as err:
        raise pytest.UsageError(str(err)) from None
    config.stash[SESSION_KEY] = AxionSession(settings, progress=_progress_writer(config))


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.close()
        del config.stash[SESSION_KEY]


def _progress_writer(config: pytest.Config) -> ProgressCallback:
    """One line per finished workload; with -v one per repetition; nothing with -q."""
    def write(workload: str, done: int, total: int) -> None:
        verbosity = config.getoption("verbose")
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or verbosity < 0 or (verbosity == 0 and done < total):
            return
        reporter.write_line(f"  axion: {workload}: {done}/{total} repetitions")
    return write


@pytest.fixture(scope="session")
def axion_model(request: pytest.FixtureRequest) -> LoadedModel:
    """The model, loaded once per session (per xdist worker); skipped without ``--axion-slo``."""
    session = request.config.stash[SESSION_KEY]
    if not session.settings.enabled:
        pytest.skip(_SKIP_REASON)
    try:
        return session.load()
    except AxionError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture
def axion(axion_model: LoadedModel, request: pytest.FixtureRequest) -> Axion:
    """Measure from a test: ``axion.prompt(512)``, ``axion.generate(128)``, ``axion.batched(...)``."""
    return request.config.stash[SESSION_KEY].harness(request.node.nodeid)


def pytest_runtest_setup(item: pytest.Item) -> None:
    markers = list(item.iter_markers(MARKER))
    if not markers:
        return
    args = [arg for marker in markers for arg in marker.args]
    try:
        item.stash[SLO_SPEC_KEY] = parse_slo(args, merge_marker_kwargs(m.kwargs for m in markers),
                                             where=item.nodeid)
    except AxionError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    # A user's mistake (a workload that cannot fit, say) fails that test with one line, no traceback.
    try:
        result = yield
    except AxionError as err:
        raise pytest.fail.Exception(str(err), pytrace=False) from None
    session = item.config.stash[SESSION_KEY]
    spec = item.stash.get(SLO_SPEC_KEY, None)
    if spec is None or not session.settings.enabled:
        return result
    try:
        outcome = session.check_slos(item.nodeid, spec)
    except AxionError as err:
        raise pytest.fail.Exception(str(err), pytrace=False) from None
    for verdict in outcome.verdicts:
        name = f"axion_slo.{verdict.key}.b{verdict.batch_size}.pp{verdict.n_prompt}.tg{verdict.n_gen}"
        item.user_properties.append((name, f"{verdict.verdict}: {verdict.message()}"))
    if outcome.capacity is not None:
        item.user_properties.append(("axion_slo.capacity", str(outcome.capacity)))
    if outcome.failures:
        raise pytest.fail.Exception("\n".join(v.message() for v in outcome.failures), pytrace=False)
    return result


def _run_record(session: AxionSession) -> RunRecord | None:
    loaded = session.loaded
    if loaded is None or not session.measurements:
        return None
    return RunRecord(model=loaded.model, hardware=loaded.hardware, threads=loaded.threads,
                     repetitions=session.settings.repetitions.value, load_seconds=loaded.load_seconds,
                     reading=session.reading_speed(), measurements=session.measurements, outcomes=session.outcomes)


def pytest_sessionfinish(session: pytest.Session) -> None:
    axion = session.config.stash.get(SESSION_KEY, None)
    if axion is None:
        return
    run = _run_record(axion)
    if run is None:
        return
    settings = axion.settings
    try:
        if settings.report.value is not None:
            write_report(Path(settings.report.value), run)
        if settings.plots.value is not None:
            draw_figures(run.measurements, Path(settings.plots.value),
                         title=f"{run.model.label} on {run.hardware.hardware_id}, {run.threads} threads",
                         reading_tokens_per_s=run.reading.tokens_per_s, reading_label=run.reading.label)
    except AxionError as err:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"ERROR: {err}", red=True)
        session.exitstatus = pytest.ExitCode.USAGE_ERROR


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    run = _run_record(session) if session is not None else None
    if session is None or run is None:
        return
    terminalreporter.section("axion performance", sep="=")
    for line in header_lines(run):
        terminalreporter.write_line(line)
    for warning in session.settings.warnings:
        terminalreporter.write_line(f"warning: {warning}", yellow=True)
    terminalreporter.write_line("")
    terminalreporter.write_line(measurement_table(run.measurements, run.outcomes))
    lines = capacity_lines(run.outcomes)
    if lines:
        terminalreporter.write_line("")
    for line in lines:
        terminalreporter.write_line(line)
    if session.settings.report.value is not None:
        terminalreporter.write_line(f"report: {session.settings.report.value}")
    if session.settings.plots.value is not None:
        terminalreporter.write_line(f"figures: {session.settings.plots.value}/fig1..fig3 (.png, .svg)")
