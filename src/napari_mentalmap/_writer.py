"""npe2 writers: napari image / labels layers -> NIfTI in the source file's orientation.

Which reference a layer is written with, in order:

1. the ``mentalmap_volume`` metadata our reader (and every dock result) stores, when it
   fits the array;
2. else the metadata of a layer of this plugin open in the viewer with the same spatial
   shape and world placement (a layer made with napari's *New labels layer* over one of
   our images, oblique images included);
3. else napari's ``scale``/``translate`` in this plugin's canonical (S, P, L) convention,
   but only when the layer carries nothing else: a layer with negative scales, a rotation,
   a shear or an affine comes from another reader whose anatomical frame is unknown here,
   and is refused with a message instead of being written with permuted or rotated axes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._reader import METADATA_KEY
from .io.nifti import canonical_orientation_transform, is_volume_path, write_volume


class ForeignLayerError(ValueError):
    """The layer's anatomical frame is unknown: writing it would permute or rotate its axes."""


def _stored_reference(meta: dict[str, Any], spatial_shape: tuple[int, ...]) -> dict[str, Any] | None:
    """The stored reader metadata of ``meta`` when its grid has ``spatial_shape``."""
    stored = (meta.get("metadata") or {}).get(METADATA_KEY)
    if stored and stored.get("original_shape") is not None and "original_affine" in stored:
        # The canonical shape is the original shape permuted into canonical axis order.
        transform = canonical_orientation_transform(np.asarray(stored["original_affine"], dtype=float))
        original = tuple(int(s) for s in stored["original_shape"])
        canonical_shape = tuple(original[int(axis)] for axis in np.argsort(transform[:, 0]))
        if canonical_shape == spatial_shape:
            return stored
    return None


def _placement(meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    scale = np.asarray(meta.get("scale") if meta.get("scale") is not None else (1.0, 1.0, 1.0), float)[-3:]
    translate = np.asarray(meta.get("translate") if meta.get("translate") is not None else (0.0, 0.0, 0.0),
                           float)[-3:]
    return scale, translate


def _extra_transform(meta: dict[str, Any]) -> bool:
    """True when the layer carries a rotation, shear or affine beyond scale/translate."""
    for key in ("rotate", "shear", "affine"):
        value = meta.get(key)
        if value is None:
            continue
        array = np.asarray(getattr(value, "affine_matrix", value), float)
        if key == "shear":
            if np.any(np.abs(array) > 1e-9):
                return True
        elif array.ndim == 2 and not np.allclose(array, np.eye(array.shape[0]), atol=1e-9):
            return True
    return False


def _reference_in_viewer(meta: dict[str, Any], spatial_shape: tuple[int, ...]) -> dict[str, Any] | None:
    """Metadata of a plugin layer in the current viewer on the same grid as the layer saved."""
    try:
        import napari
    except ImportError:
        return None
    viewer = napari.current_viewer()
    if viewer is None:
        return None
    scale, translate = _placement(meta)
    for layer in viewer.layers:
        stored = _stored_reference({"metadata": getattr(layer, "metadata", {})}, spatial_shape)
        if stored is None or tuple(layer.data.shape[-3:]) != spatial_shape:
            continue
        layer_scale, layer_translate = _placement({"scale": layer.scale, "translate": layer.translate})
        if np.allclose(layer_scale, scale, rtol=1e-5) and np.allclose(layer_translate, translate, atol=1e-4):
            return stored
    return None


def _reference_for_layer(data: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    """The reference ``write_volume`` needs for the layer (see the module docstring)."""
    spatial_shape = tuple(int(s) for s in data.shape[-3:])
    stored = _stored_reference(meta, spatial_shape) or _reference_in_viewer(meta, spatial_shape)
    if stored is not None:
        return stored
    scale, translate = _placement(meta)
    if np.any(scale <= 0) or _extra_transform(meta):
        name = meta.get("name") or "this layer"
        raise ForeignLayerError(
            f"cannot save {name!r} as NIfTI with napari-mentalmap: it was not opened by this plugin and "
            "carries a transform (negative scale, rotation, shear or affine) whose anatomical "
            "orientation is unknown here, so the file would have permuted or rotated axes. Save it "
            "with the plugin that opened it, or draw it over an image opened with napari-mentalmap."
        )
    return {"scale": tuple(scale), "translate": tuple(translate)}


def _write_layer(path: str, data: Any, meta: dict[str, Any], is_labels: bool) -> list[str]:
    if not is_volume_path(path):
        path = f"{path}.nii.gz"
    array = np.asarray(data)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim not in (3, 4):
        raise ValueError(f"cannot save a {array.ndim}-D layer as NIfTI (3-D or 4-D only)")
    reference = _reference_for_layer(array, meta)
    written = write_volume(path, array, reference, is_labels=is_labels,
                           description=f"napari-mentalmap layer {meta.get('name') or ''}".strip())
    return [str(written)]


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save an image layer as NIfTI (float32) in the orientation of the file it came from."""
    return _write_layer(path, data, meta, is_labels=False)


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a labels layer as NIfTI (integer) in the orientation of the file it came from."""
    return _write_layer(path, data, meta, is_labels=True)
