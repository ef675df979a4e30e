"""Child processes that end with their parent, whatever the exit: a crash, SIGKILL or Ctrl-C of pytest never
leaves a llama.cpp worker, a llama-server or a refresh run measuring on. No pytest imports."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` of a child: the kernel sends it SIGKILL when the thread that started it ends (Linux's
    ``PR_SET_PDEATHSIG``; elsewhere nothing happens and the parent's own cleanup stops it)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def stop_group(child: subprocess.Popen[bytes], *, grace_s: float = 10.0) -> None:
    """End a child started in a session of its own, and everything it started: SIGTERM to its process group,
    then SIGKILL to the group once ``grace_s`` has passed."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=grace_s)
    # whatever is left in the group (a worker of the child that ignored SIGTERM) goes too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()
