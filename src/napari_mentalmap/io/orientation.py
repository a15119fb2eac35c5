"""The canonical (S, P, L) array orientation: to and from a file's own axes, napari placement.

See :mod:`.nifti` for the convention.
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

CANONICAL_AXCODES: tuple[str, str, str] = ("S", "P", "L")
"""nibabel axis codes of the canonical array (axis 0 -> superior, 1 -> posterior, 2 -> left)."""
_OBLIQUE_TOLERANCE = 1e-3


def canonical_orientation_transform(affine: np.ndarray) -> np.ndarray:
    """nibabel orientation transform from the array of ``affine`` to the canonical array."""
    source_ornt = io_orientation(affine)
    return ornt_transform(source_ornt, axcodes2ornt(CANONICAL_AXCODES))


def to_canonical(
    data: np.ndarray, affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Reorient a 3-D (or 3-D + trailing channels) array to canonical; return (array, affine)."""
    transform = canonical_orientation_transform(affine)
    canonical = apply_orientation(data, transform)
    canonical_affine = affine @ inv_ornt_aff(transform, data.shape[:3])
    return canonical, canonical_affine


def from_canonical(data: np.ndarray, original_affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_canonical`: put a canonical array back in the file's axis order."""
    source_ornt = io_orientation(original_affine)
    back = ornt_transform(axcodes2ornt(CANONICAL_AXCODES), source_ornt)
    return apply_orientation(data, back)


def spacing_and_origin(canonical_affine: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Voxel size and napari ``translate`` of a canonical array from its affine.

    The canonical axes point to superior, posterior and left, i.e. along +z, -y and -x
    of RAS+ world, so the origin is ``(z0, -y0, -x0)`` of voxel (0, 0, 0).
    """
    spacing = tuple(float(s) for s in np.linalg.norm(canonical_affine[:3, :3], axis=0))
    x0, y0, z0 = (float(v) for v in canonical_affine[:3, 3])
    return spacing, (z0, -y0, -x0)  # type: ignore[return-value]


def affine_from_scale_translate(
    scale: tuple[float, ...] | np.ndarray, translate: tuple[float, ...] | np.ndarray
) -> np.ndarray:
    """Affine of a canonical array displayed with napari ``scale`` / ``translate`` (last 3 axes)."""
    sz, sp, sl = (float(s) for s in list(scale)[-3:])
    tz, tp, tl = (float(t) for t in list(translate)[-3:])
    affine = np.zeros((4, 4))
    affine[0, 2] = -sl  # axis 2 goes left, i.e. towards -x
    affine[1, 1] = -sp  # axis 1 goes posterior, i.e. towards -y
    affine[2, 0] = sz  # axis 0 goes superior, i.e. towards +z
    affine[:3, 3] = (-tl, -tp, tz)
    affine[3, 3] = 1.0
    return affine


def is_oblique_affine(affine: np.ndarray, tolerance: float = _OBLIQUE_TOLERANCE) -> bool:
    """True when the voxel axes are not aligned with the world axes (rotation or shear)."""
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return bool(np.any(np.abs(np.abs(columns) - np.round(np.abs(columns))) > tolerance))
