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

import hashlib
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
from pytest_axion.machine.model import sha256_cached
from pytest_axion.serve.sdist import NotFound, fetch_sdist

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
    try:
        return fetch_sdist("llama-cpp-python", version, into)
    except NotFound as err:   # pip knows more ways to reach an index (a keyring, say): its turn
        with open(log, "a") as out:
            out.write(f"pytest-axion: fetching the sdist from pip's indexes directly failed ({err}); "
                      "asking pip download\n")
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
        if _library_files(folder):
            return folder
    return None


def _library_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.glob("lib*.so*") if path.is_file())


def library_fingerprint(folder: Path, *, cache_dir: Path | None = None) -> str:
    """A short hash of the library files' contents: programs linked against one build of the library are cached
    apart from another's (two environments of one version, or a reinstall with other flags). Each file's sha256
    is the model's cached one (:func:`sha256_cached`), read again only when the file changes."""
    digest = hashlib.sha256()
    for path in _library_files(folder):
        digest.update(f"{path.name}\0{sha256_cached(path, cache_dir=cache_dir or default_cache_dir())}\n".encode())
    return digest.hexdigest()[:10]


def provided_targets(folder: Path) -> set[str]:
    """cmake target names of the libraries in ``folder``: ``libggml-base.so.0.25.3`` -> ``ggml-base``."""
    return {match.group(1) for path in _library_files(folder)
            if (match := re.fullmatch(r"lib(.+?)\.so(\..*)?", path.name))}


_DOT_NODE = re.compile(r'"(node\d+)" \[ label = "([^"\\]+)(?:\\n[^"]*)?", shape = (\w+) \]')
_DOT_EDGE = re.compile(r'"(node\d+)" -> "(node\d+)"')
# cmake's graphviz shapes of what has nothing to compile: an interface library, a link item that is no target
_NOTHING_TO_BUILD = {"pentagon", "septagon"}


def targets_to_build(dot: str, target: str, provided: set[str]) -> list[str]:
    """The targets ``target`` needs, dependencies first, from cmake's ``--graphviz`` file of ``target``: those in
    ``provided`` (and what only they need) left out, and what has nothing to compile (interface libraries, link
    flags such as ``-pthread``)."""
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
        name = names.get(node)
        if node in seen or name is None or name in provided:
            return
        seen.add(node)
        for dependency in needs.get(node, []):
            visit(dependency)
        if shapes[node] not in _NOTHING_TO_BUILD and not name.startswith("-") and "::" not in name:
            order.append(name)

    visit(roots[0])
    return order


def fast_rules(top_makefile: str) -> dict[str, tuple[str, str]]:
    """target -> (its ``build.make``, the rule that builds it) from the top Makefile's ``<target>/fast`` rules,
    which run the target's own makefile without its dependencies."""
    rules = re.findall(r"^([\w.+-]+)/fast:\n\t\$\(MAKE\) \$\(MAKESILENT\) -f (\S+) (\S+)$", top_makefile,
                       flags=re.MULTILINE)
    return {name: (build_make, rule) for name, build_make, rule in rules}


def objects_of(build_make: str, build_make_path: str) -> list[str]:
    """The object files a target's ``build.make`` compiles, as its rules name them (from the build folder)."""
    block = re.search(r"^\w+_OBJECTS = \\\n((?:\"[^\"]+\"(?: \\)?\n)*)", build_make, flags=re.MULTILINE)
    folder = build_make_path.split("CMakeFiles/")[0]
    return [folder + name for name in re.findall(r'"([^"]+)"', block.group(1))] if block else []


def schedule_makefile(steps: Sequence[tuple[str, str, str, Sequence[str]]]) -> str:
    """A makefile that compiles the objects of every step (``name, build.make, build rule, objects``, in
    dependency order) side by side and links them in order: built one target at a time, a one-file target (the
    HTTP library, 24 s) or a target's last long file (the server's context, 16 s) held one of two cores idle.
    A target with nothing to compile (it generates sources) runs first and before every later step's compiling;
    a link waits for every earlier step's."""
    lines = ["# written by pytest-axion: compile all targets' objects at once, link in dependency order",
             f".PHONY: all {' '.join(f'compile-{i} link-{i}' for i in range(len(steps)))}",
             f"all: {' '.join(f'link-{i}' for i in range(len(steps)))}", ""]
    generators: list[str] = []
    linked: list[str] = []
    for i, (_name, build_make, rule, objects) in enumerate(steps):
        lines += [f"compile-{i}: {' '.join(generators)}".rstrip()]
        if objects:
            lines += [f"\t+$(MAKE) -f {build_make} {' '.join(objects)}"]
        lines += [f"link-{i}: {' '.join([f'compile-{i}', *(linked if objects else ())])}",
                  f"\t+$(MAKE) -f {build_make} {rule}", ""]
        (linked if objects else generators).append(f"link-{i}")
    return "\n".join(lines)


def _compile_side_by_side(build_dir: Path, needed: Sequence[str], jobs: int, log: Path) -> None:
    """Build ``needed`` (dependency order) through :func:`schedule_makefile`; any failure is left to the target by
    target build that follows, which redoes only what is missing."""
    try:
        rules = fast_rules((build_dir / "Makefile").read_text(errors="replace"))
        steps = []
        for name in needed:
            build_make, rule = rules[name]
            steps.append((name, build_make, rule,
                          objects_of((build_dir / build_make).read_text(errors="replace"), build_make)))
        schedule = build_dir / "axion-schedule.mk"
        schedule.write_text(schedule_makefile(steps))
        _run(["make", "-C", str(build_dir), "-f", schedule.name, "-j", str(jobs)],
             f"building {', '.join(needed)} side by side", log)
    except (KeyError, OSError, BuildError) as err:
        with open(log, "a") as out:
            out.write(f"\npytest-axion: building side by side stopped ({err}); building target by target\n")


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


def _make_targets(build_dir: Path) -> set[str]:
    """The targets the build's Makefile knows (``make help``)."""
    listed = subprocess.run(["make", "-C", str(build_dir), "help"], capture_output=True, text=True, check=False)
    return {line[4:].split()[0] for line in listed.stdout.splitlines() if line.startswith("... ") and line[4:].strip()}


def _copy_library(library: Path, bin_dir: Path) -> None:
    """The library's files into the build's library folder; files already there are left alone (programs of this
    folder may be running on them), and each new one appears whole (written aside, then renamed)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for path in _library_files(library):
        copied = bin_dir / path.name
        if copied.exists():
            continue
        aside = bin_dir / f".{path.name}.part"
        shutil.copyfile(path, aside)   # the contents, whether the wheel ships a file or a symlink to one
        os.replace(aside, copied)


def _build_against_library(source: Path, build_dir: Path, targets: Sequence[str], library: Path, jobs: int,
                           log: Path) -> None:
    """Compile only what the installed library does not ship, linked against copies of it; each program is
    marked built once it runs (``<program>.ok``)."""
    if not all((build_dir / f"targets.dot.{target}").exists() for target in targets):
        _configure(source, build_dir, (), log, makefiles=True)
    provided = provided_targets(library)
    _copy_library(library, build_dir / "bin")
    known = _make_targets(build_dir)
    needed = {target: [name for name in targets_to_build((build_dir / f"targets.dot.{target}").read_text(
        errors="replace"), target, provided) if name in known] for target in targets}
    _compile_side_by_side(build_dir, list(dict.fromkeys(name for names in needed.values() for name in names)), jobs,
                          log)
    for target in targets:
        for name in needed[target]:
            _run(["make", "-C", str(build_dir), "-j", str(jobs), "--", f"{name}/fast"], f"building {name}", log)
        if not _runs(build_dir / "bin" / target):
            raise BuildError(f"{target} built against the installed library does not run")
        (build_dir / f"{target}.ok").write_text("")


def _built_against_library(build_dir: Path, targets: Sequence[str]) -> bool:
    return all((build_dir / f"{target}.ok").exists() for target in targets)


def build_programs(targets: Sequence[str] = BENCH_TOOLS, *, version: str | None = None, jobs: int | None = None,
                   say: Callable[[str], None] | None = None,
                   library_system_info: str | None = None) -> dict[str, Path]:
    """Paths of the built ``targets`` for ``version`` (default: the installed llama-cpp-python), building if needed.

    For the installed version, linked against the installed library's own files, cached by their fingerprint under
    ``<version>-lib<hash>/``; if that fails (or for another version), the whole tree with the installed library's
    choice of AMX kernels (``library_system_info``, probed when not given), under ``<version>[-noamx]/``."""
    installed = _installed_or_none()
    version = version or installed or installed_version()   # nothing installed and no version: the usual error
    jobs = jobs or os.cpu_count() or 2
    library = library_dir() if shutil.which("make") and version == installed else None
    if library is not None:
        root = cache_root() / f"{version}-lib{library_fingerprint(library)}"
        build_dir = root / "build"
        if _built_against_library(build_dir, targets):
            return {target: build_dir / "bin" / target for target in targets}
        root.mkdir(parents=True, exist_ok=True)
        failed = root / "failed"   # once failed, later sessions build the whole tree at once
        with FileLock(str(root / "build.lock")):
            missing = [target for target in targets if not (build_dir / f"{target}.ok").exists()]
            if missing and not failed.exists():
                log = root / "build.log"
                if say is not None:
                    say(f"building {', '.join(missing)} from llama-cpp-python {version}'s llama.cpp tree against "
                        f"the installed library (once, a few minutes; cached in {root}; log {log})")
                source = _extract_llama_cpp(_download_sdist(version, root, log), root)
                try:
                    _build_against_library(source, build_dir, missing, library, jobs, log)
                except Exception as err:   # whatever went wrong on this path, the whole tree is the way out
                    failed.write_text(f"{type(err).__name__}: {err}\n")
                    with open(log, "a") as out:
                        out.write(f"\npytest-axion: building against the installed library failed ({err}); "
                                  "building the whole tree instead\n")
            if _built_against_library(build_dir, targets):
                return {target: build_dir / "bin" / target for target in targets}
    return _build_whole_tree(targets, version=version, jobs=jobs, say=say, library_system_info=library_system_info)


def _installed_or_none() -> str | None:
    try:
        return installed_version()
    except metadata.PackageNotFoundError:
        return None


def _build_whole_tree(targets: Sequence[str], *, version: str, jobs: int, say: Callable[[str], None] | None,
                      library_system_info: str | None) -> dict[str, Path]:
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
            _configure(source, build_dir, isa_args, log, makefiles=False)
            _run(["cmake", "--build", str(build_dir), "--config", "Release", "-j", str(jobs), "--target", *missing],
                 f"building {', '.join(missing)}", log)
    return {target: bin_dir / target for target in targets}
