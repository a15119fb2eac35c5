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


def find_result(viewer: Any, source: str, kind: str) -> Any:
    """The layer of ``viewer`` that a dock made as the ``kind`` result of the input ``source``
    (None if there is none): how a reopened dock finds an earlier dock's layers and updates
    them instead of adding duplicates (the tag lives in ``layer.metadata``)."""
    for layer in viewer.layers:
        tag = (getattr(layer, "metadata", None) or {}).get(RESULT_KEY) or {}
        if tag.get("source") == source and tag.get("kind") == kind:
            return layer
    return None


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
