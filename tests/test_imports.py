"""The source packages import one way and stay small: no import cycle between modules, and no module over
500 lines (``tests/`` and ``bench/`` aside).

Read from the source (AST), not by importing: every import counts, at module level and inside functions
(a cycle hidden in a function-level import is still a cycle), except those under ``if TYPE_CHECKING:``,
which never run. ``from kdcore import X`` is resolved through ``kdcore.PUBLIC`` to the module X comes from.
Checked per package, so each package's owner sees their own part.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kdcore

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kdcore", "tune", "results", "search_spaces")
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the packages (a package is its ``__init__``)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: module level and function level, none under TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def _target(name: str) -> str | None:
    """The module of ours that importing ``name`` runs (the longest known prefix), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """The modules of ours that ``module`` imports."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            edges.update(t for alias in node.names if (t := _target(alias.name)))
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            if base == "kdcore" and alias.name in kdcore.PUBLIC:  # the curated, lazy public API
                edges.add(kdcore.PUBLIC[alias.name][0])
            elif f"{base}.{alias.name}" in MODULES:  # from tune import cluster
                edges.add(f"{base}.{alias.name}")
            elif (t := _target(base)) is not None:
                edges.add(t)
    edges.discard(module)
    return edges


def _cycles() -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan)."""
    graph = {m: imports_of(m) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return components


def test_the_import_graph_sees_function_level_and_public_api_imports() -> None:
    """The reader itself: what it must find in modules whose imports are known."""
    assert "tune.study" in imports_of("tune.plan")
    # from tune import cluster; from kdcore import OPTIMIZERS (kdcore.PUBLIC), KDCoreError (kdcore's own)
    assert {"tune.commands", "tune.cluster", "tune.signals", "kdcore.config", "kdcore"} <= imports_of("tune.cli")
    assert "tune.baseline" in imports_of("tune.commands")  # a function-level import
    assert "kdcore.config" in imports_of("search_spaces.space")  # from kdcore import ExperimentConfig
    assert not any(m.startswith("kdcore.") and m != "kdcore.errors" for m in imports_of("kdcore"))  # lazy


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    cycles = [c for c in _cycles() if any(m == package or m.startswith(f"{package}.") for m in c)]
    assert cycles == [], f"modules that import each other (directly or round a loop): {cycles}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_over_500_lines(package: str) -> None:
    sizes = {str(path.relative_to(ROOT)): len(path.read_text().splitlines())
             for name, path in MODULES.items() if name == package or name.startswith(f"{package}.")}
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}


@pytest.mark.parametrize("argv", [["--help"], ["spaces"], ["train", "--help"]])
def test_the_cli_stays_light(argv: list[str]) -> None:
    """``kdtune --help`` and ``kdtune spaces`` answer without the heavy libraries (only commands that need
    them import them, when they run)."""
    import subprocess
    import sys

    code = ("import sys; from tune.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('ray', 'torch', 'optuna', 'pandas') if m in sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.stderr.strip().splitlines()[-1] == "[]", proc.stderr
