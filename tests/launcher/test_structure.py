"""The launcher's shape, measured from its own imports: no import circle, no import hidden in
a function (an upward one, to get round a circle), no module over 500 lines, the command
flows (tasks.py) under 400, and the backends reached only through the registry."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "launcher"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """The package's modules `path` imports: at its top level, and inside functions."""
    tree = ast.parse(path.read_text())
    top, nested = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        (top if node in tree.body else nested).update(n for n in names if n in known)
    return top, nested


def test_no_circle_no_hidden_import_no_big_module() -> None:
    found = modules()
    graph, hidden = {}, {}
    for name, path in found.items():
        top, nested = imports(path, set(found))
        graph[name] = top - {name}
        if nested:
            hidden[name] = nested
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"import circle: {exc.args[1]}") from None
    assert len(order) == len(found)
    assert not hidden, hidden
    sizes = {name: len(path.read_text().splitlines()) for name, path in found.items()}
    assert not {n: s for n, s in sizes.items() if s > 500}, sizes
    assert sizes["launcher.tasks"] < 400
    # The command flows know the interface and the registry, never a backend.
    assert not {m for m in graph["launcher.tasks"] if m.startswith("launcher.backends")}
    assert not {m for m in graph["launcher.tasks"] if "slurm" in m}
