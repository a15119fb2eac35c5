"""Declarative Qt layout helpers shared by the docks: forms, button rows, the dock column."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QLayout, QVBoxLayout


def _add(layout: Any, item: Any, stretch: int = 0) -> None:
    if isinstance(item, QLayout):
        layout.addLayout(item, stretch)
    else:
        layout.addWidget(item, stretch)


def form(*rows: tuple[str, Any]) -> QFormLayout:
    """A form of ``(label, widget or layout)`` rows."""
    layout = QFormLayout()
    for label, item in rows:
        layout.addRow(label, item)
    return layout


def row(*items: Any, stretch_first: bool = False) -> QHBoxLayout:
    """Widgets side by side; with ``stretch_first`` the first takes the spare width."""
    layout = QHBoxLayout()
    for index, item in enumerate(items):
        _add(layout, item, 1 if stretch_first and index == 0 else 0)
    return layout


def column(parent: Any, *items: Any) -> QVBoxLayout:
    """``parent``'s layout: ``items`` (widgets or layouts) top to bottom, then a stretch."""
    layout = QVBoxLayout(parent)
    for item in items:
        _add(layout, item)
    layout.addStretch(1)
    return layout
