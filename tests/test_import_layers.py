"""Modules form layers: no two modules of the shipped packages import each other, directly or
around a circle, whether at module level, under ``TYPE_CHECKING`` or inside a function.

A package's ``__init__`` only re-exports, so it is left out of the graph (a module importing
``hookimpl`` from ``cxr_attrib`` is not a circle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "cxr_attrib": ROOT / "cxr_attrib",
    "cxr_attrib_plugins": ROOT / "plugins" / "cxr_attrib_plugins",
    "cxr_attrib_phantom": ROOT / "plugins" / "cxr_attrib_phantom",
    "cxr_attrib_adapters": ROOT / "adapters" / "cxr_attrib_adapters",
}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package ``__init__``)."""
    found = {}
    for top, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def _imported(node: ast.AST, package: str) -> list[str]:
    """The dotted names an import statement may bind (``from a import b`` -> ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parents = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parents + ([node.module] if node.module else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the non-package modules of the shipped packages it imports anywhere."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, (path, package) in modules.items():
        if package:
            continue
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _imported(node, name.rpartition(".")[0]):
                module = owner(target)
                if module and module != name and not modules[module][1]:
                    edges.add(module)
        graph[name] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_finder_sees_a_circle_hidden_in_a_function_and_one_under_type_checking():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}}
    assert sorted(circles(graph)) == [["a", "b", "c"], ["e", "f"]]
    lazy = ast.parse("def f():\n    from .transfer import ConceptTransfer\n")
    assert [t for n in ast.walk(lazy) for t in _imported(n, "pkg.medfocus")] == ["pkg.medfocus.transfer.ConceptTransfer"]


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_module_imports_back_a_module_that_imports_it(package):
    graph = import_graph()
    mine = [c for c in circles(graph) if any(m.split(".")[0] == package for m in c)]
    assert not mine, f"import circles (move the shared type into a module below both): {mine}"
