"""Build llama.cpp's own programs (``llama-server``, ``llama-bench``, ``llama-batched-bench``) from the llama.cpp
tree inside the sdist of the *installed* llama-cpp-python, so that they run the same kernels as the library.

Release, native CPU flags, shared libraries, no curl or OpenSSL (offline, as the CI machines are); the
sdist comes from the package index pip already uses (never a model hub). Built once per version and
cached under ``~/.cache/pytest-axion/llama-tools/<version>/`` (``XDG_CACHE_HOME`` moves it); a build
already there is reused, and targets missing from it are added to the same build folder. A lock file
keeps two sessions (xdist workers) from building at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from filelock import FileLock

from pytest_axion.engines.worker import NO_AMX_CMAKE_ARGS, probe_build
from pytest_axion.errors import AxionError
from pytest_axion.files import default_cache_dir

BENCH_TOOLS = ("llama-bench", "llama-batched-bench")
SERVER = "llama-server"


class BuildError(AxionError):
    """llama.cpp's programs could not be built."""


def cache_root() -> Path:
    return default_cache_dir() / "llama-tools"


def installed_version() -> str:
    return metadata.version("llama-cpp-python")


def _run(command: list[str], what: str, log: Path) -> None:
    with open(log, "a") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:] or ["no output"]
        raise BuildError(f"{what} failed (exit code {done.returncode}): {tail[0].strip()}: see {log}; a C/C++ "
                         "compiler and CMake are needed")


def _download_sdist(version: str, into: Path, log: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    found = sorted(into.glob(f"llama_cpp_python-{version}.tar.gz"))
    if found:
        return found[0]
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(into),
          f"llama-cpp-python=={version}"], f"downloading the llama-cpp-python {version} sdist", log)
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


def cpu_has_amx(cpuinfo: str | None = None) -> bool:
    """Whether this CPU offers AMX-INT8, which ``-march=native`` compiles llama.cpp's AMX kernels for."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return False
    return any(line.startswith("flags") and "amx_int8" in line.split() for line in cpuinfo.splitlines())


def isa_cmake_args(library_system_info: str, *, cpu_amx: bool) -> tuple[str, ...]:
    """cmake arguments that give the programs the library's kernels: ``-march=native`` adds AMX on a CPU that has
    it, where the installed library may have been built without (its AMX kernels crash on some machines)."""
    if cpu_amx and "AMX_INT8 = 1" not in library_system_info:
        return tuple(NO_AMX_CMAKE_ARGS.split())
    return ()


def build_programs(targets: Sequence[str] = BENCH_TOOLS, *, version: str | None = None, jobs: int | None = None,
                   say: Callable[[str], None] | None = None,
                   library_system_info: str | None = None) -> dict[str, Path]:
    """Paths of the built ``targets`` for ``version`` (default: the installed llama-cpp-python), building if needed,
    with the installed library's choice of AMX kernels (``library_system_info``, probed when not given)."""
    version = version or installed_version()
    if library_system_info is None:
        library_system_info = probe_build()["system_info"]
    isa_args = isa_cmake_args(library_system_info, cpu_amx=cpu_has_amx())
    root = cache_root() / (version + ("-noamx" if isa_args else ""))
    bin_dir = root / "build" / "bin"
    if all((bin_dir / target).exists() for target in targets):
        return {target: bin_dir / target for target in targets}
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / "build.lock")):
        missing = [target for target in targets if not (bin_dir / target).exists()]
        if missing:
            log = root / "build.log"
            if say is not None:
                say(f"building {', '.join(missing)} from llama-cpp-python {version}'s llama.cpp tree (once, a few "
                    f"minutes; cached in {root}; log {log})")
            source = _extract_llama_cpp(_download_sdist(version, root, log), root)
            build_dir = root / "build"
            _run(["cmake", "-S", str(source), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                  "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                  "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON", *isa_args],
                 "configuring llama.cpp with cmake", log)
            _run(["cmake", "--build", str(build_dir), "--config", "Release", "-j", str(jobs or os.cpu_count() or 2),
                  "--target", *missing], f"building {', '.join(missing)}", log)
    return {target: bin_dir / target for target in targets}
