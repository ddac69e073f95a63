"""The shape of the code a maintainer meets: longest functions, import cycles between the package's modules, and
modules that read result-record keys by string.

    python bench/code_shape.py [PACKAGE_DIR] > bench/results/code_shape.txt

Import cycles are strongly connected groups of modules in the graph of imports, counted twice: module-level imports
only, and with the imports inside functions too (they run late, but still tie the modules together). ``from a.b
import c`` counts as importing ``a.b``, and ``a.b.c`` when that is a module; an edge from a module to a package
that contains it is left out (importing a module always initialises its parents first).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

# a record key read by string: record["regions"], region.get("defect_type")...
RECORD_KEYS = (
    "regions",
    "anomalous",
    "severity",
    "verdict",
    "explanation",
    "region_count",
    "overlay",
    "grid",
    "bbox",
    "defect_type",
    "type_confidence",
    "area_fraction",
    "position",
    "normalized_score",
    "total_area_fraction",
    "brightness",
    "appearance",
    "relative_peak",
    "area_pixels",
)
KEY_READ = re.compile(r"""(\[|\.get\()["'](""" + "|".join(RECORD_KEYS) + r""")["']""")


def modules(root: Path) -> dict[str, Path]:
    package = root.name
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if "migrations" in parts:
            continue
        name = ".".join((package, *parts[:-1])) if parts[-1] == "__init__" else ".".join((package, *parts))
        found[name] = path
    return found


def imports(tree: ast.Module, known: set[str], inside_functions: bool) -> set[str]:
    targets: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        nested = inside_functions or isinstance(node, (ast.If, ast.Try))
        for sub in ast.walk(node) if nested else [node]:
            if isinstance(sub, ast.Import):
                targets |= {alias.name for alias in sub.names if alias.name in known}
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                if sub.module in known:
                    targets.add(sub.module)
                targets |= {f"{sub.module}.{a.name}" for a in sub.names if f"{sub.module}.{a.name}" in known}
    return targets


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            visit(node)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", default=str(Path(__file__).resolve().parents[1] / "anomalens"))
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    root = Path(args.package)
    found = modules(root)
    trees = {name: ast.parse(path.read_text()) for name, path in found.items()}
    functions = sorted(
        (
            (node.end_lineno - node.lineno + 1, f"{name}.{node.name}")
            for name, tree in trees.items()
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        ),
        reverse=True,
    )
    print(f"longest functions (lines, of {len(functions)}):")
    for lines, name in functions[: args.top]:
        print(f"  {lines:4d}  {name}")
    for inside_functions in (False, True):
        graph = {
            name: {
                target
                for target in imports(tree, set(found), inside_functions)
                if target != name and not name.startswith(target + ".")
            }
            for name, tree in trees.items()
        }
        groups = cycles(graph)
        which = "all imports, inside functions too" if inside_functions else "module-level imports"
        print(f"import cycles ({which}): {len(groups)}")
        for group in groups:
            print("  " + " <-> ".join(group))
    readers = {name: len(KEY_READ.findall(found[name].read_text())) for name in found}
    readers = {name: count for name, count in readers.items() if count}
    print(f"modules reading result-record keys by string: {len(readers)}")
    for name, count in sorted(readers.items()):
        print(f"  {count:3d}  {name}")


if __name__ == "__main__":
    main()
