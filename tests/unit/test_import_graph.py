"""Imports only go down: no cycle between our modules, and the import-linter contracts of pyproject.toml hold.

grimp sees every import statement, including the ones inside functions and under ``TYPE_CHECKING``, so a lazy
import cannot hide a cycle from these tests.
"""

from __future__ import annotations

import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("commandlog", "storage", "tasks", "flows", "deployments", "examples")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one cycle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(component)

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return [_one_cycle(graph, set(component)) for component in components]


def _one_cycle(graph: grimp.ImportGraph, component: set[str]) -> list[str]:
    """A path that leaves the first module of ``component`` and comes back to it, staying inside the component."""
    start = min(component)
    for imported in sorted(graph.find_modules_directly_imported_by(start) & component):
        path = graph.find_shortest_chain(importer=imported, imported=start)
        if path and set(path) <= component:
            return [start, *path]
    return sorted(component)


def _describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    lines = []
    for importer, imported in pairwise(cycle):
        where = ", ".join(f"l.{d['line_number']}" for d in graph.get_import_details(importer=importer,
                                                                                     imported=imported))
        lines.append(f"  {importer} -> {imported} ({where})")
    return "\n".join(lines)


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n\n".join(_describe(graph, c) for c in cycles)


def test_the_import_linter_contracts_hold():
    # In a child process: import-linter reconfigures logging in the process it runs in.
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint_imports), "--no-cache", "--no-logo", "pyproject.toml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"a contract in pyproject.toml is broken:\n{done.stdout}{done.stderr}"
