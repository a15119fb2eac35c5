"""Intensity normalisation and the model grid's normalised input (io.preprocess)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mentalmap.io.preprocess import (
    GridSpec,
    NoBrainError,
    intensity_range,
    normalize_intensity,
    to_model_grid,
)


def _brain(bright_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    volume = np.zeros((30, 40, 40), np.float32)
    mask = np.zeros(volume.shape, bool)
    mask[5:25, 8:32, 8:32] = True
    volume[mask] = rng.uniform(100.0, 200.0, int(mask.sum()))
    bright = mask & (rng.random(volume.shape) < bright_fraction)
    volume[bright] = 400.0  # "lesions"
    return volume, mask


def test_percentile_and_median_ranges() -> None:
    volume, mask = _brain()
    lo, hi = intensity_range(volume, mask)
    assert lo == pytest.approx(np.percentile(volume[mask], 0.5)) and hi == pytest.approx(np.percentile(volume[mask], 99.5))
    lo_m, hi_m = intensity_range(volume, mask, median_at=0.5)
    median = np.median(volume[mask])
    assert lo_m == pytest.approx(lo)
    assert (median - lo_m) / (hi_m - lo_m) == pytest.approx(0.5)
    normalised = normalize_intensity(volume, mask, value_range=(lo_m, hi_m))
    assert np.median(normalised[mask]) == pytest.approx(0.5, abs=1e-3)
    assert (normalised[~mask] == 0).all() and normalised.max() <= 1.0
    with pytest.raises(ValueError, match="median_at"):
        intensity_range(volume, mask, median_at=1.5)


def test_median_normalisation_ignores_the_lesion_load() -> None:
    """Healthy tissue keeps its normalised value whatever the share of very bright voxels."""
    few, mask = _brain(0.001)
    many, _ = _brain(0.04)
    healthy = mask & (few < 300) & (many < 300)
    by_percentile = [np.median(normalize_intensity(v, mask)[healthy]) for v in (few, many)]
    by_median = [np.median(normalize_intensity(v, mask, value_range=intensity_range(v, mask, median_at=0.5))[healthy])
                 for v in (few, many)]
    assert abs(by_percentile[0] - by_percentile[1]) > 0.1
    assert abs(by_median[0] - by_median[1]) < 0.02


def test_model_grid_keeps_the_normalised_input() -> None:
    volume, mask = _brain()
    for median_at in (None, 0.5):
        grid = to_model_grid(volume, (1.0, 1.0, 1.0), mask, GridSpec(n_poses=8, size=16, coverage=1.0,
                                                                         median_at=median_at))
        expected = normalize_intensity(volume, mask, value_range=grid.intensity_range)
        np.testing.assert_array_equal(grid.normalised, expected)
        assert grid.normalised.shape == volume.shape


def test_constant_brain_is_rejected() -> None:
    volume, mask = _brain()
    volume[mask] = 7.0
    with pytest.raises(NoBrainError):
        intensity_range(volume, mask)
    with pytest.raises(NoBrainError):
        intensity_range(volume, mask, median_at=0.5)


def test_fill_holes_matches_scipy() -> None:
    from scipy import ndimage

    from napari_mentalmap.io.preprocess import fill_holes, largest_component_filled

    rng = np.random.default_rng(0)
    grid = np.indices((24, 30, 28)).astype(float)
    shell = np.abs(np.sqrt(((grid - np.array([12, 15, 14])[:, None, None, None]) ** 2).sum(0)) - 8) < 1.5
    masks = [ndimage.binary_opening(rng.random((20, 30, 25)) > 0.45) for _ in range(4)] + [shell]
    for mask in masks:
        np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
        np.testing.assert_array_equal(fill_holes(mask, per_slice=True),
                                      np.stack([ndimage.binary_fill_holes(s) for s in mask]))
    assert fill_holes(shell).sum() > shell.sum()  # the ball's inside is a 3-D hole
    noisy = shell | (rng.random(shell.shape) > 0.995)
    labels, _ = ndimage.label(noisy)
    largest = labels == np.bincount(labels.ravel())[1:].argmax() + 1
    expected = np.stack([ndimage.binary_fill_holes(s) for s in ndimage.binary_fill_holes(largest)])
    np.testing.assert_array_equal(largest_component_filled(noisy), expected)


@pytest.mark.parametrize("rows", [slice(None), slice(25, 70)])
def test_separable_linear_resampling_equals_affine_transform(rows) -> None:
    """The trilinear fast path (three matrix products) is scipy's order-1 affine_transform."""
    from scipy import ndimage

    from napari_mentalmap.io.preprocess import GridMapping, resample_from_grid

    mapping = GridMapping((91, 60, 50), (10.3, -1.5, 2.2), (1.7, 1.1, 0.9), (48, 64, 64))
    grid = np.random.default_rng(5).random(mapping.grid_shape).astype(np.float32)
    fast = resample_from_grid(grid, mapping, rows=rows)
    first, stop, _ = rows.indices(91)
    inverse = 1.0 / np.asarray(mapping.step)
    reference = ndimage.affine_transform(grid, matrix=inverse,
                                         offset=(np.array([first, 0.0, 0.0]) - np.asarray(mapping.start)) * inverse,
                                         output_shape=(stop - first, 60, 50), order=1, mode="nearest")
    valid = ~np.isnan(fast)
    assert valid.any() and (~valid).any()
    np.testing.assert_allclose(fast[valid], reference[valid], atol=1e-5)
