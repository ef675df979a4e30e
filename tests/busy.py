"""A busy process that is not this process's child: other work, as the plugin counts it."""

import contextlib
import os
import signal
import subprocess
import sys


@contextlib.contextmanager
def busy_core():
    """One CPU kept busy by a process outside this process tree (the shell that starts it exits at once)."""
    started = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "while True: pass" >/dev/null 2>&1 & echo $!'],
                             capture_output=True, text=True, check=True)
    pid = int(started.stdout.strip())
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
