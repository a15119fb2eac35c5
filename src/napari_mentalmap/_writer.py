"""npe2 writers: napari image / labels layers -> NIfTI in the source file's orientation."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._reader import METADATA_KEY
from .io.nifti import canonical_orientation_transform, is_volume_path, write_volume


def _reference_for_layer(data: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
    """Metadata saved by our reader when it fits the array, else napari scale/translate."""
    stored = (meta.get("metadata") or {}).get(METADATA_KEY)
    spatial_shape = tuple(data.shape[-3:])
    if stored and stored.get("original_shape") is not None and "original_affine" in stored:
        # The canonical shape is the original shape permuted into canonical axis order.
        transform = canonical_orientation_transform(np.asarray(stored["original_affine"], dtype=float))
        original = tuple(int(s) for s in stored["original_shape"])
        canonical_shape = tuple(original[int(axis)] for axis in np.argsort(transform[:, 0]))
        if canonical_shape == spatial_shape:
            return stored
    scale = meta.get("scale")
    translate = meta.get("translate")
    return {
        "scale": tuple(scale)[-3:] if scale is not None else (1.0, 1.0, 1.0),
        "translate": tuple(translate)[-3:] if translate is not None else (0.0, 0.0, 0.0),
    }


def _write_layer(path: str, data: Any, meta: dict[str, Any], is_labels: bool) -> list[str]:
    if not is_volume_path(path):
        path = f"{path}.nii.gz"
    array = np.asarray(data)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim not in (3, 4):
        raise ValueError(f"cannot save a {array.ndim}-D layer as NIfTI (3-D or 4-D only)")
    reference = _reference_for_layer(array, meta)
    written = write_volume(path, array, reference, is_labels=is_labels)
    return [str(written)]


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save an image layer as NIfTI (float32) in the orientation of the file it came from."""
    return _write_layer(path, data, meta, is_labels=False)


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a labels layer as NIfTI (integer) in the orientation of the file it came from."""
    return _write_layer(path, data, meta, is_labels=True)
