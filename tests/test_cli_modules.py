"""The command-line modules import one another without a cycle: ``main`` builds the parser from the command
modules, which share only ``arguments`` and ``output``."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import anomalens.cli


def _imported_names(path: Path) -> set[str]:
    """Every module an import statement of ``path`` names, those inside functions included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


def test_cli_modules_import_one_another_without_a_cycle():
    package = Path(anomalens.cli.__file__).parent
    modules = {f"anomalens.cli.{path.stem}": path for path in package.glob("*.py") if path.stem != "__init__"}
    graph = {name: (_imported_names(path) & modules.keys()) - {name} for name, path in modules.items()}
    assert "anomalens.cli.fit_many" in graph["anomalens.cli.main"]  # `from anomalens.cli import x` is seen
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle among the CLI modules: {' -> '.join(error.args[1])}")
