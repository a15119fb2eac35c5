"""Brain masks and mask geometry: a classic automatic brain mask, hole filling, the largest
component, bounding boxes. Arrays in the canonical orientation of :mod:`.nifti`, spacing in mm."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import filters


class NoBrainError(ValueError):
    """The volume holds no brain-like foreground (empty, constant or all masked)."""


def _ball(radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """An ellipsoidal structuring element of a physical radius on an anisotropic grid."""
    radii = [max(1, int(round(radius_mm / s))) for s in spacing]
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radii)]
    return sum((g * s / radius_mm) ** 2 for g, s in zip(grids, spacing, strict=True)) <= 1.0


def brain_mask(
    volume: np.ndarray,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    opening_mm: float = 6.0,
) -> np.ndarray:
    """A simple automatic brain mask for skull-stripped and non-stripped T1/FLAIR.

    Otsu threshold of the foreground, a morphological opening of ``opening_mm`` that cuts
    thin bridges between brain and skull/scalp, the largest connected component, and
    hole filling. On a skull-stripped volume this is essentially its non-zero region.
    It is a rough mask for cropping and normalising, not a segmentation.
    """
    volume = np.nan_to_num(np.asarray(volume, dtype=np.float32))
    background = volume.min()
    foreground = volume > background
    if foreground.sum() < 100:
        raise NoBrainError("the volume is empty (all voxels equal): no brain to find")
    sample = volume[foreground]
    if sample.size > 1_000_000:
        sample = sample[:: sample.size // 500_000]
    threshold = filters.threshold_otsu(sample)
    head = volume > threshold * 0.5
    # downsample to ~2 mm for the morphology: fast on 1 mm volumes, same result at this scale
    factors = [max(1, int(round(2.0 / s))) for s in spacing]
    small = head[:: factors[0], :: factors[1], :: factors[2]]
    small_spacing = tuple(s * f for s, f in zip(spacing, factors, strict=True))
    small = fill_holes(small)
    opened = ndimage.binary_opening(small, structure=_ball(opening_mm, small_spacing))
    labels, n_labels = ndimage.label(opened)
    if n_labels == 0:
        raise NoBrainError("no brain-like component found (the volume may be noise only)")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = labels == sizes.argmax()
    largest = ndimage.binary_dilation(largest, structure=_ball(opening_mm / 3, small_spacing))
    largest = fill_holes(largest & small)
    if factors != [1, 1, 1]:
        zoom = [full / part for full, part in zip(volume.shape, largest.shape, strict=True)]
        largest = ndimage.zoom(largest.astype(np.uint8), zoom, order=0).astype(bool)
        largest = _fit_shape(largest, volume.shape)
    return largest & head


def fill_holes(mask: np.ndarray, per_slice: bool = False) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` of a 3-D mask (face connectivity), in 3-D or in
    every axial slice at once (``per_slice``), by labelling the background once: the
    components that do not reach the border are the holes."""
    structure = ndimage.generate_binary_structure(3, 1)
    if per_slice:
        structure[0] = structure[2] = False  # no connection between axial slices
    labels, _ = ndimage.label(~mask, structure)
    faces = [labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    if not per_slice:
        faces += [labels[0], labels[-1]]
    outside = np.zeros(int(labels.max()) + 1, dtype=bool)
    for face in faces:
        outside[face] = True
    outside[0] = True  # label 0 is the mask itself
    return mask | ~outside[labels]


def padded_box(box: tuple[slice, ...], pad: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """``box`` grown by ``pad`` voxels on every side, clipped to an array of ``shape``."""
    return tuple(slice(max(b.start - pad, 0), min(b.stop + pad, n)) for b, n in zip(box, shape, strict=True))


def bounding_box(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...] | None:
    """Bounding box of the True voxels of ``mask`` grown by ``pad`` (None when there are none)."""
    found = ndimage.find_objects(np.asarray(mask).astype(np.int8))
    return padded_box(found[0], pad, mask.shape) if found else None


def largest_component_filled(mask: np.ndarray) -> np.ndarray:
    """Largest 3-D connected component of ``mask``, holes filled in 3-D and per axial slice
    (all False when ``mask`` is empty)."""
    labels, n_labels = ndimage.label(mask)
    if n_labels == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    label = int(sizes.argmax())
    # work in the component's bounding box plus a one-voxel background ring: the ring joins
    # everything outside the box, so the holes found there are exactly the whole volume's
    box = padded_box(ndimage.find_objects(labels, max_label=label)[label - 1], 1, mask.shape)
    largest = fill_holes(fill_holes(labels[box] == label), per_slice=True)
    out = np.zeros(mask.shape, dtype=bool)
    out[box] = largest
    return out


def _fit_shape(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Crop or zero-pad ``array`` to ``shape`` (corrects off-by-one sizes after zooming)."""
    out = np.zeros(shape, dtype=array.dtype)
    common = tuple(slice(0, min(a, b)) for a, b in zip(array.shape, shape, strict=True))
    out[common] = array[common]
    return out
