"""dicom_core's packages import one way: features over index and storage over the DICOM model."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "dicom_core"
MAX_MODULE_LINES = 400

SHARED = {"model", "settings"}
# What each package may import besides itself. A package missing here is a new one: say where it sits.
ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "settings": set(),
    "wire": {"model"},
    "storage": SHARED,
    "index": SHARED | {"storage"},
    "search_index": SHARED | {"storage", "index"},
    "documents": SHARED | {"storage", "index"},
    "changefeed": SHARED | {"wire", "storage", "index", "documents"},
    "maintenance": SHARED | {"storage", "index", "search_index", "documents", "changefeed"},
    "stow": SHARED | {"wire", "storage", "index", "search_index", "documents", "maintenance", "extended_tags"},
    "delete": SHARED | {"wire", "storage", "index", "search_index", "documents", "maintenance"},
    "wado": SHARED | {"wire", "storage", "index", "documents"},
    "qido": SHARED | {"wire", "storage", "index", "search_index", "extended_tags"},
    "edge": SHARED | {"wire", "storage"},
    "operations": SHARED | {"wire", "storage"},
    "extended_tags": SHARED | {"wire", "storage", "index", "search_index", "operations"},
}


def _modules() -> list[Path]:
    return sorted(PACKAGE_ROOT.rglob("*.py"))


def _package_of(module: Path) -> str:
    return module.relative_to(PACKAGE_ROOT).parts[0].removesuffix(".py")


def _imported_packages(module: Path) -> set[str]:
    """The dicom_core packages (or top-level modules) that ``module`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text(), str(module))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "dicom_core":
                found.update(parts[1:2] or [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("dicom_core."))
    return found


def package_graph() -> dict[str, set[str]]:
    """Map each package to the other packages its modules import."""
    graph: dict[str, set[str]] = {}
    for module in _modules():
        package = _package_of(module)
        if package == "__init__":
            continue
        graph.setdefault(package, set()).update(_imported_packages(module) - {package})
    return graph


def test_every_package_has_a_place_in_the_layers() -> None:
    assert set(package_graph()) <= set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_the_layers_below_it(package: str) -> None:
    assert package_graph().get(package, set()) - ALLOWED[package] == set()


def test_the_package_graph_has_no_cycle() -> None:
    graph, done, path = package_graph(), set[str](), list[str]()

    def visit(package: str) -> None:
        assert package not in path, f"import cycle: {' -> '.join([*path, package])}"
        if package in done:
            return
        path.append(package)
        for imported in sorted(graph.get(package, ())):
            visit(imported)
        path.pop()
        done.add(package)

    for package in sorted(graph):
        visit(package)


def test_no_relative_imports() -> None:
    relative = [str(m.relative_to(PACKAGE_ROOT)) for m in _modules()
                if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(m.read_text())))]
    assert relative == []


def test_only_settings_sits_at_the_top_level() -> None:
    assert sorted(p.name for p in PACKAGE_ROOT.glob("*.py")) == ["__init__.py", "settings.py"]


def test_no_module_is_over_the_line_limit() -> None:
    lengths = {str(m.relative_to(PACKAGE_ROOT)): len(m.read_text().splitlines()) for m in _modules()}
    assert {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES} == {}
