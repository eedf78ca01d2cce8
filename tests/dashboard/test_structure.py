"""The dashboard's modules, measured from their own imports: no circle, and the page on top
(dashboard.page alone imports the tabs, which never import one another), no module over
500 lines."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "dashboard"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each dashboard module and the dashboard modules it imports (packages left out)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    packages = {module_name(path) for path in PACKAGE.rglob("__init__.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in modules:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names} & modules.keys()
        graph[name] = found - packages - {name}
    return graph


def test_no_module_of_the_dashboard_imports_itself_in_a_circle() -> None:
    graphlib.TopologicalSorter(imports()).prepare()  # raises CycleError on a circle


def test_only_the_page_imports_the_tabs_and_no_tab_another() -> None:
    graph = imports()
    for name, imported in graph.items():
        tabs = {module for module in imported if module.startswith("dashboard.tabs.")}
        assert not tabs or name == "dashboard.page", (name, tabs)
    assert {name for name, imported in graph.items() if "dashboard.page" in imported} == {
        "dashboard.app"
    }


def test_no_module_of_the_dashboard_is_over_500_lines() -> None:
    sizes = {
        module_name(path): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")
    }
    assert not {name: size for name, size in sizes.items() if size > 500}, sizes
