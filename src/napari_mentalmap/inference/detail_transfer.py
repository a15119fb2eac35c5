"""Detail transfer: a model's prediction refined with the acquired slices at the input resolution.

The generative model works on a coarse grid (64 x 64 in-plane, 48 poses), so its mean and
samples miss the 1 mm detail that the acquired context slices hold. Here the model's
prediction ``B`` (already on the input grid) is corrected by the residual of each acquired
slice, ``r_k = A_k - B_k``, carried to the missing slices between two contexts with the
linear-interpolation weights and a decay with the distance from the context. The residual
is split into in-plane frequency bands (differences of Gaussians) and each band has its own
decay length: fine texture decorrelates within a few mm, a smooth intensity offset persists.
The decay lengths are fitted on validation subjects (SSIM of the refined mean) by
:func:`napari_mentalmap.training.bruno_input_grid.fit_decays`.

Outside the region the model covers (the brain, the model's slice range) there is nothing
to refine: the acquired slices are linearly interpolated there (skull, scalp, the top and
bottom of the head). At the context slices the result is exactly the acquired slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

NO_DECAY = 1e6  # a decay length (mm) that keeps a band at full strength at any distance


@dataclass(frozen=True)
class DetailTransferConfig:
    """Band edges (in-plane Gaussian sigmas, mm) and one decay length (mm) per band.

    ``len(decay_mm) == len(band_sigmas_mm) + 1``: the first band is the finest detail (the
    residual minus its blur at the first sigma), the last the smooth remainder.
    """

    band_sigmas_mm: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    decay_mm: tuple[float, ...] = (4.0, 8.0, 16.0, 32.0, 64.0)
    edge_voxels: float = 1.0  # softness of the brain/skull seam (in-plane Gaussian, voxels)

    def __post_init__(self) -> None:
        if len(self.decay_mm) != len(self.band_sigmas_mm) + 1:
            raise ValueError(f"{len(self.band_sigmas_mm) + 1} decay lengths are needed, got {len(self.decay_mm)}")
        if any(d <= 0 for d in self.decay_mm) or any(s <= 0 for s in self.band_sigmas_mm):
            raise ValueError("band sigmas and decay lengths must be positive")

    def to_dict(self) -> dict:
        return {"band_sigmas_mm": list(self.band_sigmas_mm), "decay_mm": list(self.decay_mm),
                "edge_voxels": self.edge_voxels}

    @classmethod
    def from_dict(cls, values: dict) -> DetailTransferConfig:
        return cls(tuple(float(v) for v in values["band_sigmas_mm"]), tuple(float(v) for v in values["decay_mm"]),
                   float(values.get("edge_voxels", 1.0)))


@dataclass
class Neighbours:
    """For every axial slice: the context below and above (index into ``contexts``, -1 if
    none), their interpolation weights and their distances in mm."""

    contexts: list[int]
    lower: np.ndarray
    upper: np.ndarray
    weight_lower: np.ndarray
    weight_upper: np.ndarray
    distance_lower: np.ndarray
    distance_upper: np.ndarray
    distance: np.ndarray = field(init=False)  # to the nearest context (mm)

    def __post_init__(self) -> None:
        self.distance = np.minimum(np.where(self.lower >= 0, self.distance_lower, np.inf),
                                   np.where(self.upper >= 0, self.distance_upper, np.inf))


def neighbours(n_slices: int, contexts: list[int], slice_mm: float) -> Neighbours:
    """Linear-interpolation neighbours of every slice (constant beyond the first/last context)."""
    if not contexts:
        raise ValueError("detail transfer needs at least one acquired slice")
    ordered = np.asarray(sorted(contexts))
    slices = np.arange(n_slices)
    lower = np.searchsorted(ordered, slices, side="right") - 1  # last context <= slice, -1: none
    upper = np.searchsorted(ordered, slices, side="left")  # first context >= slice
    upper = np.where(upper < len(ordered), upper, -1)
    low_slice = ordered[np.maximum(lower, 0)]
    high_slice = ordered[np.maximum(upper, 0)]
    between = (lower >= 0) & (upper >= 0) & (high_slice != low_slice)
    weight_upper = np.where(between, (slices - low_slice) / np.where(between, high_slice - low_slice, 1),
                            np.where(lower >= 0, 0.0, 1.0))
    weight_lower = np.where(lower >= 0, 1.0 - weight_upper, 0.0)
    return Neighbours(list(ordered), lower, upper, weight_lower, weight_upper,
                      np.abs(slices - low_slice) * slice_mm, np.abs(high_slice - slices) * slice_mm)


def band_split(images: np.ndarray, sigmas_mm: tuple[float, ...], pixel_mm: tuple[float, float]) -> np.ndarray:
    """(bands, K, H, W): differences of in-plane Gaussians; the bands sum to ``images``."""
    bands, previous = [], images.astype(np.float32)
    for sigma in sigmas_mm:
        blurred = ndimage.gaussian_filter(previous, (0, sigma / pixel_mm[0], sigma / pixel_mm[1]), mode="nearest")
        bands.append(previous - blurred)
        previous = blurred
    bands.append(previous)
    return np.stack(bands)


def _slice_indices(rows: slice | np.ndarray, n_slices: int) -> np.ndarray:
    return np.arange(n_slices)[rows]


def linear_interpolation(acquired: np.ndarray, near: Neighbours, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
    """The slices ``rows`` linearly interpolated between their two contexts (constant beyond them)."""
    ordered = near.contexts
    indices = _slice_indices(rows, len(near.lower))
    out = np.empty((len(indices), *acquired.shape[1:]), np.float32)
    for position, index in enumerate(indices):
        low, high = ordered[max(near.lower[index], 0)], ordered[max(near.upper[index], 0)]
        np.multiply(acquired[low], np.float32(near.weight_lower[index]), out=out[position])
        if near.weight_upper[index]:
            out[position] += np.float32(near.weight_upper[index]) * acquired[high]
    return out


def outside_known(brain: np.ndarray, near: Neighbours, rows: slice | np.ndarray = slice(None)
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(interpolated non-brain weight, where it is known) of the slices ``rows``."""
    weight = linear_interpolation((~np.asarray(brain, bool)).astype(np.float32), near, rows)
    return weight, weight > 1e-3


def outside_fill(acquired: np.ndarray, brain: np.ndarray, base: np.ndarray, near: Neighbours,
                 rows: slice | np.ndarray = slice(None)) -> np.ndarray:
    """What the slices ``rows`` hold outside the brain: the acquired slices' own non-brain
    voxels (skull, scalp, background) linearly interpolated; where every neighbouring context
    has brain, ``base``. A skull-stripped scan stays 0 there, a head keeps its skull."""
    weight, known = outside_known(brain, near, rows)
    values = linear_interpolation(np.where(brain, np.float32(0), acquired).astype(np.float32), near, rows)
    return np.where(known, values / np.where(known, weight, 1.0), base[rows]).astype(np.float32)


def transferred_residual(residual_bands: np.ndarray, near: Neighbours, decay_mm: tuple[float, ...],
                         rows: slice | np.ndarray = slice(None)) -> np.ndarray:
    """The context residuals (bands, K, H, W) carried to the slices ``rows`` (slices, H, W)."""
    n_bands, _, height, width = residual_bands.shape
    per_context = np.ascontiguousarray(residual_bands.transpose(1, 0, 2, 3)).reshape(-1, n_bands, height * width)
    decay = np.asarray(decay_mm, np.float64)[None, :]
    lower, upper = near.lower[rows], near.upper[rows]
    gains_lower = (near.weight_lower[rows, None] * np.exp(-near.distance_lower[rows, None] / decay)).astype(np.float32)
    gains_upper = (near.weight_upper[rows, None] * np.exp(-near.distance_upper[rows, None] / decay)).astype(np.float32)
    out = np.empty((len(lower), height * width), np.float32)
    for index in range(len(lower)):  # one small matrix product per slice: no volume-sized gathers
        np.matmul(gains_lower[index], per_context[max(lower[index], 0)], out=out[index])
        out[index] += gains_upper[index] @ per_context[max(upper[index], 0)]
    return out.reshape(len(lower), height, width)


def model_weight(brain: np.ndarray, first: int, last: int, edge_voxels: float) -> np.ndarray:
    """Where the model's prediction is used (1) and where the acquired slices are (0):
    the brain mask inside the model's slice range, softened in-plane."""
    weight = np.zeros(brain.shape, np.float32)
    weight[first:last + 1] = brain[first:last + 1]
    if edge_voxels > 0:
        weight = ndimage.gaussian_filter(weight, (0, edge_voxels, edge_voxels))
        weight[:first] = 0.0
        weight[last + 1:] = 0.0
    return weight


def transfer_detail(base: np.ndarray, acquired: np.ndarray, contexts: list[int], spacing: tuple[float, float, float],
                    brain: np.ndarray, weight: np.ndarray, covered: tuple[int, int],
                    config: DetailTransferConfig) -> np.ndarray:
    """``base`` refined with the acquired slices (all arrays on the input grid, canonical,
    axis 0 axial); ``brain`` is the brain mask, ``weight`` is :func:`model_weight` and
    ``covered`` the model's first and last slice. Outside the brain the acquired slices'
    non-brain voxels are interpolated, beyond the model's slice range the acquired slices
    themselves. The context slices come out exact."""
    base = np.asarray(base, np.float32)
    acquired = np.asarray(acquired, np.float32)
    if base.shape != acquired.shape or weight.shape != acquired.shape or brain.shape != acquired.shape:
        raise ValueError(f"shapes differ: base {base.shape}, acquired {acquired.shape}, brain {brain.shape}, "
                         f"weight {weight.shape}")
    near = neighbours(acquired.shape[0], contexts, float(spacing[0]))
    ordered = near.contexts
    residual = weight[ordered] * (acquired[ordered] - base[ordered])
    bands = band_split(residual, config.band_sigmas_mm, (float(spacing[1]), float(spacing[2])))
    refined = base + transferred_residual(bands, near, config.decay_mm)
    fill = linear_interpolation(acquired, near)
    first, last = max(covered[0], 0), min(covered[1], acquired.shape[0] - 1)
    if first <= last:
        inside = slice(first, last + 1)
        fill[inside] = outside_fill(acquired, brain, base, near, inside)
    out = weight * refined + (1.0 - weight) * fill
    out[ordered] = acquired[ordered]
    return out.astype(np.float32)


def fallback_mask(brain: np.ndarray, contexts: list[int], spacing: tuple[float, float, float],
                  covered: tuple[int, int]) -> np.ndarray:
    """1 where :func:`transfer_detail`'s fill outside the brain falls back on the model's
    prediction (inside the model's slice range, every neighbouring context has brain there)."""
    near = neighbours(brain.shape[0], contexts, float(spacing[0]))
    mask = np.zeros(brain.shape, np.float32)
    first, last = max(covered[0], 0), min(covered[1], brain.shape[0] - 1)
    if first <= last:
        mask[first:last + 1] = ~outside_known(brain, near, slice(first, last + 1))[1]
    return mask


def transfer_deviation(deviation: np.ndarray, contexts: list[int], spacing: tuple[float, float, float],
                       weight: np.ndarray, fallback: np.ndarray, config: DetailTransferConfig) -> np.ndarray:
    """``transfer_detail(base + deviation) - transfer_detail(base)`` for any ``base`` (the
    refinement is linear in the model's prediction): a sample is refined as the refined mean
    plus this, at a fraction of the cost. ``fallback`` is :func:`fallback_mask`."""
    near = neighbours(deviation.shape[0], contexts, float(spacing[0]))
    ordered = near.contexts
    bands = band_split(-weight[ordered] * deviation[ordered], config.band_sigmas_mm,
                       (float(spacing[1]), float(spacing[2])))
    out = weight * (deviation + transferred_residual(bands, near, config.decay_mm))
    out += (1.0 - weight) * fallback * deviation
    out[ordered] = 0.0
    return out.astype(np.float32)


@dataclass(frozen=True)
class StdCalibration:
    """The std a user sees, recalibrated on validation subjects (intensities on the model's
    [0, 1] scale): ``exp(log_scale) * (s + eps)^a * (g + eps)^b * (1 + d)^c`` where ``s`` is the
    refined samples' std, ``g`` the in-plane gradient magnitude of the mean (flat where the
    samples disagree on the anatomy, so a negative ``b``) and ``d`` the distance (mm) from the
    nearest acquired slice; 0 on an acquired slice. Its 90 % interval is mean +- 1.645 std."""

    log_scale: float = 0.0
    std_power: float = 1.0
    edge_power: float = 0.0
    distance_power: float = 0.0
    edge_sigma_mm: float = 1.0
    eps: float = 1e-3

    def features(self, std: np.ndarray, mean: np.ndarray, distance_mm: np.ndarray,
                 spacing: tuple[float, float, float]) -> list[np.ndarray]:
        """log(s + eps), log(g + eps), log(1 + d): the regression's inputs."""
        sigma = (0.0, self.edge_sigma_mm / float(spacing[1]), self.edge_sigma_mm / float(spacing[2]))
        edge = ndimage.gaussian_gradient_magnitude(np.asarray(mean, np.float32), sigma)
        distance = np.broadcast_to(np.asarray(distance_mm, np.float32)[:, None, None], std.shape)
        return [np.log(std + self.eps), np.log(edge + self.eps), np.log1p(distance)]

    def apply(self, std: np.ndarray, mean: np.ndarray, distance_mm: np.ndarray,
              spacing: tuple[float, float, float]) -> np.ndarray:
        """The calibrated std of every voxel (``distance_mm`` per axial slice)."""
        log_std, log_edge, log_distance = self.features(std, mean, distance_mm, spacing)
        out = np.exp(self.log_scale + self.std_power * log_std + self.edge_power * log_edge
                     + self.distance_power * log_distance).astype(np.float32)
        out[np.asarray(distance_mm) <= 0] = 0.0
        return out

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in
                ("log_scale", "std_power", "edge_power", "distance_power", "edge_sigma_mm", "eps")}

    @classmethod
    def from_dict(cls, values: dict) -> StdCalibration:
        return cls(**{name: float(value) for name, value in values.items()})
