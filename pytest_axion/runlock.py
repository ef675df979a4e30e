"""One measuring test at a time, alone on the machine, across pytest-xdist workers.

Measurements taken while another process computes on the same cores are wrong. Under ``-n N`` a test
that measures holds this run's lock exclusively for its whole protocol (setup with the model load, call,
teardown), and every other test holds it shared: a measuring test waits for the tests running on other
workers to finish, and they wait for it. A turnstile in front keeps a stream of short tests from
starving a measuring test: once one queues, no new test starts until it has run.

``flock`` locks belong to the open file and die with the process, so a crashed worker frees them. The
lock files live in this user's private folder (:mod:`pytest_axion.store.private`): another local user can
neither hold them nor plant them as symlinks. Where ``fcntl`` is missing (Windows), measuring tests still
exclude each other, but other tests are not held back. No pytest imports.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pytest_axion.store.private import file_lock, private_dir

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """The locks of one test run (``run_id``: xdist's ``testrunuid``, shared by its workers)."""

    def __init__(self, run_id: str, folder: str | os.PathLike[str] | None = None) -> None:
        base = Path(folder or private_dir()) / f"run-{run_id}"
        self._turnstile, self._machine = base.with_suffix(".turnstile"), base.with_suffix(".machine")

    def remove_files(self) -> None:
        """Delete the lock files once the run is over (the controller, after its workers have gone)."""
        for path in (self._turnstile, self._machine):
            path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Hold the machine alone: no other test of this run starts or runs meanwhile."""
        if fcntl is None:
            with file_lock(self._machine):
                yield
            return
        with file_lock(self._turnstile), file_lock(self._machine):
            yield

    @contextlib.contextmanager
    def sharing(self) -> Iterator[None]:
        """Run beside other non-measuring tests, never beside a measuring one."""
        if fcntl is None:
            yield
            return
        with file_lock(self._turnstile):
            pass   # wait behind a measuring test that queued first
        with file_lock(self._machine, shared=True):
            yield
