"""What the plugin costs a pytest run that does not use it: whole-process wall time, with and without ``-p no:axion``.

A project that installs pytest-axion for one job pays its import in every other pytest run. This starts
``python -m pytest -q`` on a folder of one trivial test, alternately with the plugin and with
``-p no:axion`` (ABAB, so that drift in the machine cancels), many times, and reports the medians and
the median of the paired differences. The target (issue 15): under 50 ms.

    python benchmarks/import_overhead.py --runs 40
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MS = 50.0


def timed_run(folder: Path, *extra: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra, str(folder)],
                          capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"pytest failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed


def llama_cpp_imported(folder: Path) -> bool:
    """Whether a run with the plugin (and without --axion-slo) imports llama_cpp at all."""
    probe = folder / "test_probe.py"
    probe.write_text("import sys\n\ndef test_no_llama_cpp():\n    assert 'llama_cpp' not in sys.modules\n")
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(probe)],
                              capture_output=True, text=True, check=False)
    finally:
        probe.unlink()
    return done.returncode != 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="pairs of runs (default 40)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="axion-overhead-") as tmp:
        folder = Path(tmp)
        (folder / "test_trivial.py").write_text("def test_nothing():\n    assert True\n")
        timed_run(folder)   # warm the page cache and the .pyc files of both configurations
        timed_run(folder, "-p", "no:axion")
        with_plugin, without = [], []
        for _ in range(args.runs):
            with_plugin.append(timed_run(folder))
            without.append(timed_run(folder, "-p", "no:axion"))
        imports_llama = llama_cpp_imported(folder)
    differences = [a - b for a, b in zip(with_plugin, without, strict=True)]
    figures = {
        "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
        "date": datetime.date.today().isoformat(), "pairs": args.runs,
        "with_plugin_median_ms": 1e3 * statistics.median(with_plugin),
        "without_plugin_median_ms": 1e3 * statistics.median(without),
        "overhead_median_ms": 1e3 * statistics.median(differences),
        "overhead_quartiles_ms": [1e3 * q for q in statistics.quantiles(differences, n=4)],
        "imports_llama_cpp": imports_llama, "target_ms": TARGET_MS,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    ok = figures["overhead_median_ms"] < TARGET_MS and not imports_llama
    print(f"overhead {figures['overhead_median_ms']:.1f} ms (median of {args.runs} pairs; target < {TARGET_MS:.0f} ms)"
          f"; llama_cpp imported: {imports_llama}: {'OK' if ok else 'OVER TARGET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
