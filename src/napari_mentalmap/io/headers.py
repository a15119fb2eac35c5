"""Headers kept as plain bytes in layer metadata, and the labels-or-image guess of the reader."""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np

MAX_LABEL_VALUES = 256
_LABEL_NEIGHBOUR_EQUALITY = 0.5


def looks_like_labels(data: np.ndarray) -> bool:
    """Heuristic: integer data with at most 256 values that is piecewise constant.

    A mask (<= 2 values) always counts. Otherwise at least half of the non-zero voxels
    must equal their next neighbour (pooled over the three axes) — true for segmentations, false for
    integer-stored images such as an 8-bit template or probability map.
    """
    if not np.issubdtype(data.dtype, np.integer) and data.dtype != np.bool_:
        return False
    if data.ndim < 3 or data.size == 0:
        return False
    values = np.unique(data)
    if values.size > MAX_LABEL_VALUES:
        return False
    if values.size <= 2:
        return True
    equal = compared = 0
    for axis in range(3):
        first = np.moveaxis(data, axis, 0)[:-1]
        second = np.moveaxis(data, axis, 0)[1:]
        nonzero = first != 0
        equal += int(np.count_nonzero(first[nonzero] == second[nonzero]))
        compared += int(np.count_nonzero(nonzero))
    if compared == 0:
        return True
    return equal / compared >= _LABEL_NEIGHBOUR_EQUALITY


def header_to_bytes(header: Any) -> bytes | None:
    """Binary form of a NIfTI/MGH header (``None`` when it has none)."""
    try:
        return header.binaryblock
    except AttributeError:
        return None


def header_from_bytes(block: bytes | None, header_format: str | None = None) -> Any:
    """Rebuild a header saved with :func:`header_to_bytes` (``None`` if not possible)."""
    if not block:
        return None
    header_classes = {
        "Nifti1Header": nib.Nifti1Header,
        "Nifti2Header": nib.Nifti2Header,
        "MGHHeader": nib.freesurfer.mghformat.MGHHeader,
    }
    header_class = header_classes.get(header_format or "", None)
    if header_class is None:
        header_class = nib.Nifti1Header if len(block) == 348 else nib.Nifti2Header
    try:
        return header_class(binaryblock=block)
    except Exception:  # a malformed stored header only costs us the header
        return None
