"""The package's import structure: no import circles in hwcompile/, passes/, targets/
(function-level imports included), and the core reaches targets and the examples' model
library only where it should."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the package it installs as (pyproject.toml's package-dir).
PACKAGES = {ROOT / "hwcompile": "hwcompile", ROOT / "passes": "hwcompile.passes",
            ROOT / "targets": "hwcompile.targets"}
# The registries import the built-in passes and targets the way they load entry points.
REGISTRY_EDGES = {("hwcompile.pipeline", "hwcompile.passes"),
                  ("hwcompile.target", "hwcompile.targets")}


def modules(packages: dict[Path, str]) -> dict[str, Path]:
    """Module name -> file, for every .py file under the package folders."""
    found = {}
    for folder, name in packages.items():
        for file in sorted(folder.rglob("*.py")):
            parts = list(file.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([name, *parts])] = file
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and "TYPE_CHECKING" in ast.unparse(block.test)
               for stmt in block.body for node in ast.walk(stmt)}
    return [node for node in ast.walk(tree) if id(node) not in skipped]


def imported(module: str, file: Path, known: dict[str, Path]) -> set[str]:
    """The known modules ``module`` imports anywhere in its file (functions included)."""
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    targets = set()
    for node in _runtime_nodes(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            source = ".".join(p for p in (base, node.module or "") if p)
            names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import a.b.c`: the deepest known module
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
    return targets


def import_graph(packages: dict[Path, str]) -> nx.DiGraph:
    known = modules(packages)
    graph = nx.DiGraph()
    graph.add_nodes_from(known)
    for module, file in known.items():
        graph.add_edges_from((module, target) for target in imported(module, file, known))
    return graph


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    graph = graph.copy()
    graph.remove_edges_from(REGISTRY_EDGES)
    return [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    return import_graph(PACKAGES)


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_core_reaches_targets_only_through_the_registry(graph):
    core = [m for m in graph if not m.startswith(("hwcompile.passes", "hwcompile.targets"))]
    direct = sorted((m, t) for m in core for t in graph.successors(m)
                    if t.startswith("hwcompile.targets") and (m, t) not in REGISTRY_EDGES)
    assert direct == []


def test_compiler_does_not_use_the_examples_model_library(graph):
    """hwcompile.models (the examples', tests' and benchmarks' models) is no compiler part."""
    users = sorted(m for m in graph if not m.startswith("hwcompile.models")
                   for t in graph.successors(m) if t.startswith("hwcompile.models"))
    assert users == []


def test_cycle_check_finds_a_circle(tmp_path):
    """The checks above can fail: a circle through a function-level, relative import (and
    none through an import for type annotations only)."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("import pkg.a\n\ndef g():\n    pass\n")
    (pkg / "e.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from pkg import d\n")
    (pkg / "d.py").write_text("from pkg import c, e\n")
    assert cycles(import_graph({pkg: "pkg"})) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
