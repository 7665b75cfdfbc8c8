"""The package's shape (README's architecture map): no import cycles between editor modules, the root holds only the
core, and product code does not import the tiny test trees (only the benchmarks and `app.py --tiny-random` do)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "editor"
CORE = {"__init__", "__main__", "core", "params", "images", "prompts", "loading", "metrics", "preview"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """editor.* modules `path` imports when it is imported (not inside functions, not under TYPE_CHECKING):
    `from pkg import mod` counts as importing `pkg.mod`, `from mod import name` as importing `mod`."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the editor modules it imports. A package's own parents are left out: Python imports them first
    whatever the module does, and a parent that imports its children is not a cycle."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in top_level_imports(path, set(paths)) if m != name and not name.startswith(m + ".")}
        for name, path in paths.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_package_root_holds_only_the_core():
    assert {p.stem for p in PACKAGE.glob("*.py")} == CORE


def test_product_code_does_not_import_the_tiny_test_trees():
    allowed = ("editor.tiny", "editor.bench")  # the benchmarks time the tiny random-weight MGIE
    importers = {
        name
        for name, imports in import_graph().items()
        if any(m.startswith("editor.tiny") for m in imports) and not name.startswith(allowed)
    }
    assert importers == set()
