"""The layer rules of DESIGN.md, read from the source (runs in CI with the tests).

io -> models -> inference -> widgets; data and metrics sit below training and evaluation;
training and evaluation never import each other; nothing but widgets imports napari or Qt.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_mentalmap"

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "training": ("evaluation", "widgets"),
    "evaluation": ("training", "widgets"),
    "inference": ("training", "evaluation", "widgets"),
    "widgets": ("training", "evaluation"),
    "data": ("training", "evaluation", "widgets"),
    "models": ("training", "evaluation", "inference", "widgets", "data"),
    "io": ("training", "evaluation", "inference", "widgets", "models", "data"),
    "metrics": ("training", "evaluation", "inference", "widgets", "models", "data", "io"),
}
GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "magicgui")


def _room(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute names of everything ``path`` imports (package-relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ["napari_mentalmap", *path.relative_to(PACKAGE).parent.parts]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.append((module, node.lineno))
            names += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return names


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layer_rules(path: Path) -> None:
    room = _room(path)
    broken = []
    for name, line in _imports(path):
        parts = name.split(".")
        if parts[0] == "napari_mentalmap" and len(parts) > 1 and parts[1] in FORBIDDEN.get(room, ()):
            broken.append(f"line {line}: {room} imports {name}")
        if room not in ("widgets", "cli", "_sample_data", "_reader", "_writer") and parts[0] in GUI_MODULES:
            broken.append(f"line {line}: {room} imports {name} (GUI only in widgets)")
    assert not broken, "\n".join(broken)


def test_one_module_knows_where_weights_live_and_all_loads_are_safe() -> None:
    offenders = []
    for path in SOURCES:
        text = path.read_text()
        if path.name != "checkpoints.py" and re.search(r"""/\s*["']weights["']""", text):
            offenders.append(f"{path.name}: builds the weights path")
        if "weights_only=False" in text:
            offenders.append(f"{path.name}: weights_only=False")
        if re.search(r"parents\[[2-9]\]", text):
            offenders.append(f"{path.name}: repository-relative path")
    assert not offenders, offenders


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(["napari_mentalmap", *(parts[:-1] if parts[-1] == "__init__" else parts)])


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere (top level, in functions, under
    TYPE_CHECKING); a module's own parent packages are left out (Python imports them first anyway)."""
    modules = {_module_name(path): path for path in SOURCES}
    graph = {}
    for name, path in modules.items():
        parents = {name.rsplit(".", depth)[0] for depth in range(1, name.count(".") + 1)}
        graph[name] = {imported for imported, _ in _imports(path)
                       if imported in modules and imported != name and imported not in parents}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk of ``graph`` closes (each as the modules around it)."""
    state: dict[str, int] = {}
    path: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_no_import_cycles() -> None:
    """No module of the package imports itself back through others, not even lazily."""
    cycles = import_cycles(import_graph())
    assert not cycles, "\n".join(" -> ".join(m.removeprefix("napari_mentalmap.") for m in c) for c in cycles)


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
