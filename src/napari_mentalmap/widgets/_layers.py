"""Layer helpers shared by the docks: result tagging, placement over the input, input choices."""

from __future__ import annotations

from typing import Any

import numpy as np

RESULT_KEY = "mentalmap_result"
"""Metadata key marking layers this plugin derived from an input (never offered as inputs)."""


def is_result(layer: Any) -> bool:
    """True for a layer one of the docks made (a result, contexts, samples, labels)."""
    return RESULT_KEY in (getattr(layer, "metadata", None) or {})


def result_source(layer: Any) -> str | None:
    """Name of the input layer a result layer was made from (None for inputs)."""
    return ((getattr(layer, "metadata", None) or {}).get(RESULT_KEY) or {}).get("source")


def aligned_with(source: Any, kind: str, copy_metadata: bool = True) -> dict[str, Any]:
    """Layer kwargs placing a same-shape array over ``source``: its full world transform,
    units and axis labels, and metadata (the reader's, to save it in the input's orientation)
    tagged as a ``kind`` result of ``source``."""
    metadata = dict(source.metadata) if copy_metadata else {}
    metadata[RESULT_KEY] = {"source": source.name, "kind": kind}
    kwargs = {"scale": source.scale, "translate": source.translate, "rotate": source.rotate,
              "shear": source.shear, "affine": source.affine.affine_matrix, "metadata": metadata}
    for key in ("units", "axis_labels"):
        if getattr(source, key, None) is not None:
            kwargs[key] = tuple(getattr(source, key))
    return kwargs


def update_layer(layer: Any, data: Any, **attributes: Any) -> None:
    """Show ``data`` in ``layer`` in place and set only the ``attributes`` that changed.

    Every napari setter (scale, translate, contrast limits) refreshes the layer and its
    layer-list entry in the GUI thread, 10-20 ms each on a 1 mm volume; a re-run that lands on
    the same grid needs none of them.
    """
    layer.data = data
    for name, value in attributes.items():
        if not _same(getattr(layer, name, None), value):
            setattr(layer, name, value)


def _same(current: Any, value: Any) -> bool:
    """Whether a layer attribute already has ``value`` (numbers compared as arrays)."""
    if isinstance(current, str | dict) or isinstance(value, str | dict):
        try:
            return bool(current == value)
        except (TypeError, ValueError):  # dicts holding arrays
            return False
    try:
        a, b = np.asarray(current, dtype=float), np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return False
    return a.shape == b.shape and bool(np.array_equal(a, b))


def input_images(viewer: Any, ndim: int | None = 3) -> list[Any]:
    """Image layers of ``viewer`` that are real inputs (not results of a dock), optionally of ``ndim``."""
    from napari.layers import Image

    return [layer for layer in viewer.layers
            if isinstance(layer, Image) and not is_result(layer) and (ndim is None or layer.ndim == ndim)]


def scroll_content(widget: Any) -> Any:
    """A content widget inside a scroll area filling ``widget``.

    A dock built on it keeps a small minimum height (it scrolls instead), so the three docks
    open together fit a 1080-pixel-high screen instead of growing the window past it.
    """
    from qtpy.QtCore import QSize
    from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

    class VerticalScroll(QScrollArea):
        """Scrolls vertically only: as wide as its content needs, as short as the dock allows."""

        def _width(self, hint: QSize) -> int:
            return hint.width() + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

        def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt API)
            return QSize(self._width(self.widget().minimumSizeHint()), super().minimumSizeHint().height())

        def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
            return QSize(self._width(self.widget().sizeHint()), super().sizeHint().height())

    content = QWidget()
    area = VerticalScroll()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(content)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    return content
