"""Build llama.cpp's own `llama-bench` and `llama-batched-bench` for side-by-side comparisons.

The tools are built from the llama.cpp tree inside the sdist of the *installed* llama-cpp-python
version, with llama-cpp-python's own build defaults (Release, native CPU flags, shared libraries), so
that both sides run the same kernels. Builds are cached per version under
``~/.cache/pytest-axion/llama-tools/<version>/``. A benchmark helper, never used by the plugin or CI.

    python benchmarks/llama_tools.py          # build (or find) the tools, print their paths
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

TOOLS = ("llama-bench", "llama-batched-bench")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-axion" / "llama-tools"


def installed_version() -> str:
    return metadata.version("llama-cpp-python")


def _download_sdist(version: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    found = sorted(into.glob(f"llama_cpp_python-{version}.tar.gz"))
    if found:
        return found[0]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(into),
         f"llama-cpp-python=={version}"],
        check=True,
    )
    return next(into.glob(f"llama_cpp_python-{version}.tar.gz"))


def _extract_llama_cpp(sdist: Path, into: Path) -> Path:
    source = into / "src"
    marker = source / "vendor" / "llama.cpp" / "CMakeLists.txt"
    if marker.exists():
        return marker.parent
    with tempfile.TemporaryDirectory(dir=into) as tmp:
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        (top,) = Path(tmp).iterdir()
        shutil.move(str(top), source)
    return marker.parent


def build_tools(version: str | None = None, *, jobs: int | None = None) -> dict[str, Path]:
    """Paths of the built tools for ``version`` (default: the installed one), building if needed."""
    version = version or installed_version()
    root = cache_root() / version
    bin_dir = root / "build" / "bin"
    if all((bin_dir / tool).exists() for tool in TOOLS):
        return {tool: bin_dir / tool for tool in TOOLS}
    llama_cpp_dir = _extract_llama_cpp(_download_sdist(version, root), root)
    build_dir = root / "build"
    subprocess.run(
        ["cmake", "-S", str(llama_cpp_dir), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
         "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
         "-DLLAMA_BUILD_SERVER=OFF"],
        check=True,
    )
    subprocess.run(
        ["cmake", "--build", str(build_dir), "--config", "Release", "-j", str(jobs or os.cpu_count() or 2),
         "--target", *TOOLS],
        check=True,
    )
    return {tool: bin_dir / tool for tool in TOOLS}


if __name__ == "__main__":
    for name, path in build_tools().items():
        print(f"{name}: {path}")
