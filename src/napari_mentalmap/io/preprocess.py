"""Volume preprocessing shared by every model: intensity normalisation,
crop + resample to a model grid (poses x H x W) and back to the input grid.

All functions take arrays in the canonical orientation of :mod:`napari_mentalmap.io.nifti`
(axis 0 = axial, inferior -> superior) and the voxel spacing in mm in the same axis order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .masks import (  # noqa: F401 (re-exported: the mask helpers lived here)
    NoBrainError,
    bounding_box,
    brain_mask,
    fill_holes,
    largest_component_filled,
    padded_box,
)


@dataclass(frozen=True)
class GridSpec:
    """The model grid: ``n_poses`` axial slices of ``size`` x ``size`` pixels.

    The poses cover the middle ``coverage`` fraction of the brain's axial extent (the
    paper's "middle 75 % of the brain"); in-plane, a square field of view of the brain's
    largest in-plane extent plus ``margin`` on each side.

    Intensities: the 0.5th percentile inside the brain maps to 0; then either the 99.5th
    percentile maps to 1 (``median_at`` None) or the brain's median maps to ``median_at``
    (robust to how many very bright voxels, e.g. lesions, a scan has), clipped to [0, 1].
    """

    n_poses: int = 48
    size: int = 64
    coverage: float = 0.75
    margin: float = 0.06
    median_at: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_GRID = GridSpec()
"""The model grid of the shipped models (immutable, so safe as a default argument)."""


@dataclass(frozen=True)
class GridMapping:
    """Axis-aligned map between an input volume's voxels and the model grid.

    Grid index ``(p, r, c)`` sits at input voxel coordinates
    ``(z0 + p * dz, y0 + r * dy, x0 + c * dx)``.
    """

    input_shape: tuple[int, int, int]
    start: tuple[float, float, float]  # input voxel coordinate of grid index (0, 0, 0)
    step: tuple[float, float, float]  # input voxels per grid step along each axis
    grid_shape: tuple[int, int, int]

    @property
    def pose_positions(self) -> np.ndarray:
        """Input axial index (float) of every pose."""
        return self.start[0] + self.step[0] * np.arange(self.grid_shape[0])

    def pose_to_slice(self, pose: int) -> int:
        """Nearest input axial slice index of a grid pose."""
        return int(round(float(self.pose_positions[pose])))

    def slice_to_pose(self, slice_index: float) -> float:
        """Grid pose coordinate (float) of an input axial slice index."""
        return (float(slice_index) - self.start[0]) / self.step[0]

    def covered_slices(self) -> tuple[int, int]:
        """First and last input axial slice inside the grid's pose range (inclusive)."""
        first = int(np.ceil(self.start[0] - 1e-6))
        last = int(np.floor(self.pose_positions[-1] + 1e-6))
        return max(first, 0), min(last, self.input_shape[0] - 1)

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> GridMapping:
        return cls(**{k: tuple(v) for k, v in values.items()})


def intensity_range(
    volume: np.ndarray,
    mask: np.ndarray | None = None,
    low: float = 0.5,
    high: float = 99.5,
    median_at: float | None = None,
) -> tuple[float, float]:
    """The ``low``/``high`` percentiles of the intensities inside ``mask``.

    With ``median_at``, the upper value is instead chosen so that the median maps to
    ``median_at`` when ``(low, upper)`` is mapped to (0, 1). Without a mask, the percentiles are taken over voxels above the volume's minimum
    (the background of most scans). Raises ``NoBrainError`` when there is nothing to
    normalise (almost no foreground, or a constant brain).
    """
    volume = np.asarray(volume, dtype=np.float32)
    if mask is None:
        foreground = volume[volume > volume.min()]
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != volume.shape:
            raise ValueError(f"mask shape {mask.shape} differs from volume shape {volume.shape}")
        foreground = volume[mask]
    foreground = foreground[np.isfinite(foreground)]
    if foreground.size < 10:
        raise NoBrainError("the volume has (almost) no foreground voxels to normalise")
    # a subsample keeps percentiles of a 256^3 volume fast and their value within noise
    if foreground.size > 2_000_000:
        foreground = foreground[:: foreground.size // 1_000_000]
    lo, hi, median = np.percentile(foreground, [low, high, 50.0])
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        raise NoBrainError("the volume is constant inside the brain: nothing to normalise")
    if median_at is not None:
        if not 0.0 < median_at < 1.0:
            raise ValueError(f"median_at must be in (0, 1), got {median_at}")
        if median - lo <= 1e-12 * max(1.0, abs(median)):
            raise NoBrainError("half of the brain is at the lowest intensity: nothing to normalise")
        hi = lo + (median - lo) / median_at
    return float(lo), float(hi)


def normalize_intensity(
    volume: np.ndarray,
    mask: np.ndarray | None = None,
    low: float = 0.5,
    high: float = 99.5,
    clip: bool = True,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of the intensities inside ``mask`` to 0 and 1.

    ``value_range`` gives those two intensities directly (see :func:`intensity_range`).
    Voxels outside the mask are set to 0.
    """
    volume = np.asarray(volume, dtype=np.float32)
    lo, hi = value_range if value_range is not None else intensity_range(volume, mask, low, high)
    out = (volume - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    if clip:
        np.clip(out, 0.0, 1.0, out=out)
    if mask is not None:
        out[~np.asarray(mask, dtype=bool)] = 0.0
    return out


def plan_grid(
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    spec: GridSpec = DEFAULT_GRID,
) -> GridMapping:
    """Place the model grid on a volume from its brain mask.

    Axially, ``spec.n_poses`` evenly spaced poses over the middle ``spec.coverage`` of
    the brain's extent; in-plane, a square (in mm) around the brain's bounding box, so
    anisotropic voxels are not distorted.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"expected a 3-D mask, got shape {mask.shape}")
    if not mask.any():
        raise NoBrainError("the brain mask is empty: cannot place the model grid")
    extents = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        extents.append((float(present[0]), float(present[-1])))
    (z_lo, z_hi), (y_lo, y_hi), (x_lo, x_hi) = extents
    if z_hi - z_lo < 2:
        raise NoBrainError("the brain spans fewer than 3 axial slices: is this a 3-D volume?")
    length = z_hi - z_lo
    first = z_lo + length * (1 - spec.coverage) / 2
    last = z_hi - length * (1 - spec.coverage) / 2
    dz = (last - first) / max(spec.n_poses - 1, 1)

    side_mm = max((y_hi - y_lo + 1) * spacing[1], (x_hi - x_lo + 1) * spacing[2])
    side_mm *= 1 + 2 * spec.margin
    pixel_mm = side_mm / spec.size
    dy, dx = pixel_mm / spacing[1], pixel_mm / spacing[2]
    y_center, x_center = (y_lo + y_hi) / 2, (x_lo + x_hi) / 2
    y0 = y_center - dy * (spec.size - 1) / 2
    x0 = x_center - dx * (spec.size - 1) / 2
    return GridMapping(
        input_shape=tuple(int(s) for s in mask.shape),
        start=(first, y0, x0),
        step=(dz, dy, dx),
        grid_shape=(spec.n_poses, spec.size, spec.size),
    )


def anti_alias(volume: np.ndarray, step: tuple[float, ...], order: int = 1) -> np.ndarray:
    """The Gaussian pre-filter :func:`resample_to_grid` applies before sampling at ``step``
    input voxels per grid voxel (none for nearest-neighbour sampling or no shrinking)."""
    sigmas = [0.4 * s if s > 1.2 else 0.0 for s in step]
    if order > 0 and any(sigmas):
        return ndimage.gaussian_filter(volume, sigmas, mode="constant")
    return volume


def resample_to_grid(volume: np.ndarray, mapping: GridMapping, order: int = 1,
                     prefiltered: bool = False) -> np.ndarray:
    """Sample ``volume`` (input grid) at the model grid, with anti-aliasing when shrinking
    (already done when ``prefiltered``: ``volume`` is :func:`anti_alias` of the input)."""
    volume = np.asarray(volume, dtype=np.float32)
    if volume.shape != mapping.input_shape:
        raise ValueError(f"volume shape {volume.shape} != mapping input {mapping.input_shape}")
    if not prefiltered:
        volume = anti_alias(volume, mapping.step, order)
    return ndimage.affine_transform(
        volume,
        matrix=np.asarray(mapping.step),
        offset=np.asarray(mapping.start),
        output_shape=mapping.grid_shape,
        order=order,
        mode="constant",
        cval=0.0,
    ).astype(np.float32)


def _linear_weights(coordinates: np.ndarray, n_in: int) -> np.ndarray:
    """(len(coordinates), n_in) linear-interpolation matrix, edges clamped (``mode="nearest"``)."""
    clamped = np.clip(coordinates, 0.0, n_in - 1.0)
    matrix = np.zeros((len(coordinates), n_in), np.float32)
    if n_in == 1:
        matrix[:, 0] = 1.0
        return matrix
    low = np.minimum(np.floor(clamped).astype(int), n_in - 2)
    fraction = (clamped - low).astype(np.float32)
    rows = np.arange(len(coordinates))
    matrix[rows, low] = 1.0 - fraction
    matrix[rows, low + 1] += fraction
    return matrix


def resample_from_grid(
    grid: np.ndarray,
    mapping: GridMapping,
    order: int = 1,
    fill_value: float = np.nan,
    rows: slice = slice(None),
) -> np.ndarray:
    """Map a model-grid volume (poses x H x W, or leading batch axes) back to the input grid
    (only its axial ``rows``, e.g. to work in slabs).

    Input voxels outside the grid's pose range or field of view get ``fill_value``.
    """
    grid = np.asarray(grid, dtype=np.float32)
    if grid.shape[-3:] != mapping.grid_shape:
        raise ValueError(f"grid shape {grid.shape[-3:]} != mapping grid {mapping.grid_shape}")
    if grid.ndim > 3:
        return np.stack([resample_from_grid(g, mapping, order, fill_value, rows) for g in grid])
    first, stop, _ = rows.indices(mapping.input_shape[0])
    output_shape = (max(stop - first, 0), *mapping.input_shape[1:])
    inverse_step = 1.0 / np.asarray(mapping.step)
    inverse_offset = (np.array([first, 0.0, 0.0]) - np.asarray(mapping.start)) * inverse_step
    coords = [np.arange(first, first + output_shape[0]), *(np.arange(n) for n in mapping.input_shape[1:])]
    if order == 1:  # trilinear is separable: three small matrix products, ~10x faster than affine_transform
        weights = [_linear_weights(np.arange(n) * inverse_step[axis] + inverse_offset[axis], grid.shape[axis])
                   for axis, n in enumerate(output_shape)]
        out = np.matmul(weights[1], grid @ weights[2].T)
        out = (weights[0] @ out.reshape(grid.shape[0], -1)).reshape(output_shape).astype(np.float32)
    else:
        # pad with the edge values by half a step so voxels between the last pose and the edge
        # of its slab are not lost to the interpolation's boundary; the pose range is enforced below
        out = ndimage.affine_transform(
            grid,
            matrix=inverse_step,
            offset=inverse_offset,
            output_shape=output_shape,
            order=order,
            mode="nearest",
        ).astype(np.float32)
    inside = []
    for axis, c in enumerate(coords):
        g = (c - mapping.start[axis]) * inverse_step[axis]
        inside.append((g >= -0.5) & (g <= mapping.grid_shape[axis] - 0.5))
    valid = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    out[~valid] = fill_value
    return out


@dataclass
class ModelGridVolume:
    """A volume prepared for a model: normalised intensities and mask on the grid."""

    image: np.ndarray  # (poses, H, W) float32 in [0, 1], 0 outside the brain
    mask: np.ndarray  # (poses, H, W) bool
    mapping: GridMapping
    intensity_range: tuple[float, float]  # input intensities mapped to 0 and 1
    normalised: np.ndarray | None = None  # the input volume normalised the same way (input grid)


def to_model_grid(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    mask: np.ndarray | None = None,
    spec: GridSpec = DEFAULT_GRID,
    low: float = 0.5,
    high: float = 99.5,
) -> ModelGridVolume:
    """Normalise inside the brain mask (given or automatic), crop and resample to ``spec``."""
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    if not np.isfinite(volume).all():
        volume = np.nan_to_num(volume, nan=0.0, posinf=0.0, neginf=0.0)
    if mask is None:
        mask = brain_mask(volume, spacing)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != volume.shape:
        raise ValueError(f"mask shape {mask.shape} differs from volume shape {volume.shape}")
    if mask.sum() < 100:
        raise NoBrainError("the brain mask holds fewer than 100 voxels: no brain to model")
    lo, hi = intensity_range(volume, mask, low, high, spec.median_at)
    normalised = normalize_intensity(volume, mask, value_range=(lo, hi))
    mapping = plan_grid(mask, spacing, spec)
    image = resample_to_grid(normalised, mapping)
    grid_mask = resample_to_grid(mask.astype(np.float32), mapping) > 0.5
    image = np.clip(image, 0.0, 1.0) * grid_mask
    return ModelGridVolume(image.astype(np.float32), grid_mask, mapping, (lo, hi), normalised)
