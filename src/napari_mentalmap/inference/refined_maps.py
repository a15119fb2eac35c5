"""The mental map a user sees: the model's mean and samples on the input's own voxel grid,
refined with the acquired slices (:mod:`.detail_transfer`), with a calibrated std.

What the settings stored with the BRUNO weights (``record["input_grid"]``) say:
``detail_transfer`` (band edges and decay lengths) and ``std_calibration`` (the std a user
sees as a function of the samples' spread, the mean's edges and the distance from the
nearest acquired slice), both fitted on validation subjects by
``mentalmap train bruno-input-grid``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .detail_transfer import (
    DetailTransferConfig,
    StdCalibration,
    fallback_mask,
    model_weight,
    neighbours,
    transfer_detail,
    transfer_deviation,
)
from .jobs import Progress

SAMPLE_BYTES_LIMIT = 2 * 1024**3
"""Refined samples are kept on the input grid up to this size (else only their std is)."""
NOT_MODELLED = "not modelled (outside the brain or the model's slice range: filled from the acquired slices)"


@dataclass(frozen=True)
class InputGridSettings:
    """How the model's output is brought to the input grid (stored with the weights)."""

    detail_transfer: DetailTransferConfig
    std_calibration: StdCalibration

    def to_dict(self) -> dict:
        return {"detail_transfer": self.detail_transfer.to_dict(), "std_calibration": self.std_calibration.to_dict()}

    @classmethod
    def from_dict(cls, values: dict | None) -> InputGridSettings | None:
        if not values:
            return None
        return cls(DetailTransferConfig.from_dict(values["detail_transfer"]),
                   StdCalibration.from_dict(values["std_calibration"]))


class GridResult(Protocol):
    """What is used of a :class:`~napari_mentalmap.inference.mental_map.MentalMap`."""

    mean_grid: np.ndarray
    samples_grid: np.ndarray | None
    context_slices: list[int]
    intensity_range: tuple[float, float]
    spacing: tuple[float, float, float] | None
    brain_mask: np.ndarray | None
    mapping: object

    def to_input_grid_job(self, grid: np.ndarray, fill_value: float = 0.0, acquired: np.ndarray | None = None,
                          progress: Progress = (0, 1, "")) -> Generator[Progress, None, np.ndarray]: ...


@dataclass
class RefinedMaps:
    """Refined mean, samples (or None) and calibrated std (or None), in input units."""

    mean: np.ndarray
    samples: np.ndarray | None
    std: np.ndarray | None
    modelled: np.ndarray  # bool, voxels whose values come from the model (brain, model's slice range)


def refined_maps_job(result: GridResult, volume: np.ndarray, settings: InputGridSettings,
                     progress: tuple[int, int] = (0, 1)) -> Generator[Progress, None, RefinedMaps]:
    """Resample mean and samples onto the input grid and refine them with the acquired slices
    (a progress report after each map, for Cancel). Needs contexts and the brain mask."""
    if not result.context_slices or result.brain_mask is None or result.spacing is None:
        raise ValueError("refinement needs acquired context slices and the brain mask")
    lo, hi = result.intensity_range
    scale = np.float32(max(hi - lo, 1e-6))
    acquired = (np.asarray(volume, np.float32) - np.float32(lo)) / scale
    contexts, spacing, brain = list(result.context_slices), result.spacing, result.brain_mask
    first, last = result.mapping.covered_slices()
    weight = model_weight(brain, first, last, settings.detail_transfer.edge_voxels)

    def on_input(grid: np.ndarray, message: str) -> Generator[Progress, None, np.ndarray]:
        values = yield from result.to_input_grid_job(grid, lo, progress=(*progress, message))
        return (values - np.float32(lo)) / scale

    base = yield from on_input(result.mean_grid, "resampling the mean onto the input grid")
    mean = transfer_detail(base, acquired, contexts, spacing, brain, weight, (first, last), settings.detail_transfer)
    yield (*progress, "refined the mean with the acquired slices")
    fallback = fallback_mask(brain, contexts, spacing, (first, last))
    samples_grid = result.samples_grid
    n_samples = 0 if samples_grid is None else len(samples_grid)
    keep = n_samples * acquired.size * 4 <= SAMPLE_BYTES_LIMIT
    samples = np.empty((n_samples, *acquired.shape), np.float32) if keep and n_samples else None
    total = np.zeros(acquired.shape, np.float64) if n_samples > 1 else None
    squares = np.zeros(acquired.shape, np.float64) if n_samples > 1 else None
    for index in range(n_samples):
        deviation = (yield from on_input(samples_grid[index], f"refining sample {index + 1}/{n_samples}")) - base
        sample = mean + transfer_deviation(deviation, contexts, spacing, weight, fallback, settings.detail_transfer)
        if samples is not None:
            samples[index] = sample
        if total is not None:
            total += sample
            squares += np.square(sample, dtype=np.float64)
    std = None
    if total is not None:
        spread = np.sqrt(np.maximum(squares / n_samples - np.square(total / n_samples), 0.0)).astype(np.float32)
        yield (*progress, "calibrating the std")  # a Cancel point before each of the last two steps
        distance = neighbours(acquired.shape[0], contexts, float(spacing[0])).distance
        std = settings.std_calibration.apply(spread, mean, distance, spacing)
        yield (*progress, "calibrated the std")
    modelled = weight >= 0.5
    modelled[contexts] = False
    exact = np.asarray(volume, np.float32)[contexts]

    def to_units(array: np.ndarray) -> np.ndarray:
        array = array * scale + np.float32(lo)
        array[..., contexts, :, :] = exact  # bit-exact, not through the [0, 1] scale and back
        return array

    return RefinedMaps(to_units(mean), None if samples is None else to_units(samples),
                       None if std is None else std * scale, modelled)
