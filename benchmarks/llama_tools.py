"""Build llama.cpp's own `llama-bench` and `llama-batched-bench` for side-by-side comparisons.

A thin wrapper of :mod:`pytest_axion.serve.build` (which also builds `llama-server` for served sessions):
the llama.cpp tree of the installed llama-cpp-python's sdist, its build defaults, linked against the installed
library's own ggml, llama and mtmd and cached under ``~/.cache/pytest-axion/llama-tools/<version>-lib<hash>/``
(another version's tools: the whole tree, under ``<version>/``).

    python benchmarks/llama_tools.py          # build (or find) the tools, print their paths
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_axion.serve.build import BENCH_TOOLS, build_programs, installed_version

__all__ = ["build_tools", "installed_version"]


def build_tools(version: str | None = None, *, jobs: int | None = None) -> dict[str, Path]:
    return build_programs(BENCH_TOOLS, version=version, jobs=jobs, say=print)


if __name__ == "__main__":
    for name, path in build_tools().items():
        print(f"{name}: {path}")
