"""The Lesion segmenter dock: train on painted pairs, predict editable labels, load a saved
model in a new viewer, Cancel, and refused pairs and files (tiny: 3 training steps).

The scans are pieces of the shipped sample FLAIR (open_ms patient07, 2 mm): its left
hemisphere, its right hemisphere mirrored, and a crop of the whole brain.
"""

from __future__ import annotations

import pathlib
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_mentalmap._sample_data import SAMPLE_FLAIR, SAMPLE_LESIONS, SAMPLE_T1
from napari_mentalmap.io.nifti import read_volume

TIMEOUT_MS = 120_000
SPACING = (2.0, 2.0, 2.0)


@pytest.fixture(scope="module")
def pieces() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (FLAIR piece, its lesion mask)."""
    flair, lesions = read_volume(SAMPLE_FLAIR).data, read_volume(SAMPLE_LESIONS).data > 0
    return {"left": (flair[:, :, :46], lesions[:, :, :46]),
            "right": (flair[:, :, 45:][:, :, ::-1].copy(), lesions[:, :, 45:][:, :, ::-1].copy()),
            "whole": (flair[8:72, 14:95, 13:77].copy(), lesions[8:72, 14:95, 13:77].copy())}


def _paint(viewer, image_name: str, name: str, lesions: np.ndarray):
    """A new Labels layer over ``image_name`` with ``lesions`` painted in (as a user would)."""
    image = viewer.layers[image_name]
    layer = viewer.add_labels(np.zeros(lesions.shape, np.uint8), name=name, scale=image.scale,
                              translate=image.translate)
    layer.data[lesions] = 1
    return layer


@pytest.fixture
def dock(make_napari_viewer, qtbot, pieces, tmp_path):
    """The dock over three FLAIR pieces; the first two have painted labels; models go to tmp_path."""
    from napari_mentalmap.widgets.segmenter import SegmenterWidget

    viewer = make_napari_viewer()
    for subject, piece in (("patient01", "left"), ("patient02", "right")):
        viewer.add_image(pieces[piece][0], name=f"{subject} FLAIR", scale=SPACING)
    viewer.add_image(pieces["whole"][0], name="patient03 FLAIR", scale=SPACING, translate=(10.0, -6.0, 4.0))
    widget = SegmenterWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Lesion segmenter")
    widget.models_folder = tmp_path / "models"
    _paint(viewer, "patient01 FLAIR", "patient01 FLAIR lesions", pieces["left"][1])  # carries the image name
    _paint(viewer, "patient02 FLAIR", "patient02 labels", pieces["right"][1])  # same subject and shape
    widget.steps.setValue(3)
    return widget


def _done(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)


def _names(viewer) -> list[str]:
    return [layer.name for layer in viewer.layers]


def test_pairs_are_found_by_name_subject_and_source(dock) -> None:
    pairs = {pair.labels.name: (pair.image.name, pair.how) for pair in dock.pairs}
    assert pairs == {"patient01 FLAIR lesions": ("patient01 FLAIR", "named"),
                     "patient02 labels": ("patient02 FLAIR", "subject")}
    assert dock.pair_list.count() == 2 and [p.labels.name for p in dock.checked_pairs()] == list(pairs)
    dock.set_checked("patient02 labels", False)
    dock.refresh_layer_choices()  # check marks survive a refresh
    assert [p.labels.name for p in dock.checked_pairs()] == ["patient01 FLAIR lesions"]


def test_train_predict_edit_and_load_in_a_new_viewer(dock, qtbot, make_napari_viewer, errors) -> None:
    from napari_mentalmap.inference.segment import DEFAULT_CUTOFF
    from napari_mentalmap.widgets.segmenter import SegmenterWidget

    viewer = dock.viewer
    assert dock.train() is not None
    _done(qtbot, dock)
    assert dock.runner.stats.outcome == "done", dock.status.text()
    [saved] = list(dock.models_folder.glob("*.pt"))
    assert dock.segmenter.path == saved and not list(dock.models_folder.glob(".*"))  # no temporary left
    card = dock.segmenter.card
    assert card["n_scans"] == 2 and card["train_config"]["steps"] == 3
    assert [p["labels"] for p in card["pairs"]] == ["patient01 FLAIR lesions", "patient02 labels"]
    assert saved.name in dock.model_label.text() and "trained on 2 scan(s)" in dock.model_label.text()

    dock.layer_combo.setCurrentText("patient03 FLAIR")
    assert dock.predict() is not None
    _done(qtbot, dock)
    source = viewer.layers["patient03 FLAIR"]
    probability, labels = viewer.layers["patient03 FLAIR lesion probability"], viewer.layers["patient03 FLAIR lesion labels"]
    for layer in (probability, labels):  # placed over the image
        np.testing.assert_allclose(layer.scale, source.scale)
        np.testing.assert_allclose(layer.translate, source.translate)
        np.testing.assert_allclose(layer.affine.affine_matrix, source.affine.affine_matrix)
    assert dock.cutoff_slider.value() == pytest.approx(DEFAULT_CUTOFF) and dock.cutoff_slider.isEnabled()
    result = dock.current
    assert result.labels_layer is labels
    np.testing.assert_array_equal(labels.data > 0, result.labels.proposal.labels > 0)
    assert labels.data.any() and labels.data.dtype == np.int32

    painted = (slice(30, 33), slice(30, 36), slice(28, 31))  # the user paints and erases
    labels.data[painted] = 9
    erased = np.argwhere(probability.data > 0.9)[:1]
    assert len(erased) == 1
    for z, y, x in erased:
        labels.data[z, y, x] = 0
    for cutoff in (0.2, 0.8, DEFAULT_CUTOFF):
        dock.cutoff_slider.setValue(cutoff)
        _done(qtbot, dock)
        assert (labels.data[painted] == 9).all() and all(labels.data[z, y, x] == 0 for z, y, x in erased)
    names = _names(viewer)
    before = probability.data.copy()
    assert dock.predict() is not None  # a re-prediction keeps the layers and the edits
    _done(qtbot, dock)
    assert _names(viewer) == names and dock.current.labels_layer is labels
    assert (labels.data[painted] == 9).all() and "voxels edited by you (kept)" in dock.predictions.info.text()
    outside = np.ones(labels.data.shape, bool)
    outside[painted] = False
    for z, y, x in erased:
        outside[z, y, x] = False
    np.testing.assert_array_equal(labels.data[outside] > 0, dock.current.labels.proposal.labels[outside] > 0)

    other = make_napari_viewer()  # the saved model in a new viewer and a new dock
    other.add_image(source.data, name="patient03 FLAIR", scale=SPACING)
    second = SegmenterWidget(other)
    second.load_model(saved)
    _done(qtbot, second)
    assert saved.name in second.model_label.text() and second.segmenter.card["pairs"] == card["pairs"]
    assert second.predict() is not None
    _done(qtbot, second)
    np.testing.assert_allclose(other.layers["patient03 FLAIR lesion probability"].data, before, atol=1e-5)
    assert not errors


def test_cancel_during_training_frees_the_dock(dock, qtbot, errors) -> None:
    names = _names(dock.viewer)
    dock.steps.setValue(10_000)
    worker = dock.train()
    qtbot.waitUntil(lambda: "training step" in dock.status.text(), timeout=TIMEOUT_MS)
    clicked = time.perf_counter()
    dock.cancel_button.click()
    assert not dock.busy and time.perf_counter() - clicked < 0.5
    assert dock.train_button.isEnabled() and dock.predict_button.isEnabled()
    assert "cancelled" in dock.status.text() and worker.abort_requested
    qtbot.waitUntil(lambda: not dock.runner.stopping, timeout=10_000)
    assert time.perf_counter() - clicked < 2.0  # the worker stops at its next step (0.15 s measured)
    assert dock.segmenter is None and not dock.models_folder.exists() and _names(dock.viewer) == names
    assert not errors


def _grid_mismatch(dock) -> str:
    dock.viewer.add_labels(np.ones((10, 10, 10), np.uint8), name="patient01 FLAIR lesions v2")
    return "grid (10, 10, 10) does not match its image (91, 109, 46)"


def _empty(dock) -> str:
    dock.viewer.layers["patient02 labels"].data[:] = 0
    return "'patient02 labels' on 'patient02 FLAIR': no voxel is labelled"


def _not_flair(dock) -> str:
    t1 = read_volume(SAMPLE_T1).data[:, :, :46]
    dock.viewer.add_image(t1, name="patient04 T1", scale=SPACING)
    _paint(dock.viewer, "patient04 T1", "patient04 T1 lesions", dock.viewer.layers["patient01 FLAIR lesions"].data > 0)
    return "'patient04 T1': this looks T1-weighted"


@pytest.mark.parametrize("bad", [_grid_mismatch, _empty, _not_flair], ids=["grid", "empty", "not-flair"])
def test_a_bad_pair_trains_nothing_and_says_why(dock, qtbot, errors, bad) -> None:
    message = bad(dock)
    names = _names(dock.viewer)
    dock.train()
    _done(qtbot, dock)
    assert message in dock.status.text() and any(message in error for error in errors), dock.status.text()
    assert dock.segmenter is None and not dock.models_folder.exists() and _names(dock.viewer) == names
    assert dock.train_button.isEnabled()


def test_no_model_and_no_pair_are_refused(make_napari_viewer, pieces, errors) -> None:
    from napari_mentalmap.widgets.segmenter import SegmenterWidget

    viewer = make_napari_viewer()
    viewer.add_image(pieces["whole"][0], name="scan", scale=SPACING)
    widget = SegmenterWidget(viewer)
    assert widget.predict() is None and "no model" in errors[-1]
    assert widget.train() is None and "no pair to train on" in errors[-1]
    assert _names(viewer) == ["scan"]


class _Payload:
    """Unpickling this creates ``marker`` (what a malicious weights file does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_a_refused_model_file_gives_one_line(dock, qtbot, tmp_path, errors) -> None:
    import torch

    evil, marker = tmp_path / "evil.pt", tmp_path / "marker"
    torch.save({"format": "lesion_segmenter", "payload": _Payload(marker)}, evil)
    dock.load_model(evil)
    _done(qtbot, dock)
    assert not marker.exists() and dock.segmenter is None
    text = dock.status.text()
    assert text.startswith("model not loaded: weights file") and "was refused" in text and "\n" not in text
    assert errors and "was refused" in errors[-1]


def _nifti(path: Path, data: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(data, np.diag([*SPACING, 1.0])), str(path))
    return str(path)


def test_add_pair_from_files(dock, pieces, tmp_path, errors) -> None:
    flair, lesions = pieces["whole"]
    image = _nifti(tmp_path / "Subj21_FL.nii.gz", flair)
    labels = _nifti(tmp_path / "Subj21_manual.nii.gz", lesions.astype(np.uint8))
    pair = dock.add_pair_from_files(image, labels)
    assert pair is not None and pair.how == "file" and (pair.image.name, pair.labels.name) == ("Subj21_FL", "Subj21_manual")
    assert pair in dock.checked_pairs() and pair.labels.data.sum() == lesions.sum()
    names = _names(dock.viewer)
    wrong = _nifti(tmp_path / "small.nii.gz", np.ones((4, 4, 4), np.uint8))
    assert dock.add_pair_from_files(image, wrong) is None
    assert "does not match its image" in errors[-1] and _names(dock.viewer) == names
    assert dock.add_pair_from_files(labels, labels) is None and "looks like a label map" in errors[-1]


def test_augmentations_that_cannot_run_are_offered_off(make_napari_viewer, qtbot, monkeypatch) -> None:
    from napari_mentalmap.inference import segmenter_augment
    from napari_mentalmap.inference.segmenter_training import DEFAULT_AUGMENTATION
    from napari_mentalmap.widgets.segmenter import AUGMENTATION_TEXT, SegmenterWidget

    monkeypatch.setattr(segmenter_augment, "missing_dependency",  # the default's library is missing
                        lambda aug: "needs a library (simulated)" if aug == DEFAULT_AUGMENTATION else None)
    widget = SegmenterWidget(make_napari_viewer())
    assert widget.augmentation_combo.currentData() == DEFAULT_AUGMENTATION
    qtbot.waitUntil(lambda: bool(widget.unavailable), timeout=TIMEOUT_MS)
    combo = widget.augmentation_combo
    assert combo.currentData() == "none" and not combo.model().item(combo.findData(DEFAULT_AUGMENTATION)).isEnabled()
    assert all(combo.model().item(i).isEnabled() for i in range(combo.count()) if combo.itemData(i) != DEFAULT_AUGMENTATION)
    assert widget.augmentation_note.text() == f"{AUGMENTATION_TEXT[DEFAULT_AUGMENTATION]} is off: needs a library (simulated)"
