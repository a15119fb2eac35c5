"""Contrast (T1 / T2 / FLAIR) read from the image, and the docks choosing by it (issue 28)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from napari_mentalmap._sample_data import SAMPLE_FLAIR, SAMPLE_T1, sample_flair, sample_t1
from napari_mentalmap.inference.modality import ModalityGuess, classify_modality, modality_mismatch
from napari_mentalmap.io.nifti import read_volume

SHARED_DATA = (Path(__file__).parents[1] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="module")
def t1():
    return read_volume(SAMPLE_T1)


@pytest.fixture(scope="module")
def flair():
    return read_volume(SAMPLE_FLAIR)


def test_shipped_samples(t1, flair) -> None:
    t1_guess = classify_modality(t1.data, t1.spacing)
    flair_guess = classify_modality(flair.data, flair.spacing)
    assert t1_guess.modality == "T1" and flair_guess.modality == "FLAIR"
    assert t1_guess.describe() == "T1-weighted (CSF < GM < WM)"
    assert flair_guess.describe() == "FLAIR (CSF < WM < GM)"
    assert 0.5 <= t1_guess.confidence <= 1 and 0.5 <= flair_guess.confidence <= 1
    assert set(t1_guess.tissue_means) == {"CSF", "GM", "WM"}


def test_order_not_scale_decides(t1) -> None:
    """Invariants: any positive linear rescaling keeps the guess, a brain mask gives the same
    guess, and reversing the intensities inside the brain (bright CSF, dark white matter)
    turns the T1 into a T2-like image."""
    brain = t1.data != 0
    base = classify_modality(t1.data, t1.spacing)
    rescaled = np.where(brain, 3.5 * t1.data + 100.0, 0.0).astype(np.float32)
    assert classify_modality(rescaled, t1.spacing).modality == "T1"
    assert classify_modality(t1.data, t1.spacing, mask=brain) == base
    reversed_ = np.where(brain, t1.data.max() + 1.0 - t1.data, 0.0).astype(np.float32)
    guess = classify_modality(reversed_, t1.spacing)
    assert guess.modality == "T2" and guess.describe() == "T2-weighted (WM < GM < CSF)"


def test_a_tight_mask_keeps_the_guess(t1, flair) -> None:
    """A brain mask tighter than the image's outline (as a learned mask can be) only
    restricts the voxels looked at: the outer layer is not mistaken for cortex."""
    from scipy import ndimage

    for volume, truth in ((t1, "T1"), (flair, "FLAIR")):
        tight = ndimage.binary_erosion(volume.data != 0, iterations=1)
        assert classify_modality(volume.data, volume.spacing, mask=tight).modality == truth


def test_thick_slices_and_1mm_speed(t1, flair) -> None:
    assert classify_modality(flair.data[::2], (4.0, 2.0, 2.0)).modality == "FLAIR"
    assert classify_modality(t1.data[::2], (4.0, 2.0, 2.0)).modality == "T1"
    one_mm = np.repeat(np.repeat(np.repeat(t1.data, 2, 0), 2, 1), 2, 2)  # 182 x 218 x 182
    classify_modality(one_mm, (1.0, 1.0, 1.0))
    start = time.perf_counter()
    assert classify_modality(one_mm, (1.0, 1.0, 1.0)).modality == "T1"
    assert time.perf_counter() - start < 1.5  # goal < 1 s (0.13-0.4 s measured on a shared 2-core CPU)


def test_bad_inputs(t1) -> None:
    with pytest.raises(ValueError, match="3-D"):
        classify_modality(t1.data[0], t1.spacing[1:])
    with pytest.raises(ValueError, match="constant"):
        classify_modality(np.full((40, 40, 40), 7.0, np.float32), (2.0, 2.0, 2.0))
    with pytest.raises(ValueError, match="mask shape"):
        classify_modality(t1.data, t1.spacing, mask=np.ones((3, 3, 3), bool))
    with pytest.raises(ValueError, match="empty"):
        classify_modality(t1.data, t1.spacing, mask=np.zeros(t1.data.shape, bool))
    noisy = t1.data.copy()
    noisy[0, 0, :5] = np.nan
    assert classify_modality(noisy, t1.spacing).modality == "T1"


def test_mismatch_line() -> None:
    guess = ModalityGuess("T1", 0.9, {"CSF": 0.2, "GM": 0.6, "WM": 0.87})
    assert modality_mismatch(guess, "T1") is None
    line = modality_mismatch(guess, "FLAIR")
    assert line is not None and "\n" not in line
    assert "T1-weighted (CSF < GM < WM)" in line and "FLAIR" in line and "90%" in line
    with pytest.raises(ValueError, match="unknown modality"):
        modality_mismatch(guess, "PD")


SHARED_SCANS = [
    ("nichart_demo/t1/Subj21_T1.nii.gz", "T1"), ("nichart_demo/flair/Subj21_FL.nii.gz", "FLAIR"),
    ("nichart_demo/t1/Subj5_T1.nii.gz", "T1"), ("nichart_demo/flair/Subj22_FL.nii.gz", "FLAIR"),
    ("ixi/t1/IXI012-HH-1211_T1.nii.gz", "T1"), ("ixi/t1_brain/IXI057-HH-1342_T1.nii.gz", "T1"),
    ("oasis_malf/t1_brain/OAS1007_T1.nii.gz", "T1"), ("mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", "T1"),
    ("open_ms/patient19/T1.nii.gz", "T1"), ("open_ms/patient19/T2.nii.gz", "T2"),
    ("open_ms/patient19/FLAIR.nii.gz", "FLAIR"), ("cbica_wml/301D00262-20040114/T1.nii.gz", "T1"),
    ("cbica_wml/301D00262-20040114/T2.nii.gz", "T2"), ("cbica_wml/301D00262-20040114/FLAIR.nii.gz", "FLAIR"),
    ("brats2018/CBICA_AAB_1/FLAIR.nii.gz", "FLAIR"), ("brats2018/CBICA_ASA_1/T1.nii.gz", "T1"),
]


@pytest.mark.parametrize(("relative", "truth"), SHARED_SCANS, ids=[s[0] for s in SHARED_SCANS])
def test_shared_data_scans(relative: str, truth: str) -> None:
    """A few scans per set, including the closest calls of docs/modality.md (full table:
    ``benchmarks/modality_table.py``)."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    volume = read_volume(path)
    assert classify_modality(volume.data, volume.spacing).modality == truth


@pytest.mark.parametrize("relative", ["nichart_demo/flair/Subj22_FL.nii.gz", "nichart_demo/t1/Subj5_T1.nii.gz"])
def test_shared_data_with_the_learned_brain_mask(relative: str) -> None:
    """With the project's brain mask (what ``predict`` may pass) a thick-slice FLAIR with skull
    stays FLAIR: depth measured from that tight mask read it as T1 (white rise +0.32)."""
    from napari_mentalmap.inference.brain import auto_brain_mask

    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    volume = read_volume(path)
    mask = auto_brain_mask(volume.data, volume.spacing)
    assert classify_modality(volume.data, volume.spacing, mask=mask).modality == ("FLAIR" if "_FL" in relative else "T1")


def _open(viewer, sample, name: str):
    data, kwargs, _ = sample()[0]
    return viewer.add_image(data, **{**kwargs, "name": name})


def _guessed(qtbot, *docks) -> None:
    qtbot.waitUntil(lambda: all(not dock.modality.pending for dock in docks), timeout=20_000)


@pytest.mark.parametrize(("t1_name", "flair_name"), [("sample T1", "sample FLAIR"), ("flair", "T1_scan")])
def test_docks_pick_the_matching_contrast(make_napari_viewer, qtbot, t1_name: str, flair_name: str) -> None:
    """With a T1 and a FLAIR open, each dock picks its model's contrast from the image, even
    when the names say the opposite; a user's other choice is kept, with a warning line."""
    from napari_mentalmap.inference.anomaly_methods import modality_warning
    from napari_mentalmap.widgets.anomaly import AnomalyWidget
    from napari_mentalmap.widgets.mental_map import MentalMapWidget

    viewer = make_napari_viewer()
    t1_layer = _open(viewer, sample_t1, t1_name)
    flair_layer = _open(viewer, sample_flair, flair_name)  # the active layer: Mental maps' old default
    mental, anomaly = MentalMapWidget(viewer), AnomalyWidget(viewer)
    _guessed(qtbot, mental, anomaly)
    assert mental.layer_combo.currentText() == t1_name
    assert anomaly.layer_combo.currentText() == flair_name
    assert mental.modality.label.isHidden() and anomaly.modality.label.isHidden()
    assert anomaly.modality.note(flair_layer, modality_warning) is None  # the image, not the name, decides

    mental.layer_combo.setCurrentText(flair_name)
    anomaly.layer_combo.setCurrentText(t1_name)
    mental.refresh_layer_choices()
    anomaly.refresh_layer_choices()
    assert mental.layer_combo.currentText() == flair_name and anomaly.layer_combo.currentText() == t1_name
    assert not mental.modality.label.isHidden() and not anomaly.modality.label.isHidden()
    assert "looks FLAIR" in mental.modality.label.text() and "BRUNO model expects T1" in mental.modality.label.text()
    assert "looks T1-weighted" in anomaly.modality.label.text()
    assert "anomaly models expect FLAIR" in anomaly.modality.label.text()
    assert "T1-weighted" in anomaly.modality.note(t1_layer, modality_warning)


def test_new_layer_is_guessed_and_picked(make_napari_viewer, qtbot) -> None:
    """A FLAIR opened into an Anomaly maps dock that shows a T1 is picked once guessed,
    whatever its name; a layer that is not a 3-D volume gets no guess and no warning."""
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    viewer = make_napari_viewer()
    _open(viewer, sample_t1, "scan A")
    anomaly = AnomalyWidget(viewer)
    _guessed(qtbot, anomaly)
    assert anomaly.layer_combo.currentText() == "scan A" and not anomaly.modality.label.isHidden()
    _open(viewer, sample_flair, "scan B")
    _guessed(qtbot, anomaly)
    assert anomaly.layer_combo.currentText() == "scan B" and anomaly.modality.label.isHidden()
    viewer.add_image(np.zeros((16, 16), np.float32), name="flat")
    anomaly.layer_combo.setCurrentText("flat")
    assert anomaly.modality.label.isHidden()
