"""Build llama.cpp's own programs (``llama-server``, ``llama-bench``, ``llama-batched-bench``) from the llama.cpp
tree inside the sdist of the *installed* llama-cpp-python, so that they run the same kernels as the library.

Release, native CPU flags, shared libraries, no curl or OpenSSL (offline, as the CI machines are); the
sdist comes from the package index pip already uses (never a model hub). Built once per version and
cached under ``~/.cache/pytest-axion/llama-tools/<version>/`` (``XDG_CACHE_HOME`` moves it); a build
already there is reused, and targets missing from it are added to the same build folder. A lock file
keeps two sessions (xdist workers) from building at once.

For the installed version, the libraries the installed package ships (ggml, llama, mtmd) are not compiled
again: they are copied into the build's library folder and only the rest (common, the server, the tools) is
compiled and linked against them, each target alone (a Makefile's ``TARGET/fast``) in the order of the
dependency graph cmake writes (``--graphviz``). The programs then run the library's own kernels, and the
build takes half the time. If that fails in any way, the whole tree is built as before.
"""

from __future__ import annotations

import importlib.util
import os
import re
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


def library_dir() -> Path | None:
    """The folder of shared libraries the installed llama-cpp-python ships (``llama_cpp/lib``), without importing
    it; None when there is none."""
    spec = importlib.util.find_spec("llama_cpp")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(location) / "lib"
        if any(folder.glob("lib*.so*")):
            return folder
    return None


def provided_targets(folder: Path) -> set[str]:
    """cmake target names of the libraries in ``folder``: ``libggml-base.so.0.25.3`` -> ``ggml-base``."""
    return {match.group(1) for path in folder.iterdir() if (match := re.fullmatch(r"lib(.+?)\.so(\..*)?", path.name))}


_DOT_NODE = re.compile(r'"(node\d+)" \[ label = "([^"\\]+)(?:\\n[^"]*)?", shape = (\w+) \]')
_DOT_EDGE = re.compile(r'"(node\d+)" -> "(node\d+)"')
_NOTHING_TO_BUILD = {"pentagon"}   # cmake's graphviz shape of an interface library


def targets_to_build(dot: str, target: str, provided: set[str]) -> list[str]:
    """The targets ``target`` needs, dependencies first, from cmake's ``--graphviz`` file of ``target``: those in
    ``provided`` (and what only they need) left out, interface libraries too (nothing to compile)."""
    names: dict[str, str] = {}
    shapes: dict[str, str] = {}
    for node, name, shape in _DOT_NODE.findall(dot):
        names[node], shapes[node] = name, shape
    needs: dict[str, list[str]] = {}
    for before, after in _DOT_EDGE.findall(dot):
        needs.setdefault(before, []).append(after)
    roots = [node for node, name in names.items() if name == target]
    if not roots:
        raise BuildError(f"cmake's dependency graph has no target {target}")
    order: list[str] = []
    seen: set[str] = set()

    def visit(node: str) -> None:
        if node in seen or names[node] in provided:
            return
        seen.add(node)
        for dependency in needs.get(node, []):
            visit(dependency)
        if shapes[node] not in _NOTHING_TO_BUILD:
            order.append(names[node])

    visit(roots[0])
    return order


def _runs(program: Path) -> bool:
    try:
        return subprocess.run([str(program), "--version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _configure(source: Path, build_dir: Path, isa_args: Sequence[str], log: Path, *, makefiles: bool) -> None:
    build_dir.mkdir(parents=True, exist_ok=True)
    graph = []
    if makefiles:
        # custom targets (the server's web assets) are in the graph only when asked for
        (build_dir / "CMakeGraphVizOptions.cmake").write_text("set(GRAPHVIZ_CUSTOM_TARGETS TRUE)\n")
        graph = ["-G", "Unix Makefiles", f"--graphviz={build_dir / 'targets.dot'}"]
    _run(["cmake", "-S", str(source), "-B", str(build_dir), *graph, "-DCMAKE_BUILD_TYPE=Release",
          "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
          "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON", *isa_args],
         "configuring llama.cpp with cmake", log)


def _build_against_library(source: Path, build_dir: Path, targets: Sequence[str], library: Path, jobs: int,
                           isa_args: Sequence[str], log: Path) -> bool:
    """Compile only what the installed library does not ship, linked against its copies; False if that failed
    (the log says where), leaving the caller to build the whole tree."""
    try:
        cache = build_dir / "CMakeCache.txt"
        if cache.exists() and "CMAKE_GENERATOR:INTERNAL=Unix Makefiles" not in cache.read_text():
            return False
        if not all((build_dir / f"targets.dot.{target}").exists() for target in targets):
            _configure(source, build_dir, isa_args, log, makefiles=True)
        provided = provided_targets(library)
        bin_dir = build_dir / "bin"
        bin_dir.mkdir(exist_ok=True)
        for path in library.iterdir():
            copied = bin_dir / path.name
            if copied.is_symlink() or copied.exists():
                copied.unlink()
            shutil.copy2(path, copied, follow_symlinks=False)
        for target in targets:
            for needed in targets_to_build((build_dir / f"targets.dot.{target}").read_text(), target, provided):
                _run(["make", "-C", str(build_dir), "-j", str(jobs), f"{needed}/fast"], f"building {needed}", log)
            if not _runs(bin_dir / target):
                raise BuildError(f"{target} built against the installed library does not run")
    except (BuildError, OSError) as err:
        with open(log, "a") as out:
            out.write(f"\npytest-axion: building against the installed library failed ({err}); building the whole "
                      "tree\n")
        return False
    return True


def build_programs(targets: Sequence[str] = BENCH_TOOLS, *, version: str | None = None, jobs: int | None = None,
                   say: Callable[[str], None] | None = None,
                   library_system_info: str | None = None) -> dict[str, Path]:
    """Paths of the built ``targets`` for ``version`` (default: the installed llama-cpp-python), building if needed,
    with the installed library's choice of AMX kernels (``library_system_info``, probed when not given)."""
    installed = installed_version()
    version = version or installed
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
            jobs = jobs or os.cpu_count() or 2
            library = library_dir() if version == installed and shutil.which("make") else None
            fresh = not (build_dir / "CMakeCache.txt").exists()
            if library is None or not _build_against_library(source, build_dir, missing, library, jobs, isa_args,
                                                             log):
                if library is not None and fresh:   # a half-done build against the library is not built on
                    shutil.rmtree(build_dir, ignore_errors=True)
                _configure(source, build_dir, isa_args, log, makefiles=False)
                _run(["cmake", "--build", str(build_dir), "--config", "Release", "-j", str(jobs), "--target",
                      *missing], f"building {', '.join(missing)}", log)
    return {target: bin_dir / target for target in targets}
