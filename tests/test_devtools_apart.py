"""The product's packages run without devtools/ (the Docker image has no copy of it): none of their
modules imports it when it is loaded; only a command's function may, when the command is run."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_PACKAGES = ("ledger", "adapters")


def _imports_run_at_load(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports outside function bodies: a class body or an `if` at module level runs at load too."""
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            pending.extend(ast.iter_child_nodes(node))


def _names(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""] if node.level == 0 else []
    return [alias.name for alias in node.names]


def test_no_product_module_imports_devtools_when_it_is_loaded() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for package in PRODUCT_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for node in _imports_run_at_load(ast.parse(path.read_text(), str(path)))
        if any(name.split(".")[0] == "devtools" for name in _names(node))
    ]
    assert found == []
