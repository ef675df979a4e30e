"""How long `pytest-axion validate` takes on a 10 MB baselines folder (a benchmark, never run in CI).

Builds a folder of copies of the committed baseline, each under its own hardware id, until it holds
10 MB, then times validate() in-process (median of 5) and the command as a user runs it.

    python benchmarks/validate_speed.py
"""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_axion.cli import validate  # noqa: E402

TARGET_BYTES = 10 * 2**20


def build(folder: Path) -> tuple[int, int]:
    [source] = sorted((ROOT / "tests" / "data" / "baselines").glob("*/*.json"))
    data = json.loads(source.read_text())
    total = files = 0
    while total < TARGET_BYTES:
        hardware_id = f"bench-{files:04d}"
        data["hardware_id"] = hardware_id
        path = folder / hardware_id / source.name
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        total += path.stat().st_size
        files += 1
    return files, total


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files, total = build(folder)
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            status = validate(root=folder, out=io.StringIO())
            timings.append(time.perf_counter() - start)
            assert status == 0
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest_axion.cli", "validate", str(folder)],
                              capture_output=True, text=True, cwd=ROOT)
        command = time.perf_counter() - start
        print(f"{files} files, {total / 2**20:.1f} MiB: validate() median {statistics.median(timings):.3f} s "
              f"(min {min(timings):.3f}, max {max(timings):.3f}); `pytest-axion validate` command {command:.2f} s "
              f"including interpreter start; last line: {done.stdout.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
