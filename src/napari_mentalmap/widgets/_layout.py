"""Dock layout shared by the docks: a vertical scroll area, collapsible sections, fair heights.

napari stacks the docks of one side and gives every earlier dock only its minimum height
(``resizeDocks`` with sizes 1, 5, 9, ...), so the first of three docks got 89 px for 533 px
of content. Here each dock scrolls inside a :class:`DockScroll` whose minimum height is
useful (:data:`MIN_DOCK_HEIGHT`) and whose size hint is the whole content; once a dock is
shown, :func:`fit_docks` shares the side's height between the stacked docks by what they
need (a fourth plugin dock, or one that does not fit, opens as a tab: :func:`make_room`),
and advanced options sit in collapsed :func:`section` s.
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
    QStyle,
    QTabBar,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ._forms import _add

MIN_DOCK_HEIGHT = 150
"""Smallest height a dock's scroll area may be squeezed to (px): three of them and the latent
embedding plot still fit beside the canvas of a 1366x768 screen."""


MAX_STACKED = 3
"""Plugin docks stacked on one side at most; a fourth opens as a tab of the third (stacked,
the four docks and the latent embedding plot left each dock under 200 px at 1920x1080)."""

COMBO_CHARACTERS = 10
"""Characters a drop-down list shows at least when the dock is narrow (it widens with the dock)."""


class DockScroll(QScrollArea):
    """Scrolls vertically only: as wide as its content needs, as tall as its content would like,
    never squeezed under :data:`MIN_DOCK_HEIGHT` (or the content, when that is shorter) once
    :func:`fit_docks` has placed its dock (before, its minimum must not grow the window: the
    dock may still become a tab, see :func:`make_room`)."""

    placed = False
    window_height: int | None = None
    """The window's height when the dock was added (before its minimum could grow the window)."""

    def _width(self, hint: QSize) -> int:
        return hint.width() + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def placed_height(self) -> int:
        """The minimum height once placed."""
        return min(self.widget().sizeHint().height(), MIN_DOCK_HEIGHT) + 2 * self.frameWidth()

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        if not self.placed and self.window_height is None and isinstance(self.window(), QMainWindow):
            self.window_height = self.window().height()  # asked by the layout that may grow the window
        return QSize(self._width(self.widget().minimumSizeHint()),
                     self.placed_height() if self.placed else 2 * self.frameWidth())

    def place(self) -> None:
        """From now on, keep the minimum height (:meth:`placed_height`)."""
        if not self.placed:
            self.placed = True
            self.updateGeometry()

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


def _stacked(window: QMainWindow, area: Any) -> list[QDockWidget]:
    """The visible docks stacked on ``area`` of ``window`` (tabified docks count once)."""
    stacked: list[QDockWidget] = []
    for other in window.findChildren(QDockWidget):
        if (window.dockWidgetArea(other) == area and other.isVisible() and not other.isFloating()
                and not any(tabbed in stacked for tabbed in window.tabifiedDockWidgets(other))):
            stacked.append(other)
    return stacked


def _minimum(dock: QDockWidget) -> int:
    """``dock``'s minimum height once its :class:`DockScroll` (if any) is placed."""
    scroll = dock.findChild(DockScroll)
    height = dock.minimumSizeHint().height()
    if scroll is None or scroll.placed:
        return height
    return height + scroll.placed_height() - scroll.minimumSizeHint().height()


def make_room(dock: QDockWidget, window: QMainWindow) -> int:
    """When more than :data:`MAX_STACKED` plugin docks (those scrolling in a :class:`DockScroll`)
    are stacked on ``dock``'s side, or the minimum heights of the stacked docks do not fit the
    window, tabify the plugin docks opened last onto the one stacked before (the one moved is
    raised); every stacked plugin dock then keeps its minimum height, and a window that Qt grew
    for the docks just added gets its height back. Returns how many docks were tabified."""
    area = window.dockWidgetArea(dock)
    vertical = area in (Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea)
    scrolls = [scroll for other in window.findChildren(QDockWidget) if window.dockWidgetArea(other) == area
               and (scroll := other.findChild(DockScroll)) is not None]
    height = min([window.height()] + [s.window_height for s in scrolls if not s.placed and s.window_height])
    menu, status = window.menuBar(), window.statusBar()
    room = height - (menu.height() if menu.isVisible() else 0) - (status.height() if status.isVisible() else 0)
    separator = window.style().pixelMetric(QStyle.PixelMetric.PM_DockWidgetSeparatorExtent, None, window)
    tab_bar = _tab_bar_height(window)
    moved = 0
    while True:
        groups = [[other, *window.tabifiedDockWidgets(other)] for other in _stacked(window, area)]
        need = sum(max(_minimum(member) for member in group) + (tab_bar if len(group) > 1 else 0)
                   for group in groups) + separator * (len(groups) - 1)
        ours = [group for group in groups if any(member.findChild(DockScroll) for member in group)]
        if not vertical or (need <= room and len(ours) <= MAX_STACKED) or len(ours) < 2:
            break
        fresh = [group for group in ours if any(not scroll.placed for member in group
                                                 if (scroll := member.findChild(DockScroll)) is not None)]
        moving = (fresh or ours)[-1]  # the docks just opened move first
        target = next(group for group in reversed(ours) if group is not moving)
        for member in moving:
            window.tabifyDockWidget(target[0], member)
        moving[-1].raise_()
        moved += 1
    for group in groups:
        for member in group:
            if (scroll := member.findChild(DockScroll)) is not None:
                scroll.place()
    if height < window.height():
        window.layout().activate()  # the new minimum first, or the resize is clamped to the old one
        window.resize(window.width(), height)
    return moved


def _tab_bar_height(window: QMainWindow) -> int:
    """Height of the tab bar under tabified docks (in ``window``'s style)."""
    bar = QTabBar(window)
    bar.addTab("dock")
    height = bar.sizeHint().height()
    bar.deleteLater()
    return height


def fit_docks(widget: QObject) -> list[int]:
    """Share the height of ``widget``'s dock side between the docks stacked there, in
    proportion to what each would like (its size hint; Qt keeps every minimum), after
    tabifying plugin docks that do not fit (:func:`make_room`).

    Tabified docks count once (as the tallest of them and the tab bar). Returns the sizes asked
    for (empty when ``widget`` is not in a docked, visible dock).
    """
    try:
        dock, window = _dock_of(widget)
        if dock is not None and dock.isFloating() and (scroll := dock.findChild(DockScroll)) is not None:
            scroll.place()  # a floating dock is never tabified: its minimum applies at once
        if dock is None or window is None or dock.isFloating() or not dock.isVisible():
            return []
    except RuntimeError:  # deleted before the timer fired
        return []
    make_room(dock, window)
    area = window.dockWidgetArea(dock)
    stacked = _stacked(window, area)
    if len(stacked) < 2:
        return []
    tab_bar = _tab_bar_height(window)
    sizes = [max(max(member.sizeHint().height(), member.minimumSizeHint().height())
                 for member in [other, *window.tabifiedDockWidgets(other)])
             + (tab_bar if window.tabifiedDockWidgets(other) else 0) for other in stacked]
    orientation = Qt.Orientation.Vertical if area in (Qt.DockWidgetArea.LeftDockWidgetArea,
                                                      Qt.DockWidgetArea.RightDockWidgetArea) else None
    if orientation is None:
        return []
    window.resizeDocks(stacked, sizes, orientation)
    return sizes
