"""The user's lesion segmenter (issue #27): model invariants, training job, weights, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_mentalmap.checkpoints import WeightsError
from napari_mentalmap.inference.jobs import run_to_completion
from napari_mentalmap.inference.segment import (
    SegmenterInputError,
    check_flair,
    check_labels,
    load_segmenter,
    prepare_inputs,
    probability_job,
    save_segmenter,
    segment_job,
)
from napari_mentalmap.inference.segmenter_augment import _register, missing_dependency, warp
from napari_mentalmap.inference.segmenter_training import (
    SegmenterTrainConfig,
    TrainingScan,
    best_threshold,
    threshold_dice,
    train_segmenter_job,
)
from napari_mentalmap.io.nifti import read_volume
from napari_mentalmap.models.segmenter import LesionSegmenter, SegmenterConfig, parameter_count

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "napari_mentalmap" / "sample_data"


def synthetic_scan(seed: int, vessels: bool = False, name: str = "") -> TrainingScan:
    """A 'brain' box of noisy tissue with bright lesion blobs (labelled) and, optionally,
    equally bright thin lines (not labelled) that an intensity threshold cannot tell apart."""
    rng = np.random.default_rng(seed)
    volume = np.zeros((16, 48, 48), np.float32)
    mask = np.zeros(volume.shape, bool)
    mask[1:15, 4:44, 4:44] = True
    volume[mask] = rng.normal(100, 4, mask.sum())
    lesions = np.zeros(volume.shape, bool)
    for _ in range(4):
        z, y, x = rng.integers(4, 12), rng.integers(12, 36), rng.integers(12, 36)
        lesions[z - 1:z + 2, y - 2:y + 3, x - 2:x + 3] = True
    volume[lesions] = 180
    if vessels:
        for _ in range(12):
            z, y = rng.integers(2, 14), rng.integers(8, 40)
            line = np.zeros(volume.shape, bool)
            line[z, y, 8:40] = True
            volume[line & ~lesions] = 180
    return TrainingScan(prepare_inputs(volume, mask, (1.0, 1.0, 1.0)), lesions, name or f"scan{seed}")


def test_c4_model_is_rotation_equivariant_at_equal_parameters():
    torch.manual_seed(0)
    plain = LesionSegmenter(SegmenterConfig(base_channels=8))
    c4 = LesionSegmenter(SegmenterConfig(base_channels=8, equivariant=True))
    torch.nn.init.normal_(c4.head.weight, std=0.5)  # the head starts at 0: make the U-Net count
    torch.nn.init.normal_(plain.head.weight, std=0.5)
    x = torch.randn(2, 4, 32, 32)
    rotate = lambda t: torch.rot90(t, 1, dims=(2, 3))  # noqa: E731
    with torch.no_grad():
        assert torch.allclose(c4(rotate(x)), rotate(c4(x)), atol=1e-4)
        assert not torch.allclose(plain(rotate(x)), rotate(plain(x)), atol=1e-3)
    assert abs(parameter_count(c4) / parameter_count(plain) - 1) < 0.05


def test_untrained_model_is_the_threshold_it_was_given():
    scan = synthetic_scan(0)
    threshold = best_threshold([scan])
    model = LesionSegmenter(SegmenterConfig(initial_threshold=threshold)).eval()
    probability = run_to_completion(probability_job(model, scan.inputs))
    expected = (scan.inputs.flair * scan.inputs.eroded > threshold) & scan.inputs.mask
    assert np.array_equal(probability > 0.5, expected)


def test_threshold_dice_matches_a_direct_count():
    scan = synthetic_scan(1)
    grid = np.array([0.6, 0.9, 1.2])
    values = scan.inputs.flair * scan.inputs.eroded
    for t, found in zip(grid, threshold_dice([scan], grid), strict=True):
        predicted = (values > t) & scan.inputs.mask
        direct = 2 * (predicted & scan.lesions).sum() / (predicted.sum() + scan.lesions.sum())
        assert found == pytest.approx(direct)


@pytest.mark.parametrize("augmentation", ["none", "classical", "learned", "c4"])
def test_every_augmentation_trains(augmentation):
    if missing_dependency(augmentation):
        pytest.skip(missing_dependency(augmentation))
    scans = [synthetic_scan(2), synthetic_scan(3)]
    config = SegmenterTrainConfig(steps=4, batch_size=2, crop=32, augmentation=augmentation)
    model, card = run_to_completion(train_segmenter_job(scans, config))
    assert card["n_scans"] == 2 and card["augmentation"] == augmentation
    assert np.isfinite(card["final_loss"])
    assert model.config.equivariant == (augmentation == "c4")


def test_training_learns_what_the_threshold_cannot():
    scans = [synthetic_scan(4, vessels=True), synthetic_scan(5, vessels=True)]
    held_out = synthetic_scan(6, vessels=True)
    config = SegmenterTrainConfig(steps=120, batch_size=6, crop=32, augmentation="none", learning_rate=5e-3)
    model, card = run_to_completion(train_segmenter_job(scans, config))
    values = held_out.inputs.flair * held_out.inputs.eroded

    def dice(predicted):
        return 2 * (predicted & held_out.lesions).sum() / (predicted.sum() + held_out.lesions.sum())

    threshold_only = dice((values > card["initial_threshold"]) & held_out.inputs.mask)
    learned = dice(run_to_completion(probability_job(model, held_out.inputs)) > 0.5)
    assert learned > threshold_only + 0.1


def test_training_runs_whatever_the_thread_state():
    with torch.inference_mode():  # e.g. a pool thread left so by an earlier job
        model, card = run_to_completion(train_segmenter_job(
            [synthetic_scan(7)], SegmenterTrainConfig(steps=3, batch_size=2, crop=32, augmentation="none")))
    assert np.isfinite(card["final_loss"]) and not model.threshold.is_inference()


def test_cancel_stops_training():
    job = train_segmenter_job([synthetic_scan(7)], SegmenterTrainConfig(steps=1000, batch_size=2, crop=32,
                                                                        augmentation="none"))
    for done, _total, _message in job:
        if done >= 10:
            break
    job.close()
    with pytest.raises(StopIteration):
        next(job)


def test_weights_round_trip_and_pickles_refused(tmp_path):
    model, card = run_to_completion(train_segmenter_job(
        [synthetic_scan(8)], SegmenterTrainConfig(steps=2, batch_size=2, crop=32, augmentation="none")))
    path = save_segmenter(tmp_path / "mine.pt", model, card)
    loaded = load_segmenter(path)
    scan = synthetic_scan(9)
    first = run_to_completion(probability_job(model, scan.inputs))
    again = run_to_completion(probability_job(loaded.model, scan.inputs))
    np.testing.assert_allclose(first, again, atol=1e-6)
    assert loaded.card["n_scans"] == 1 and "trained on 1 scan" in loaded.describe()

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "lesion_segmenter", "config": {}, "state_dict": {}, "card": Payload()}, evil)
    with pytest.raises(WeightsError, match="refused"):
        load_segmenter(evil)
    other = tmp_path / "other.pt"
    torch.save({"format": "uad_dae", "config": {}, "state_dict": {}}, other)
    with pytest.raises(WeightsError, match="not a lesion_segmenter"):
        load_segmenter(other)


def test_labels_must_match_the_image_and_mark_something():
    with pytest.raises(SegmenterInputError, match="does not match"):
        check_labels((10, 20, 20), np.ones((10, 20, 21)))
    with pytest.raises(SegmenterInputError, match="no voxel is labelled"):
        check_labels((10, 20, 20), np.zeros((10, 20, 20)))
    assert check_labels((2, 2, 2), np.eye(2)[None].repeat(2, 0)).sum() == 4
    with pytest.raises(SegmenterInputError, match="no voxel is labelled"):
        run_to_completion(train_segmenter_job([TrainingScan(synthetic_scan(1).inputs, np.zeros((16, 48, 48), bool))]))


def test_a_t1_is_refused_as_the_flair_and_the_flair_segments():
    t1 = read_volume(SAMPLE / "patient07_T1_2mm.nii.gz")
    with pytest.raises(SegmenterInputError, match="needs the FLAIR"):
        check_flair(t1.data, t1.spacing)
    flair = read_volume(SAMPLE / "patient07_FLAIR_2mm.nii.gz")
    check_flair(flair.data, flair.spacing)
    model = LesionSegmenter(SegmenterConfig(base_channels=4, levels=2)).eval()
    from napari_mentalmap.inference.segment import UserSegmenter

    result = run_to_completion(segment_job(flair.data, flair.spacing, UserSegmenter(model, {})))
    assert result.probability.shape == flair.data.shape and not result.warnings
    assert result.probability.min() >= 0 and result.probability.max() <= 1
    assert not result.probability[~result.mask].any()
    t1_result = run_to_completion(segment_job(t1.data, t1.spacing, UserSegmenter(model, {})))
    assert any("needs the FLAIR" in w for w in t1_result.warnings)


def test_learned_deformation_registers_and_warps_back():
    rng = np.random.default_rng(0)
    from scipy import ndimage

    reference = ndimage.gaussian_filter(rng.normal(size=(64, 64)), 3).astype(np.float32)
    moving = np.roll(reference, 2, axis=1)  # moving(x + (0, 2)) == reference(x)
    field = _register(reference, moving)
    inside = (slice(16, 48), slice(16, 48))
    assert np.median(field[1][inside]) == pytest.approx(2.0, abs=0.5)
    assert np.abs(field[0][inside]).mean() < 0.5
    channels = np.stack([moving] * 3 + [np.ones_like(moving)])
    warped, _ = warp(channels, np.zeros((64, 64), bool), field)
    assert np.abs(warped[1][inside] - reference[inside]).mean() < 0.2 * np.abs(moving - reference)[inside].mean()
    identity, lesions = warp(channels, moving > 0, np.zeros_like(field))
    np.testing.assert_allclose(identity[:3], channels[:3], atol=1e-5)
    assert np.array_equal(lesions, moving > 0)
