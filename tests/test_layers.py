"""The package's modules form layers, and every import points down (issue 28).

Read from the source with ``ast`` (nothing is imported): every ``import`` and ``from ... import`` of every
module of pytest_axion, wherever it stands (top level, inside a function, under TYPE_CHECKING), relative ones
resolved. A unit is a top-level module (``stats``, ``records``) or a subpackage (``machine``, ``store``);
``pytest_axion`` itself is its ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_axion"
ROOT = "pytest_axion"

# Lowest first. A module may import its own unit (inside a package, any of its modules) and any unit of a lower
# layer; another unit of its own layer only where ALLOWED_SAME_LAYER says so, never a higher layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    # 0: leaves, importing nothing of pytest_axion
    (ROOT, "errors", "stats", "figures", "credentials", "children", "options", "files", "schemas", "transport",
     "budget"),
    # 1: pure records and statistics on top of the leaves
    ("records", "comparison"),
    # 2: the machine and the model file
    ("machine",),
    # 3: measuring (engines), stored files (store), llama.cpp's programs (serve), proxy models (proxy)
    ("engines", "store", "serve", "proxy"),
    # 4: promises and their verdicts
    ("promises",),
    # 5: the outputs
    ("report",),
    # 6..9: assembling a run
    ("settings", "runlock"),
    ("harness",),
    ("session", "cli"),
    ("plugin",),
)

# (importing module, imported module) pairs across units of one layer, each with its reason.
ALLOWED_SAME_LAYER: dict[tuple[str, str], str] = {
    # llama.cpp's programs are built with the ISA flags the worker probed, so that they run its kernels
    ("pytest_axion.serve.build", "pytest_axion.engines.worker"):
        "serve builds llama-server with the worker's build probe and its no-AMX CMake flags",
    # the llama-server deployment (--axion-serve N) builds the server and starts it, then measures it as an endpoint
    ("pytest_axion.engines.deployment", "pytest_axion.serve.build"): "--axion-serve builds llama-server once",
    ("pytest_axion.engines.deployment", "pytest_axion.serve.llama_server"): "--axion-serve starts llama-server",
}

LAYER_OF = {unit: index for index, units in enumerate(LAYERS) for unit in units}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported pytest_axion module) for every import in one module, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:   # `from pytest_axion import files` imports the module files
                submodule = f"{target}.{alias.name}"
                found.append((node.lineno, submodule if submodule in MODULES else target))
    return list(dict.fromkeys((line, name) for line, name in found if name == ROOT or name.startswith(ROOT + ".")))


def offending_imports() -> list[str]:
    offences = []
    for module, path in MODULES.items():
        unit = _unit(module)
        for line, target in imports_of(module, path):
            target_unit = _unit(target)
            where = f"{path.relative_to(PACKAGE.parent)}:{line}: {module} -> {target}"
            if unit not in LAYER_OF or target_unit not in LAYER_OF:
                offences.append(f"{where} (a unit missing from the layer table: add it)")
            elif target_unit == unit:
                continue
            elif target_unit == "plugin":
                offences.append(f"{where} (nothing imports the plugin: pytest loads it by its entry point)")
            elif LAYER_OF[target_unit] > LAYER_OF[unit]:
                offences.append(f"{where} (upward: layer {LAYER_OF[unit]} imports layer {LAYER_OF[target_unit]})")
            elif LAYER_OF[target_unit] == LAYER_OF[unit] and (module, target) not in ALLOWED_SAME_LAYER:
                offences.append(f"{where} (same layer {LAYER_OF[unit]}, not in ALLOWED_SAME_LAYER)")
    return offences


def test_every_import_points_down_the_layers():
    offences = offending_imports()
    for offence in offences:
        print(offence)
    assert not offences, f"{len(offences)} import(s) break the layers:\n" + "\n".join(offences)


def test_the_layer_table_names_every_unit_and_its_exceptions_are_used():
    units = {_unit(module) for module in MODULES}
    assert units == set(LAYER_OF), f"in the package, not the table: {sorted(units - set(LAYER_OF))}; " \
                                   f"in the table, not the package: {sorted(set(LAYER_OF) - units)}"
    used = {(module, target) for module, path in MODULES.items() for _, target in imports_of(module, path)}
    assert set(ALLOWED_SAME_LAYER) <= used, f"stale exceptions: {sorted(set(ALLOWED_SAME_LAYER) - used)}"


def _isinstance_engine_checks(path: Path) -> list[str]:
    return _engine_checks_in(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))


def _engine_checks_in(source: str, where: str) -> list[str]:
    """``isinstance(x, SomethingEngine)`` (or ``...EngineProcess``, alone or in a tuple) in one module's source."""
    def names(node: ast.expr) -> list[str]:
        if isinstance(node, ast.Tuple):
            return [name for item in node.elts for name in names(item)]
        if isinstance(node, ast.Name):
            return [node.id]
        if isinstance(node, ast.Attribute):
            return [node.attr]
        return []

    found = []
    for node in ast.walk(ast.parse(source, filename=where)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance"
                and len(node.args) == 2):
            found += [f"{where}:{node.lineno}: isinstance(..., {name})"
                      for name in names(node.args[1]) if name.endswith(("Engine", "EngineProcess"))]
    return found


def test_only_the_engines_ask_which_engine_they_hold():
    outside = [check for module, path in MODULES.items() if _unit(module) != "engines"
               for check in _isinstance_engine_checks(path)]
    for check in outside:
        print(check)
    assert not outside, "code outside engines/ branches on an engine's class:\n" + "\n".join(outside)


def test_the_engine_check_finds_a_planted_branch():
    source = (PACKAGE / "session" / "judging.py").read_text(encoding="utf-8")
    planted = source + "\nif isinstance(object(), (int, engines.PairedEngine)):\n    pass\n"
    assert _engine_checks_in(source, "judging.py") == []
    assert _engine_checks_in(planted, "judging.py") == [
        f"judging.py:{planted.count(chr(10)) - 1}: isinstance(..., PairedEngine)"]
