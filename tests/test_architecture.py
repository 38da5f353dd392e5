"""The shape of the code: no import cycle in `adapter/`, no module over 600 lines.

Imports are read with `ast`, not by importing: an import inside a function or under
`TYPE_CHECKING` is an edge like any other, because it hides a cycle rather than removing it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from conftest import REPO

PACKAGE = "adapter"
MAX_LINES = 600

# Modules that other issue-7 work is splitting right now. Each entry tolerates that module being
# too long and the import cycles it is part of; remove an entry when its split lands. No module
# of the rule engine (`adapter.rules.*`) may be listed here.
BEING_SPLIT: dict[str, str] = {
    "adapter.fhirclient": "being split in issue 7",
    "adapter.sync": "being split in issue 7",
    "adapter.read": "being split in issue 7",
}


def _modules(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """Every module of the package that `module` imports, wherever the import statement stands."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                # A package's own module name is its folder; a plain module's package is its parent.
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop] if drop else base
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield submodule if submodule in modules else target


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    modules = _modules(root)
    return {
        module: {target for target in _imported(module, path, modules) if target in modules and target != module}
        for module, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycle_in_the_package() -> None:
    unexpected = [cycle for cycle in cycles(import_graph()) if not set(cycle) & set(BEING_SPLIT)]
    assert not unexpected, f"import cycles in {PACKAGE}/: {unexpected}"


def test_no_module_is_too_long() -> None:
    long = {
        module: length
        for module, path in _modules(REPO).items()
        if (length := len(path.read_text().splitlines())) > MAX_LINES and module not in BEING_SPLIT
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
