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
