"""pytest glue: options, fixtures and the terminal summary. It translates; the core decides."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_axion.errors import AxionError
from pytest_axion.harness import Axion, LoadedModel
from pytest_axion.report import header_lines, measurement_table
from pytest_axion.session import AxionSession, settings_for_this_machine
from pytest_axion.settings import OPTIONS

SESSION_KEY = pytest.StashKey[AxionSession]()

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
    cli = {spec.name: config.getoption(_dest(spec.name)) for spec in OPTIONS}
    ini = {spec.ini: str(config.getini(spec.ini)) for spec in OPTIONS if spec.ini is not None}
    try:
        settings = settings_for_this_machine(cli, ini)
    except AxionError as err:
        raise pytest.UsageError(str(err)) from None
    config.stash[SESSION_KEY] = AxionSession(settings, progress=_progress_writer(config))


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.close()
        del config.stash[SESSION_KEY]


def _progress_writer(config: pytest.Config):  # type: ignore[no-untyped-def]
    def write(message: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and config.getoption("verbose") > 0:
            reporter.write_line(f"  axion: {message}")
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    # A user's mistake (a workload that cannot fit, say) fails that test with one line, no traceback.
    try:
        return (yield)
    except AxionError as err:
        raise pytest.fail.Exception(str(err), pytrace=False) from None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is None or not session.measurements:
        return
    loaded = session.loaded
    terminalreporter.section("axion performance", sep="=")
    if loaded is not None:
        for line in header_lines(loaded.model, loaded.hardware, threads=loaded.threads,
                                 load_seconds=loaded.load_seconds):
            terminalreporter.write_line(line)
    for warning in session.settings.warnings:
        terminalreporter.write_line(f"warning: {warning}", yellow=True)
    terminalreporter.write_line("")
    terminalreporter.write_line(measurement_table(session.measurements))
