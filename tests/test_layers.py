"""The layers show in the tree and point one way: no import cycle between the parts.

A part is a subpackage of `ledger` (ledger.domain, ledger.writer, ...), a module directly in
`ledger` (ledger.service, ...), or a top-level package (adapters, devtools). Every import counts,
including those inside functions: an import deferred to run time is still a dependency, and
deferring it is how a cycle hides.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ledger", "adapters", "devtools")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _part(module: str) -> str | None:
    """The part a module belongs to, or None for modules outside the project."""
    pieces = module.split(".")
    if pieces[0] not in PACKAGES:
        return None
    if pieces[0] != "ledger" or len(pieces) == 1:
        return pieces[0]
    return ".".join(pieces[:2])


def _imports(path: Path) -> Iterator[str]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            # `from ledger import writer` names a part, not only the package.
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p) for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            source = _part(_module_name(path))
            assert source is not None
            for imported in _imports(path):
                if imported not in modules and imported.rpartition(".")[0] not in modules:
                    continue
                target = _part(imported)
                if target is not None and target not in (source, "ledger"):
                    graph.setdefault(source, set()).add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one part (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
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


def test_no_import_cycle_between_the_parts() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    described = [" <-> ".join(cycle) for cycle in cycles]
    assert not cycles, "import cycles: " + "; ".join(described)


def test_the_product_never_imports_what_plugs_into_it() -> None:
    """ledger <- adapters <- devtools: the adapters and the development tools plug their commands
    into the command line (entry points), so the ledger imports neither, nor the adapters devtools."""
    graph = _graph()
    imported_by = {
        package: {
            target.split(".")[0]
            for source, targets in graph.items()
            if source.split(".")[0] == package
            for target in targets
        }
        for package in PACKAGES
    }
    assert imported_by["ledger"] <= {"ledger"}
    assert imported_by["adapters"] <= {"ledger", "adapters"}


def test_the_domain_imports_nothing_of_the_rest() -> None:
    assert _graph().get("ledger.domain", set()) == set()


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
