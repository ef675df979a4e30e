"""A Python interpreter whose llama.cpp runs a known fraction slower: a stand-in for a slower build.

``python benchmarks/slowed_python.py --stop 0.25 -- SCRIPT ARGS...`` runs ``SCRIPT`` (the worker) as a
child with the same stdin/stdout, and stops it with SIGSTOP for ``stop`` of every 100 ms (SIGCONT for
the rest), so that every workload takes 1 / (1 - stop) as long: a persistent slowdown of the measured
process itself, not competition from another process (the plugin's contention meter counts other
processes' CPU time; a stopped worker uses none). ``benchmarks/verdicts.py`` passes a wrapper script
around this as ``--axion-python`` in its persistent-slowdown phase.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

PERIOD_S = 0.1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stop", type=float, required=True, help="fraction of every period the worker is stopped")
    parser.add_argument("--period", type=float, default=PERIOD_S,
                        help="seconds of one stop-and-run cycle (default 0.1; shorter: steadier over short workloads)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if "--probe" in command:   # build facts only: nothing to slow down
        return subprocess.call([sys.executable, *command])
    child = subprocess.Popen([sys.executable, *command])
    signal.signal(signal.SIGTERM, lambda *_: child.kill())
    stop_s, run_s = args.stop * args.period, (1 - args.stop) * args.period
    while child.poll() is None:
        time.sleep(run_s)
        try:
            os.kill(child.pid, signal.SIGSTOP)
            time.sleep(stop_s)
            os.kill(child.pid, signal.SIGCONT)
        except ProcessLookupError:
            break
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
