"""Learned brain extraction: network shapes, the stripped-vs-skull detector, the shipped
weights on a real NiChart test subject, and the fallback when the weights are missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_mentalmap.inference import brain
from napari_mentalmap.models.skullstrip import (
    SkullStripUNet,
    head_grid,
    load_model,
    postprocess,
    slice_stack,
)


def _ellipsoid(shape, radii, centre=None):
    centre = [s / 2 for s in shape] if centre is None else centre
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) <= 1.0


def _synthetic(stripped: bool, zero_padding: bool = False, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (60, 72, 64)
    inner = _ellipsoid(shape, (20, 26, 22))
    volume = np.where(inner, 300 + 40 * rng.standard_normal(shape), 0).astype(np.float32)
    if not stripped:
        skull = _ellipsoid(shape, (25, 31, 27)) & ~_ellipsoid(shape, (22, 28, 24))
        volume[skull] = 400 + 30 * rng.standard_normal(int(skull.sum()))
        background = ~_ellipsoid(shape, (25, 31, 27))
        volume[background] = np.abs(8 * rng.standard_normal(int(background.sum())))
        if zero_padding:
            volume[:, :, :8] = 0
            volume[:, :, -8:] = 0
    return volume


def test_unet_shapes():
    net = SkullStripUNet(base=4, depth=3)
    out = net(torch.zeros(2, 3, 96, 96))
    assert out.shape == (2, 1, 96, 96)
    with pytest.raises(ValueError, match="multiples"):
        net(torch.zeros(1, 3, 90, 90))
    image = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4)
    stack = slice_stack(image)
    assert stack.shape == (5, 3, 4, 4)
    np.testing.assert_array_equal(stack[2, 0], image[1])
    np.testing.assert_array_equal(stack[0, 0], image[0])
    np.testing.assert_array_equal(stack[4, 2], image[4])


def test_head_grid_round_trip_and_postprocess():
    volume = _synthetic(stripped=False)
    grid = head_grid(volume, (2.0, 2.0, 2.0))
    assert grid.image.shape[1:] == (96, 96) and grid.image.dtype == np.float32
    inner = _ellipsoid(volume.shape, (20, 26, 22))
    back = grid.to_input(grid.to_grid(inner.astype(np.float32))) > 0.5
    assert back.shape == volume.shape
    assert 2 * (back & inner).sum() / (back.sum() + inner.sum()) > 0.95
    speck = inner.copy()
    speck[2, 2, 2] = True
    speck[30, 36, 32] = False  # a hole inside
    np.testing.assert_array_equal(postprocess(speck), inner)


@pytest.mark.parametrize("stripped,padding", [(True, False), (False, False), (False, True)])
def test_stripped_detector_synthetic(stripped, padding):
    volume = _synthetic(stripped, zero_padding=padding)
    assert brain.looks_skull_stripped(volume, (2.0, 2.0, 2.0)) is stripped


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def nichart_test_subject():
    from napari_mentalmap.data.splits import SPLITS
    from napari_mentalmap.data.subjects import subject_files
    from napari_mentalmap.io.nifti import read_volume

    try:
        files = subject_files(SPLITS["nichart_test"][0])
    except FileNotFoundError:
        pytest.skip("shared data not available")
    if not files["image"].exists() or "mask_source" not in files:
        pytest.skip("NiChart test subject not available")
    volume = read_volume(files["image"])
    return volume.data, volume.spacing, read_volume(files["mask_source"]).data > 0


def test_auto_brain_mask_real_subject(nichart_test_subject):
    if not brain.SKULLSTRIP_WEIGHTS.exists():
        pytest.skip("shipped skull-strip weights missing")
    data, spacing, truth = nichart_test_subject
    mask = brain.auto_brain_mask(data, spacing)
    assert mask.shape == data.shape and mask.dtype == bool
    # measured with the shipped weights: 0.956 on Subj21 (classic threshold mask: 0.454)
    assert _dice(mask, truth) > 0.85
    # the skull-stripped version of the same subject takes the non-zero-region path
    stripped = data * truth
    assert _dice(brain.auto_brain_mask(stripped, spacing), truth) > 0.99


def test_fallback_warns_without_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(brain, "SKULLSTRIP_WEIGHTS", tmp_path / "missing.pt")
    volume = _synthetic(stripped=False)
    with pytest.warns(UserWarning, match="weights are missing"):
        mask = brain.auto_brain_mask(volume, (2.0, 2.0, 2.0))
    assert mask.shape == volume.shape and mask.any()
    # a stripped volume never needs the weights: no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        brain.auto_brain_mask(_synthetic(stripped=True), (2.0, 2.0, 2.0))


def test_flair_brain_masks_and_misregistered_subjects(nichart_test_subject):
    """An aligned FLAIR gets the parcellation; a misregistered one (Subj23) its own learned
    mask, which is far from the shifted parcellation; brain-extraction training skips it."""
    from napari_mentalmap.data.splits import FLAIR_MISREGISTERED
    from napari_mentalmap.data.subjects import brain_mask_for, subject_files
    from napari_mentalmap.io.nifti import read_volume
    from napari_mentalmap.training.skullstrip import load_brain, with_reference

    if not brain.SKULLSTRIP_WEIGHTS.exists():
        pytest.skip("shipped skull-strip weights missing")
    aligned = read_volume(subject_files("Subj21", "flair")["image"])
    parcellation = brain_mask_for("Subj21", aligned, "t1")
    np.testing.assert_array_equal(brain_mask_for("Subj21", aligned, "flair"), parcellation)
    assert _dice(brain.auto_brain_mask(aligned.data, aligned.spacing), parcellation) > 0.85

    assert "Subj23" in FLAIR_MISREGISTERED
    shifted = read_volume(subject_files("Subj23", "flair")["image"])
    own = brain_mask_for("Subj23", shifted, "flair")
    assert own.shape == shifted.data.shape and own.any()
    assert _dice(own, brain_mask_for("Subj23", shifted, "t1")) < 0.8
    assert with_reference(["Subj21", "Subj23"], ("t1", "flair")) == [
        ("Subj21", "t1"), ("Subj21", "flair"), ("Subj23", "t1")]
    with pytest.raises(ValueError, match="not aligned"):
        load_brain("Subj23", "flair")


def test_tiny_training_resumes_and_exports(tmp_path) -> None:
    """Two short runs on one NiChart subject (the second continues the first), then the
    export with its test Dice; the exported file loads as the brain-extraction model."""
    from napari_mentalmap.checkpoints import load_record
    from napari_mentalmap.data.splits import SPLITS
    from napari_mentalmap.models.skullstrip import SkullStripConfig
    from napari_mentalmap.training.skullstrip import (
        SkullStripTrainConfig,
        export_weights,
        train_skullstrip,
    )

    model_config = SkullStripConfig(base=4, depth=2)
    subjects = {"train": SPLITS["nichart_train"][:1], "val": SPLITS["nichart_val"][:1]}
    config = SkullStripTrainConfig(out_dir=str(tmp_path / "run"), steps=2, batch_size=2, eval_every=2,
                                   max_minutes=5)
    first = train_skullstrip(config, model_config, command="test", subjects=subjects, progress=False)
    assert first["steps"] == 2 and first["best_step"] == 2
    assert 0.0 <= first["val"][f"{subjects['val'][0]} t1"]["skull"] <= 1.0
    config = SkullStripTrainConfig(out_dir=str(tmp_path / "run"), steps=4, batch_size=2, eval_every=2,
                                   max_minutes=5)
    second = train_skullstrip(config, model_config, command="test", subjects=subjects, progress=False)
    assert second["steps"] == 4 and len(second["history"]) == 4  # continued, not restarted
    path = export_weights(tmp_path / "run", tmp_path / "skullstrip.pt", test_subjects=SPLITS["nichart_test"][:1])
    record = load_record(path)
    assert record["train"]["steps"] == 4 and record["train"]["command"] == "test"
    assert 0.0 <= record["metrics"]["test_mean_skull"] <= 1.0
    model, loaded_config = load_model(path)
    assert loaded_config == model_config and isinstance(model, SkullStripUNet)
