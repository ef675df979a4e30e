"""A busy process that is not this process's child: other work, as the plugin counts it."""

import contextlib
import os
import signal
import subprocess
import sys

# The project's own tests measure with one llama.cpp thread where the thread count is not what they test. With
# two threads on a 2-core CI machine, one core kept busy by something else makes every step wait for the thread
# that lost its core: a test run took 27x longer (4 s -> 116 s) and the whole suite 47-52 minutes instead of 16.
# One thread keeps to the core that is left.
MEASURING_THREADS = 1


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
