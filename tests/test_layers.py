"""The packages are layers that only look down: trainer <- exporter <- bench, and no module cycles.

An upward import (trainer importing bench) or a cycle (a -> b -> a, however dodged with an import
inside a function) makes a module impossible to understand, test or ship without the ones above it.
This reads every import statement of every module with ``ast`` (function-level and
``TYPE_CHECKING`` ones too: each is a dependency), so nothing needs to be imported to check it.
Tests are exempt: they may import any layer.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"trainer": 0, "exporter": 1, "bench": 2}  # a module may import its own layer and those below


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str  # file:line of the import statement

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}  ({self.where})"


def module_files() -> dict[str, Path]:
    """Every module of the layered packages, by dotted name (a package's ``__init__`` is the package)."""
    modules: dict[str, Path] = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The module that ``name`` loads: itself, or the nearest package above it that exists here."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement loads, relative imports resolved against ``module``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    # ``from trainer import data`` loads trainer.data when that is a module, else a name of trainer.
    return [f"{base}.{alias.name}" if alias.name != "*" else base for alias in node.names]


def import_graph() -> tuple[dict[str, Path], list[Edge]]:
    """Every package-internal import edge between the layered packages' modules."""
    modules = module_files()
    edges: list[Edge] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in _imported_names(node, module, path.name == "__init__.py"):
                target = _known(name, modules)
                if target is not None and target != module:
                    edges.append(Edge(module, target, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return modules, list(dict.fromkeys(edges))  # one edge per statement, however many names it imports


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def find_cycles(modules: list[str], edges: list[Edge]) -> list[list[str]]:
    """One concrete cycle (``[a, b, ..., a]``) per strongly connected component that has one (Tarjan)."""
    graph: dict[str, list[str]] = {m: [] for m in modules}
    for edge in edges:
        if edge.target not in graph[edge.source]:
            graph[edge.source].append(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)

    cycles = []
    for component in components:
        members, start = set(component), component[0]
        # Breadth-first from start inside the component, back to start: the shortest cycle through it.
        came_from: dict[str, str] = {}
        frontier, closing = [start], None
        while frontier and closing is None:
            following = []
            for node in frontier:
                for nxt in graph[node]:
                    if nxt == start:
                        closing = node
                        break
                    if nxt in members and nxt not in came_from:
                        came_from[nxt] = node
                        following.append(nxt)
                if closing is not None:
                    break
            frontier = following
        path = [start]
        node = closing
        while node != start:
            path.append(node)
            node = came_from[node]
        cycles.append([start, *reversed(path[1:]), start])
    return cycles


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[Edge]]:
    modules, edges = import_graph()
    # The walker must see the code at all: a parser that finds nothing would pass every check.
    assert len(modules) > 20 and any(e.source == "trainer.sweep" and e.target == "trainer.training" for e in edges)
    return modules, edges


def _dump(edges: list[Edge]) -> str:
    return "\n".join(f"  {edge}" for edge in sorted(edges, key=lambda e: (e.source, e.target, e.where)))


@pytest.mark.parametrize("package", list(LAYERS))
def test_no_module_imports_a_layer_above_its_own(package: str, graph):
    _, edges = graph
    upward = [e for e in edges if e.source.split(".")[0] == package and _layer(e.target) > _layer(e.source)]
    if upward:
        print(f"every import edge from {package}:\n" + _dump([e for e in edges if e.source.split(".")[0] == package]))
    assert not upward, (f"{package} (layer {LAYERS[package]}) imports a layer above it; layers: {LAYERS}\n"
                        + _dump(upward))


@pytest.mark.parametrize("package", list(LAYERS))
def test_module_graph_has_no_cycle(package: str, graph):
    modules, edges = graph
    cycles = [c for c in find_cycles(list(modules), edges) if any(m.split(".")[0] == package for m in c)]
    if cycles:
        involved = {m for c in cycles for m in c}
        print("the edges between the modules of the cycles:\n"
              + _dump([e for e in edges if e.source in involved and e.target in involved]))
    assert not cycles, "import cycles through " + package + ":\n" + "\n".join("  " + " -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle_and_names_it():
    edges = [Edge("a", "b", "x:1"), Edge("b", "c", "x:2"), Edge("c", "a", "x:3"), Edge("c", "d", "x:4")]
    assert find_cycles(["a", "b", "c", "d"], edges) == [["a", "b", "c", "a"]]
    assert find_cycles(["a", "b"], [Edge("a", "b", "x:1")]) == []
