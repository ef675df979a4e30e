"""pytest glue: options, markers, fixtures, the SLO gate and the reports. It translates; the core decides."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_axion.errors import AxionError, AxionWarning
from pytest_axion.options import MARKER, MARKER_SHORT_HELP, OPTIONS, options_given

# A pytest run that does not use the plugin imports this module and the option table, nothing more: the
# settings, the promises, the engine and the reports are imported where a run first needs them.
if TYPE_CHECKING:
    from pytest_axion.harness import Axion, LoadedModel
    from pytest_axion.promises.marker import SloSpec
    from pytest_axion.records import ProgressCallback
    from pytest_axion.session import AxionSession
    from pytest_axion.settings import Settings

SESSION_KEY: pytest.StashKey[AxionSession] = pytest.StashKey()
SLO_SPEC_KEY: pytest.StashKey[SloSpec] = pytest.StashKey()
RUN_IDS_KEY: pytest.StashKey[set[str]] = pytest.StashKey()   # xdist runs whose lock files the controller deletes

_SKIP_REASON = "performance measurement is off: run pytest with --axion-slo to measure"


def _dest(name: str) -> str:
    return f"axion_{name}"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("axion", "pytest-axion: performance conformance of CPU LLM inference")
    for spec in OPTIONS:
        if spec.kind in ("flag", "bool"):
            group.addoption(spec.flag, action="store_true", default=False, dest=_dest(spec.name), help=spec.help)
        else:
            group.addoption(spec.flag, default=None, dest=_dest(spec.name), metavar=spec.metavar, help=spec.help)
        if spec.ini is not None:
            parser.addini(spec.ini, help=spec.help, type="string", default="")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("markers", False):   # `pytest --markers`: every key, from every kind of promise
        from pytest_axion.promises.marker import marker_help

        config.addinivalue_line("markers", marker_help())
    else:
        config.addinivalue_line("markers", MARKER_SHORT_HELP)
    cli = {spec.name: config.getoption(_dest(spec.name)) for spec in OPTIONS}
    if not options_given(cli):
        return   # not used in this run: ini values are read and checked when a run measures
    ini = {spec.ini: str(config.getini(spec.ini)) for spec in OPTIONS if spec.ini is not None}
    try:
        from pytest_axion.settings import settings_for_this_machine

        settings = settings_for_this_machine(cli, ini)
        if not settings.enabled:
            return   # no session: a run without --axion-slo imports nothing that measures or reports
        from pytest_axion.report.plots import check_matplotlib
        from pytest_axion.session import AxionSession

        if settings.plots.value is not None:
            check_matplotlib(settings.plots.source)
        session = AxionSession(settings, baselines_root=_baselines_root(config, settings),
                               progress=_progress_writer(config))
        session.check_features(settings.require_features, source="--axion-require-features")
        _check_distribution(config)
        if settings.refresh and not settings.force and not _is_xdist_worker(config):
            session.check_quiet_for_refresh()
        if settings.refresh and not _is_xdist_worker(config):
            from pytest_axion.store.baselines import check_folder_writable

            check_folder_writable(session.baselines_root)
        elif _is_xdist_worker(config):
            from pytest_axion.store.private import private_dir

            private_dir()   # the run's lock lives there: an unsafe folder is refused before any test runs
    except AxionError as err:
        raise pytest.UsageError(str(err)) from None
    config.stash[SESSION_KEY] = session


def pytest_report_header(config: pytest.Config) -> str | None:
    """Model, hardware id, threads and mode, before the first test runs (the controller only, under xdist)."""
    session = config.stash.get(SESSION_KEY, None)
    return session.header_line() if session is not None else None


# -- pytest-xdist -------------------------------------------------------------------------------------
# Measurements taken while another worker computes on the same cores are wrong, so under `-n N` every
# test that uses the axion fixtures holds this run's lock alone for its whole protocol (setup with the
# model load, call, teardown), and every other test holds it shared (pytest_axion.runlock): a measuring
# test waits for the tests running on other workers and they wait for it. The model is loaded only by
# workers that get a measuring test. (Routing them all to one worker with xdist_group/--dist loadgroup
# would load the model once, but with pytest 9.2 and xdist 3.8 xdist cannot name the groups any more: it
# sets item._nodeid, which pytest no longer reads, so the tests spread anyway.) Each worker sends what it
# measured to the controller, which reports, plots and refreshes once.

_AXION_FIXTURES = frozenset({"axion", "axion_model"})


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _check_distribution(config: pytest.Config) -> None:
    if getattr(config.option, "dist", "no") == "each":
        raise AxionError("--dist each would run every measuring test on every worker: use -n N alone "
                         "(pytest-axion lets one measuring test run at a time)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    config = item.config
    session = config.stash.get(SESSION_KEY, None)
    if session is None or not _is_xdist_worker(config):
        return (yield)
    from pytest_axion.runlock import RunLock

    lock = RunLock(config.workerinput.get("testrunuid", "run"))  # type: ignore[attr-defined]
    measuring = _AXION_FIXTURES & set(getattr(item, "fixturenames", ()))
    with lock.measuring() if measuring else lock.sharing():
        return (yield)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """xdist controller: take over what a worker measured, for the one summary, report and refresh."""
    config: pytest.Config = node.config  # type: ignore[attr-defined]
    run_id = getattr(node, "workerinput", {}).get("testrunuid")
    if run_id:
        config.stash.setdefault(RUN_IDS_KEY, set()).add(run_id)
    payload = getattr(node, "workeroutput", {}).get("axion")
    session = config.stash.get(SESSION_KEY, None)
    if session is not None and payload is not None:
        session.adopt_state(payload)


def _baselines_root(config: pytest.Config, settings: Settings) -> Path:
    """--axion-baselines is relative to where pytest was started; the ini key to the ini file."""
    chosen = settings.baselines
    if chosen.value is None:
        return config.rootpath / "baselines"
    path = Path(chosen.value).expanduser()
    if path.is_absolute():
        return path
    base = config.invocation_params.dir if chosen.source.startswith("--") else (
        config.inipath.parent if config.inipath else config.rootpath)
    return base / path


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(RUN_IDS_KEY, None):   # xdist controller: its workers are gone, so are their locks' users
        from pytest_axion.runlock import RunLock

        for run_id in config.stash[RUN_IDS_KEY]:
            RunLock(run_id).remove_files()
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
        # total 0: a message about long work (a build), not a count of repetitions
        reporter.write_line(f"  axion: {workload}" + (f": {done}/{total} repetitions" if total else ""))
    return write


@pytest.fixture(scope="session")
def axion_model(request: pytest.FixtureRequest) -> LoadedModel:
    """The model, loaded once per session (per xdist worker); skipped without ``--axion-slo``."""
    session = request.config.stash.get(SESSION_KEY, None)
    if session is None:
        pytest.skip(_SKIP_REASON)
    try:
        loaded = session.load()
        session.read_baseline()  # a corrupt baseline stops the test before anything is measured
    except AxionError as err:
        raise pytest.fail.Exception(str(err), pytrace=False) from None
    return loaded


@pytest.fixture
def axion(axion_model: LoadedModel, request: pytest.FixtureRequest) -> Axion:
    """Measure from a test: ``axion.prompt(512)``, ``axion.generate(128)``, ``axion.batched(...)``."""
    try:   # a fresh worker when llama.cpp crashed in an earlier test; if it crashes again, one line
        return request.config.stash[SESSION_KEY].harness(request.node.nodeid,
                                                         request.node.stash.get(SLO_SPEC_KEY, None))
    except AxionError as err:
        raise pytest.fail.Exception(str(err), pytrace=False) from None


def pytest_runtest_setup(item: pytest.Item) -> None:
    markers = list(item.iter_markers(MARKER))
    if not markers:
        return
    from pytest_axion.promises.marker import merge_marker_kwargs, parse_slo

    args = [arg for marker in markers for arg in marker.args]
    try:
        spec = parse_slo(args, merge_marker_kwargs(m.kwargs for m in markers), where=item.nodeid)
        item.stash[SLO_SPEC_KEY] = spec
        session = item.config.stash.get(SESSION_KEY, None)
        if session is not None:  # before the fixtures load the model or anything is measured
            session.check_features(spec.requires, source=f"{item.nodeid}: requires")
    except AxionError as err:
        raise pytest.fail.Exception(str(err), pytrace=False) from None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    # A user's mistake (a workload that cannot fit, say) fails that test with one line, no traceback.
    try:
        result = yield
    except AxionError as err:
        raise pytest.fail.Exception(str(err), pytrace=False) from None
    session = item.config.stash.get(SESSION_KEY, None)
    if session is None:
        return result
    try:
        verdicts = session.judge(item.nodeid, item.stash.get(SLO_SPEC_KEY, None), _wait_writer(item))
    except AxionError as err:
        raise pytest.fail.Exception(str(err), pytrace=False) from None
    from pytest_axion.promises.verdict import FAIL, INCONCLUSIVE
    from pytest_axion.report.junit import junit_properties

    item.user_properties.extend(junit_properties(verdicts, session.efficiency_of(item.nodeid),
                                                session.collected.capacity_searches.get(item.nodeid),
                                                session.collected.rate_levels.get(item.nodeid, ())))
    failures = []
    for verdict in verdicts:   # every kind of promise alike: fail fails; inconclusive warns, or fails if strict
        if verdict.outcome == FAIL:
            failures.append(verdict.message())
        elif verdict.outcome == INCONCLUSIVE:
            if session.settings.strict:
                failures.append(f"{verdict.message()} (--axion-strict)")
            else:
                item.warn(AxionWarning(verdict.message()))
    if failures:
        raise pytest.fail.Exception("\n".join(failures), pytrace=False)
    return result


def _wait_writer(item: pytest.Item) -> Callable[[str], None]:
    reporter = item.config.pluginmanager.get_plugin("terminalreporter")

    def wait_message(text: str) -> None:
        if reporter is not None and item.config.getoption("verbose") >= 0:
            reporter.write_line(f"  axion: {item.nodeid}: {text}")
    return wait_message


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep every phase's outcome: a refresh records only tests that passed."""
    report = yield
    session = item.config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.collected.test_phases.append((item.nodeid, report.outcome))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    axion = session.config.stash.get(SESSION_KEY, None)
    if axion is None:
        return
    if _is_xdist_worker(session.config):
        # The controller reports, plots and refreshes once, from what this worker measured.
        payload = axion.export_state()
        if payload is not None:
            session.config.workeroutput["axion"] = payload  # type: ignore[attr-defined]
        return
    run = axion.run_record()
    if run is None:
        return
    from pytest_axion.report.json_report import write_report
    from pytest_axion.report.plots import draw_ab_ratios, draw_capacity, draw_figures, draw_roofline

    settings = axion.settings
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    started = False

    def say(text: str, **markup: bool) -> None:
        nonlocal started
        if reporter is None:
            return
        if not started:  # the progress line ("[100%]") is still open
            reporter.write("\n")
            started = True
        reporter.write_line(text, **markup)

    try:
        # The report first: this run's figures are kept even when the refresh's later runs fail.
        if settings.report.value is not None:
            write_report(Path(settings.report.value), run)
        if settings.refresh:
            params = session.config.invocation_params
            axion.refresh_result = axion.refresh_baselines(
                params.args, cwd=params.dir, repo_root=session.config.rootpath,
                progress=say)
            if not axion.refresh_result.written:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        figures: list[Path] = []
        if settings.plots.value is not None:
            from pytest_axion.records import threads_text

            folder = Path(settings.plots.value)
            title = f"{run.model.label} on {run.hardware.hardware_id}, {threads_text(run.threads)}"
            figures += draw_figures(run.measurements, folder, title=title,
                                    reading_tokens_per_s=run.reading.tokens_per_s, reading_label=run.reading.label)
            if run.ab is not None:
                figures += draw_ab_ratios(run.verdicts, folder,
                                          title=f"{run.model.label} on {run.hardware.hardware_id}\n"
                                                f"B: {run.ab.current.name}, A: {run.ab.baseline.name}")
            if run.roofs is not None:
                figures += draw_roofline(run.efficiency, run.roofs, folder, title=title)
            figures += draw_capacity(run.capacity_searches, folder, title=title)
        if settings.markdown.value is not None:
            from pytest_axion.report.markdown import markdown_summary, write_markdown

            path = Path(settings.markdown.value)
            write_markdown(path, markdown_summary(run, figures=figures, relative_to=path.parent.resolve()),
                           append_to=os.environ.get("GITHUB_STEP_SUMMARY"))
    except AxionError as err:
        say(f"ERROR: {err}", red=True)
        session.exitstatus = pytest.ExitCode.USAGE_ERROR


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    run = session.run_record() if session is not None else None
    if session is None or run is None:
        return
    from pytest_axion.report.terminal import (
        ab_table,
        capacity_lines,
        efficiency_lines,
        header_lines,
        measurement_table,
        prediction_lines,
        promise_table,
        refresh_lines,
    )

    write = terminalreporter.write_line
    terminalreporter.section("axion performance", sep="=")
    for line in header_lines(run):
        write(line)
    for warning in session.settings.warnings:
        write(f"warning: {warning}", yellow=True)
    write("")
    write(measurement_table(run.measurements, run.verdicts))
    for table in (promise_table(run.verdicts), ab_table(run.verdicts)):
        if table:
            write("")
            write(table)
    for lines in (efficiency_lines(run), capacity_lines(run), prediction_lines(run)):
        if lines:
            write("")
        for line in lines:
            write(line)
    for line in refresh_lines(session.refresh_result):
        write(line)
    if session.settings.report.value is not None:
        write(f"report: {session.settings.report.value}")
    if session.settings.markdown.value is not None:
        write(f"markdown summary: {session.settings.markdown.value}"
              + (" (also in $GITHUB_STEP_SUMMARY)" if os.environ.get("GITHUB_STEP_SUMMARY") else ""))
    if session.settings.plots.value is not None:
        extra = ", fig4-ab-ratios" if run.ab is not None else ""
        extra += ", fig5-roofline" if run.roofs is not None else ""
        write(f"figures: {session.settings.plots.value}/fig1..fig3{extra} (.png, .svg)")
