"""Dock layout shared by the three docks: a vertical scroll area, collapsible sections, fair heights.

napari stacks the docks of one side and gives every earlier dock only its minimum height
(``resizeDocks`` with sizes 1, 5, 9, ...), so the first of three docks got 89 px for 533 px
of content. Here each dock scrolls inside a :class:`DockScroll` whose minimum height is
useful (:data:`MIN_DOCK_HEIGHT`) and whose size hint is the whole content; once a dock is
shown, :func:`fit_docks` shares the side's height between the stacked docks by what they
need, and advanced options sit in collapsed :func:`section` s.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFrame,
    QMainWindow,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ._forms import _add

MIN_DOCK_HEIGHT = 150
"""Smallest height a dock's scroll area may be squeezed to (px): three of them and the latent
embedding plot still fit beside the canvas of a 1366x768 screen."""


COMBO_CHARACTERS = 10
"""Characters a drop-down list shows at least when the dock is narrow (it widens with the dock)."""


class DockScroll(QScrollArea):
    """Scrolls vertically only: as wide as its content needs, as tall as its content would like,
    never squeezed under :data:`MIN_DOCK_HEIGHT` (or the content, when that is shorter)."""

    def _width(self, hint: QSize) -> int:
        return hint.width() + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        content = self.widget().sizeHint()
        return QSize(self._width(self.widget().minimumSizeHint()),
                     min(content.height(), MIN_DOCK_HEIGHT) + 2 * self.frameWidth())

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        content = self.widget().sizeHint()
        return QSize(self._width(content), content.height() + 2 * self.frameWidth())

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        # a combo's longest item (a layer name, a method) would otherwise set the dock's width
        for combo in self.widget().findChildren(QComboBox):
            if combo.minimumWidth() == 0:  # the layout then ignores the text-wide minimum size hint
                combo.setMinimumWidth(combo.fontMetrics().averageCharWidth() * COMBO_CHARACTERS + 40)
        super().showEvent(event)


class _FitOnShow(QObject):
    """Shares the side's height (:func:`fit_docks`) each time the dock is shown or re-docked."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if event.type() in (QEvent.Type.Show, QEvent.Type.ParentChange):
            QTimer.singleShot(0, lambda: fit_docks(watched))  # after napari's own resizeDocks
        return False


def scroll_content(widget: QWidget) -> QWidget:
    """A content widget inside a :class:`DockScroll` filling ``widget`` (the dock)."""
    content = QWidget()
    # never squeezed under its size hint (a squeezed form clips its rows): the area scrolls instead
    content.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
    area = DockScroll()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(content)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    widget._fit_on_show = _FitOnShow(widget)
    widget.installEventFilter(widget._fit_on_show)
    return content


def section(title: str, *items: Any, expanded: bool = False) -> QCollapsible:
    """A collapsible section (collapsed unless ``expanded``) holding ``items`` (widgets or
    layouts) top to bottom; its toggle button opens it."""
    collapsible = QCollapsible(title, collapsedIcon="▶", expandedIcon="▼")
    collapsible.setDuration(120)
    collapsible.layout().setContentsMargins(0, 0, 0, 0)
    body = QWidget()
    layout = QVBoxLayout(body)
    layout.setContentsMargins(0, 0, 0, 0)
    for item in items:
        _add(layout, item)
    collapsible.addWidget(body)
    if expanded:
        collapsible.expand(animate=False)
    return collapsible


def _dock_of(widget: QWidget) -> tuple[QDockWidget | None, QMainWindow | None]:
    dock = widget
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    window = dock.parentWidget() if dock is not None else None
    while window is not None and not isinstance(window, QMainWindow):
        window = window.parentWidget()
    return dock, window


def fit_docks(widget: QObject) -> list[int]:
    """Share the height of ``widget``'s dock side between the docks stacked there, in
    proportion to what each would like (its size hint; Qt keeps every minimum).

    Tabified docks count once. Returns the sizes asked for (empty when ``widget`` is not in a
    docked, visible dock).
    """
    try:
        dock, window = _dock_of(widget)
        if dock is None or window is None or dock.isFloating() or not dock.isVisible():
            return []
    except RuntimeError:  # deleted before the timer fired
        return []
    area = window.dockWidgetArea(dock)
    stacked: list[QDockWidget] = []
    for other in window.findChildren(QDockWidget):
        if (window.dockWidgetArea(other) == area and other.isVisible() and not other.isFloating()
                and not any(tabbed in stacked for tabbed in window.tabifiedDockWidgets(other))):
            stacked.append(other)
    if len(stacked) < 2:
        return []
    sizes = [max(other.sizeHint().height(), other.minimumSizeHint().height()) for other in stacked]
    orientation = Qt.Orientation.Vertical if area in (Qt.DockWidgetArea.LeftDockWidgetArea,
                                                      Qt.DockWidgetArea.RightDockWidgetArea) else None
    if orientation is None:
        return []
    window.resizeDocks(stacked, sizes, orientation)
    return sizes
