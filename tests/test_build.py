"""How llama.cpp's own programs are built: the installed library's kernels, and only what it does not ship (pure
logic)."""

import re
from pathlib import Path

import pytest

from pytest_axion.serve import build
from pytest_axion.serve.build import (
    BuildError,
    cpu_has_amx,
    isa_cmake_args,
    library_fingerprint,
    provided_targets,
    targets_to_build,
)

SPR_FLAGS = "flags\t\t: fpu avx512f avx512_vnni amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d"
ZEN4_FLAGS = "flags\t\t: fpu avx512f avx512_vnni avx512_bf16"


def test_an_amx_cpu_is_told_from_its_cpuinfo_flags():
    assert cpu_has_amx(f"processor\t: 0\n{SPR_FLAGS}\n")
    assert not cpu_has_amx(f"processor\t: 0\n{ZEN4_FLAGS}\n")
    assert not cpu_has_amx("model name\t: says amx_int8 in its name\n")   # only the flags line counts


def test_programs_leave_out_amx_only_where_the_library_was_built_without_it():
    without = "CPU : AVX512 = 1 | AVX512_VNNI = 1 | LLAMAFILE = 1 |"
    with_amx = "CPU : AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 |"
    assert isa_cmake_args(without, cpu_amx=True) == ("-DCMAKE_C_FLAGS=-mno-amx-int8", "-DCMAKE_CXX_FLAGS=-mno-amx-int8")
    assert isa_cmake_args(with_amx, cpu_amx=True) == ()
    assert isa_cmake_args(without, cpu_amx=False) == ()   # -march=native adds no AMX on a CPU without it


# cmake 3.25's --graphviz file of llama-server, as written for llama-cpp-python 0.3.36's llama.cpp tree
SERVER_GRAPH = (Path(__file__).parent / "data" / "llama-server.graphviz.dot").read_text()
NODE = re.compile(r'"(node\d+)" \[ label = "([^"\\]+)')
EDGE = re.compile(r'"(node\d+)" -> "(node\d+)"')


def dependencies(graph):
    names = dict(NODE.findall(graph))
    return [(names[a], names[b]) for a, b in EDGE.findall(graph)]


def test_only_what_the_installed_library_does_not_ship_is_built_dependencies_first():
    shipped = {"llama", "ggml", "ggml-base", "ggml-cpu", "mtmd"}
    order = targets_to_build(SERVER_GRAPH, "llama-server", shipped)
    assert order[-1] == "llama-server" and "llama-common" in order and "server-context" in order
    # nothing the library ships, nothing only it needs (vendor-hash, under mtmd), nothing without a build (the
    # interface libraries nlohmann, sheredom, miniaudio, stb)
    assert not set(order) & (shipped | {"vendor-hash", "nlohmann", "sheredom", "miniaudio", "stb"})
    for needs, needed in dependencies(SERVER_GRAPH):
        if needs in order and needed in order:
            assert order.index(needed) < order.index(needs), (needs, needed)
    everything = targets_to_build(SERVER_GRAPH, "llama-server", set())
    assert shipped | {"vendor-hash"} <= set(everything)
    assert everything.index("ggml-base") < everything.index("ggml") < everything.index("llama")
    with pytest.raises(BuildError, match="no target llama-bench"):
        targets_to_build(SERVER_GRAPH, "llama-bench", set())


def test_a_link_flag_in_the_graph_is_not_a_target():
    # where glibc is older than 2.34, cmake's thread library is the flag -pthread: a node of its own
    graph = SERVER_GRAPH.replace("}", '    "node99" [ label = "-pthread", shape = septagon ];\n'
                                      '    "node13" -> "node99"  // llama-server-impl -> -pthread\n}')
    assert "-pthread" not in targets_to_build(graph, "llama-server", set())


def test_the_librarys_files_name_its_cmake_targets_and_fingerprint_its_build(tmp_path):
    for name in ("libggml-base.so", "libggml-base.so.0", "libllama.so.0.5.0", "libmtmd.so", "README.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / "libsub.so.d").mkdir()
    assert provided_targets(tmp_path) == {"ggml-base", "llama", "mtmd"}
    before = library_fingerprint(tmp_path, cache_dir=tmp_path / "cache")
    (tmp_path / "libllama.so.0.5.0").write_text("another build of the same version")
    assert library_fingerprint(tmp_path, cache_dir=tmp_path / "cache") != before


@pytest.fixture
def fake_library(tmp_path, monkeypatch):
    """An installed library of two files, the cache in tmp_path, and no download, compiler or cmake."""
    library = tmp_path / "site" / "llama_cpp" / "lib"
    library.mkdir(parents=True)
    (library / "libllama.so.0").write_text("llama")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "library_dir", lambda: library)
    monkeypatch.setattr(build, "installed_version", lambda: "9.9.9")
    monkeypatch.setattr(build, "_download_sdist", lambda version, into, log: into / "sdist.tar.gz")
    monkeypatch.setattr(build, "_extract_llama_cpp", lambda sdist, into: into / "src")
    whole_tree = []

    def build_whole_tree(targets, **_):
        whole_tree.append(tuple(targets))
        return {target: Path("/whole") / target for target in targets}

    monkeypatch.setattr(build, "_build_whole_tree", build_whole_tree)
    return library, whole_tree


def faked_builds(monkeypatch, fails_with=None):
    """Builds against the library that only record their targets: each leaves a binary that ran (its ``.ok``
    marker), or, with ``fails_with``, a binary that never ran and that error."""
    calls = []

    def build_against_library(source, build_dir, targets, library, jobs, log):
        calls.append(tuple(targets))
        (build_dir / "bin").mkdir(parents=True, exist_ok=True)
        for target in targets:
            (build_dir / "bin" / target).write_text("built")
            if fails_with is None:
                (build_dir / f"{target}.ok").write_text("")
        if fails_with is not None:
            raise fails_with

    monkeypatch.setattr(build, "_build_against_library", build_against_library)
    return calls


def test_a_failed_build_against_the_library_falls_back_to_the_whole_tree_once_and_remembers(fake_library,
                                                                                             monkeypatch):
    _, whole_tree = fake_library
    attempts = faked_builds(monkeypatch, fails_with=KeyError("node7"))
    assert build.build_programs(("llama-server",)) == {"llama-server": Path("/whole/llama-server")}
    assert build.build_programs(("llama-server",)) == {"llama-server": Path("/whole/llama-server")}
    assert attempts == [("llama-server",)] and whole_tree == [("llama-server",)] * 2
    (root,) = (build.cache_root()).glob("9.9.9-lib*")
    assert "KeyError" in (root / "failed").read_text()
    assert "building the whole tree instead" in (root / "build.log").read_text()


def test_programs_built_against_the_library_are_reused_and_a_new_build_of_it_gets_its_own(fake_library,
                                                                                          monkeypatch):
    library, whole_tree = fake_library
    built = faked_builds(monkeypatch)
    first = build.build_programs(("llama-server",))["llama-server"]
    assert build.build_programs(("llama-server",))["llama-server"] == first and built == [("llama-server",)]
    (library / "libllama.so.0").write_text("reinstalled with other flags")
    assert build.build_programs(("llama-server",))["llama-server"] != first and len(built) == 2
    assert whole_tree == []


TOP_MAKEFILE = """\
# Target rules for targets named llama-common

# fast build rule for target.
llama-common/fast:
\t$(MAKE) $(MAKESILENT) -f common/CMakeFiles/llama-common.dir/build.make common/CMakeFiles/llama-common.dir/build
.PHONY : llama-common/fast
"""
COMMON_BUILD_MAKE = """\
# Object files for target llama-common
llama__common_OBJECTS = \\
"CMakeFiles/llama-common.dir/arg.cpp.o" \\
"CMakeFiles/llama-common.dir/parsers/gpt-oss.cpp.o"

# External object files for target llama-common
llama__common_EXTERNAL_OBJECTS =
"""


def test_each_targets_makefile_and_objects_are_read_as_cmake_writes_them():
    assert build.fast_rules(TOP_MAKEFILE) == {"llama-common": ("common/CMakeFiles/llama-common.dir/build.make",
                                                               "common/CMakeFiles/llama-common.dir/build")}
    assert build.objects_of(COMMON_BUILD_MAKE, "common/CMakeFiles/llama-common.dir/build.make") == [
        "common/CMakeFiles/llama-common.dir/arg.cpp.o", "common/CMakeFiles/llama-common.dir/parsers/gpt-oss.cpp.o"]


def test_objects_compile_side_by_side_after_generated_sources_and_links_follow_the_order():
    steps = [("http", "h.make", "h/build", ["h.o"]), ("assets", "a.make", "a/build", []),
             ("common", "c.make", "c/build", ["c1.o", "c2.o"]), ("server", "s.make", "s/build", ["s.o"])]
    rules = {}
    for line in build.schedule_makefile(steps).splitlines():
        if line.startswith(("compile-", "link-")):
            name, _, prerequisites = line.partition(":")
            rules[name] = prerequisites.split()
    assert rules == {"compile-0": [], "link-0": ["compile-0"], "compile-1": [], "link-1": ["compile-1"],
                     "compile-2": ["link-1"], "link-2": ["compile-2", "link-0"],
                     "compile-3": ["link-1"], "link-3": ["compile-3", "link-0", "link-2"]}


PROJECT = """\
cmake_minimum_required(VERSION 3.16)
project(sides C)
add_custom_command(OUTPUT generated.h COMMAND ${CMAKE_COMMAND} -E copy ${CMAKE_CURRENT_SOURCE_DIR}/value.in generated.h)
add_custom_target(assets DEPENDS generated.h)
add_library(base STATIC base.c)
add_library(upper STATIC upper.c)
target_include_directories(upper PRIVATE ${CMAKE_CURRENT_BINARY_DIR})
add_dependencies(upper assets)
target_link_libraries(upper PUBLIC base)
add_executable(program main.c)
target_link_libraries(program PRIVATE upper)
"""


def test_a_real_cmake_project_builds_side_by_side_and_a_broken_one_is_left_to_the_target_by_target_build(tmp_path):
    source, build_dir, log = tmp_path / "src", tmp_path / "build", tmp_path / "build.log"
    source.mkdir()
    (source / "CMakeLists.txt").write_text(PROJECT)
    (source / "value.in").write_text("#define VALUE 42\n")
    (source / "base.c").write_text("int base(void) { return 1; }\n")
    (source / "upper.c").write_text('#include "generated.h"\nint base(void);\nint upper(void) { return base() + '
                                    'VALUE; }\n')
    (source / "main.c").write_text("int upper(void);\nint main(void) { return upper() == 43 ? 0 : 1; }\n")
    build._run(["cmake", "-S", str(source), "-B", str(build_dir), "-G", "Unix Makefiles"], "configuring", log)
    build._compile_side_by_side(build_dir, ["assets", "base", "upper", "program"], 2, log)
    assert "stopped" not in log.read_text()
    assert build._runs(build_dir / "program")

    (source / "upper.c").write_text("this is not C\n")
    build._compile_side_by_side(build_dir, ["assets", "base", "upper", "program"], 2, log)
    assert "pytest-axion: building side by side stopped (building assets, base, upper, program side by side " \
           "failed (exit code 2)" in log.read_text()
    build._compile_side_by_side(build_dir, ["nothing-cmake-knows"], 2, log)
    assert "building side by side stopped ('nothing-cmake-knows')" in log.read_text()
