"""Detail transfer (the input-grid refinement of mental maps) and the std calibration."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mentalmap.evaluation.bruno import linear_interpolation as reference_interpolation
from napari_mentalmap.inference.detail_transfer import (
    NO_DECAY,
    DetailTransferConfig,
    StdCalibration,
    band_split,
    fallback_mask,
    linear_interpolation,
    model_weight,
    neighbours,
    outside_fill,
    transfer_detail,
    transfer_deviation,
)
from napari_mentalmap.inference.refined_maps import InputGridSettings

SPACING = (1.5, 1.0, 1.0)


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).random((20, 12, 14)).astype(np.float32)


@pytest.mark.parametrize("contexts", [[5], [3, 9, 15], [0, 19], [0, 1, 2], [7, 8]])
def test_interpolation_matches_the_protocol_baseline(volume, contexts):
    near = neighbours(volume.shape[0], contexts, SPACING[0])
    np.testing.assert_allclose(linear_interpolation(volume, near), reference_interpolation(volume, contexts),
                               atol=1e-6)
    assert np.all(near.distance[contexts] == 0)
    if contexts[0] + 1 not in contexts:
        assert near.distance[contexts[0] + 1] == pytest.approx(SPACING[0])


def test_bands_sum_to_the_image(volume):
    bands = band_split(volume[:3], (1.0, 2.0, 4.0), (1.0, 1.0))
    assert bands.shape == (4, 3, 12, 14)
    np.testing.assert_allclose(bands.sum(0), volume[:3], atol=1e-5)


def _everywhere(volume):
    return np.ones(volume.shape, bool), np.ones(volume.shape, np.float32)


def test_contexts_exact_and_limits_of_the_decay(volume):
    contexts = [4, 10, 16]
    brain, weight = _everywhere(volume)
    base = np.random.default_rng(1).random(volume.shape).astype(np.float32)
    keep_all = DetailTransferConfig((1.0, 2.0), (NO_DECAY,) * 3)
    refined = transfer_detail(base, volume, contexts, SPACING, brain, weight, (0, 19), keep_all)
    np.testing.assert_array_equal(refined[contexts], volume[contexts])
    # no decay: the interpolated acquired slices plus the model's own change between them
    near = neighbours(volume.shape[0], contexts, SPACING[0])
    expected = linear_interpolation(volume, near) + base - linear_interpolation(base, near)
    np.testing.assert_allclose(refined, expected, atol=1e-5)
    # instant decay: the model's prediction away from the contexts
    drop_all = DetailTransferConfig((1.0, 2.0), (1e-6,) * 3)
    refined = transfer_detail(base, volume, contexts, SPACING, brain, weight, (0, 19), drop_all)
    others = [s for s in range(volume.shape[0]) if s not in contexts]
    np.testing.assert_allclose(refined[others], base[others], atol=1e-6)


def test_refinement_is_linear_in_the_prediction(volume):
    contexts = [2, 11]
    brain, weight = _everywhere(volume)
    config = DetailTransferConfig()
    rng = np.random.default_rng(2)
    a, b = (rng.random(volume.shape).astype(np.float32) for _ in range(2))
    left = transfer_detail(a, volume, contexts, SPACING, brain, weight, (0, 19), config)
    right = transfer_detail(b, volume, contexts, SPACING, brain, weight, (0, 19), config)
    mixed = transfer_detail(0.3 * a + 0.7 * b, volume, contexts, SPACING, brain, weight, (0, 19), config)
    np.testing.assert_allclose(mixed, 0.3 * left + 0.7 * right, atol=1e-5)


def test_a_sample_is_the_refined_mean_plus_its_refined_deviation():
    rng = np.random.default_rng(4)
    shape = (16, 12, 12)
    acquired = rng.random(shape).astype(np.float32)
    brain = np.zeros(shape, bool)
    brain[:, 2:10, 3:9] = True
    brain[12:] = False
    mean, sample = (rng.random(shape).astype(np.float32) for _ in range(2))
    contexts, covered = [3, 8, 14], (2, 13)
    weight = model_weight(brain, *covered, 1.0)
    config = DetailTransferConfig()
    refined_mean = transfer_detail(mean, acquired, contexts, SPACING, brain, weight, covered, config)
    refined_sample = transfer_detail(sample, acquired, contexts, SPACING, brain, weight, covered, config)
    fallback = fallback_mask(brain, contexts, SPACING, covered)
    assert fallback.any()  # voxels outside the brain whose neighbouring contexts both have brain there
    deviation = transfer_deviation(sample - mean, contexts, SPACING, weight, fallback, config)
    np.testing.assert_allclose(refined_mean + deviation, refined_sample, atol=1e-5)


def test_outside_the_brain_the_head_comes_from_the_acquired_slices():
    shape = (12, 10, 10)
    brain = np.zeros(shape, bool)
    brain[:, 3:7, 3:7] = True
    head = np.where(brain, 0.5, 0.9).astype(np.float32)  # skull 0.9 around a brain
    base = np.where(brain, 0.45, 0.0).astype(np.float32)  # the model knows the brain only
    contexts = [2, 9]
    weight = model_weight(brain, 0, 11, 0.0)
    refined = transfer_detail(base, head, contexts, (1.0, 1.0, 1.0), brain, weight, (0, 11), DetailTransferConfig())
    np.testing.assert_allclose(refined[~brain], 0.9, atol=1e-6)  # not black
    stripped = np.where(brain, head, 0.0).astype(np.float32)
    near = neighbours(shape[0], contexts, 1.0)
    np.testing.assert_allclose(outside_fill(stripped, brain, base, near)[~brain], 0.0)
    # beyond the model's slice range: filled from the acquired slices, not 0
    weight = model_weight(brain, 4, 7, 0.0)
    refined = transfer_detail(base, head, contexts, (1.0, 1.0, 1.0), brain, weight, (4, 7), DetailTransferConfig())
    np.testing.assert_allclose(refined[:2], head[2:3].repeat(2, 0), atol=1e-6)


def test_bad_inputs_are_refused(volume):
    brain, weight = _everywhere(volume)
    with pytest.raises(ValueError, match="at least one acquired slice"):
        transfer_detail(volume, volume, [], SPACING, brain, weight, (0, 19), DetailTransferConfig())
    with pytest.raises(ValueError, match="shapes differ"):
        transfer_detail(volume[:-1], volume, [3], SPACING, brain, weight, (0, 19), DetailTransferConfig())
    with pytest.raises(ValueError, match="decay lengths"):
        DetailTransferConfig((1.0,), (2.0,))


def test_std_calibration_is_zero_on_acquired_slices_and_grows_with_distance():
    calibration = StdCalibration(log_scale=-2.0, std_power=0.5, edge_power=-0.3, distance_power=0.4)
    spread = np.full((9, 8, 8), 0.05, np.float32)
    mean = np.random.default_rng(3).random((9, 8, 8)).astype(np.float32)
    distance = neighbours(9, [0, 8], 1.0).distance
    std = calibration.apply(spread, np.full_like(mean, 0.5), distance, (1.0, 1.0, 1.0))
    assert np.all(std[[0, 8]] == 0)
    per_slice = std.mean(axis=(1, 2))
    assert np.all(np.diff(per_slice[:5]) > 0)  # from the context to the middle of the gap
    assert StdCalibration.from_dict(calibration.to_dict()) == calibration
    assert np.all(calibration.apply(spread, mean, distance, (1.0, 1.0, 1.0))[1:8] > 0)
    settings = InputGridSettings(DetailTransferConfig(), calibration)
    assert InputGridSettings.from_dict(settings.to_dict()) == settings
    assert InputGridSettings.from_dict(None) is None


def test_the_dock_maps_are_refined_on_the_input_grid(tiny_refining_weights):
    from napari_mentalmap._sample_data import SAMPLE_T1
    from napari_mentalmap.inference.mental_map import hallucinate, on_input_grid, run_to_completion
    from napari_mentalmap.io.nifti import read_volume

    volume = read_volume(SAMPLE_T1)
    data = np.asarray(volume.data, np.float32)
    probe = run_to_completion(hallucinate(data, volume.spacing, [], device="cpu", weights=tiny_refining_weights))
    first, last = probe.mapping.covered_slices()
    contexts = [first + (last - first) // 4, first + 3 * (last - first) // 4]
    result = run_to_completion(hallucinate(data, volume.spacing, contexts, n_samples=3, device="cpu",
                                           weights=tiny_refining_weights, mask=probe.brain_mask))
    shown = on_input_grid(result, data, keep_contexts=True)
    assert shown.refined and shown.samples.shape == (3, *data.shape)
    np.testing.assert_array_equal(shown.mean[contexts], data[contexts])
    np.testing.assert_allclose(shown.samples[:, contexts], np.broadcast_to(data[contexts], (3, 2, *data.shape[1:])),
                               atol=1e-3)
    assert np.all(shown.std[contexts] == 0)
    brain = probe.brain_mask
    per_slice = [np.nanmean(shown.std[s][brain[s]]) for s in range(contexts[0], (contexts[0] + contexts[1]) // 2)]
    assert per_slice[0] == 0 and per_slice[-1] > per_slice[1] > 0  # grows away from the acquired slice
    from scipy import ndimage

    outside = ~ndimage.binary_dilation(brain[first], iterations=3)  # clear of the softened brain edge
    assert np.all(np.isnan(shown.std[first][outside]))  # not modelled: no value
    beyond = shown.mean[last + 1:]
    np.testing.assert_allclose(beyond, np.broadcast_to(data[contexts[-1]], beyond.shape), atol=1e-3)
    plain = on_input_grid(result, data, keep_contexts=True, refine=False)
    assert not plain.refined and plain.samples is None
    assert np.all(plain.mean[-1] == 0)  # the model alone knows nothing beyond its slice range
