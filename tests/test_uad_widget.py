"""Anomaly widget: compute in a worker, live threshold slider, Dice against a labels layer."""

from __future__ import annotations

import numpy as np
import pytest
from test_uad import TINY_GRID, _synthetic_subjects, tiny_config

from napari_mentalmap.training.uad import UADTrainConfig, export_weights, train_uad


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uad")
    config = UADTrainConfig(kind="dense3d", out_dir=str(folder / "run"), epochs=1, batch_size=2,
                            grid=TINY_GRID.to_dict(), model=tiny_config("dense3d").to_dict())
    train_uad(config, subjects={"train": _synthetic_subjects(2), "val": []}, progress=False)
    return export_weights(folder / "run", folder / "uad_dense3d.pt", {"threshold": 0.05, "residual": "positive"})


def _volume() -> np.ndarray:
    volume = np.zeros((20, 24, 24), np.float32)
    volume[3:17, 4:20, 4:20] = 100.0 + 5 * np.random.default_rng(0).random((14, 16, 16))
    volume[7:13, 8:14, 8:14] = 300.0  # a bright "lesion"
    return volume


def test_widget_compute_slider_dice(make_napari_viewer, qtbot, tiny_weights) -> None:
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    viewer = make_napari_viewer()
    flair = viewer.add_image(_volume(), name="FLAIR", scale=(2.0, 1.5, 1.5), translate=(10, 20, 30))
    truth = np.zeros((20, 24, 24), np.uint8)
    truth[7:13, 8:14, 8:14] = 1
    viewer.add_labels(truth, name="truth", scale=(2.0, 1.5, 1.5), translate=(10, 20, 30))
    widget = AnomalyWidget(viewer)
    widget.weights["dense3d"] = tiny_weights
    widget.model_combo.setCurrentText("dense3d")
    assert widget.layer_combo.currentText() == "FLAIR"

    widget.compute()
    qtbot.waitUntil(lambda: widget.labels_layer is not None and widget.worker is None, timeout=30_000)
    image, labels = widget.image_layer, widget.labels_layer
    assert image.blending == "additive" and image.data.shape == flair.data.shape
    for layer in (image, labels):
        np.testing.assert_allclose(layer.scale, flair.scale)
        np.testing.assert_allclose(layer.translate, flair.translate)

    # the Auto button restores the stored threshold
    widget.threshold_slider.setValue(0.0)
    widget.auto_button.click()
    assert widget.threshold_slider.value() == pytest.approx(0.05, abs=1e-3)

    # slider: a threshold above the map's maximum clears the labels, a low one fills them
    widget.threshold_slider.setValue(widget.threshold_slider.maximum())
    assert labels.data.max() == 0
    low = float(np.percentile(image.data[image.data > 0], 5))
    widget.threshold_slider.setValue(low)
    assert labels.data.max() > 0
    expected = (image.data > widget.threshold_slider.value()).sum()
    assert 0 < (labels.data > 0).sum() <= expected
    assert widget.last_update_ms < 500

    # a min size larger than every component removes them all
    widget.min_size.setValue(100_000)
    assert labels.data.max() == 0
    widget.min_size.setValue(1)

    # Dice against the chosen ground truth, updated with the slider
    widget.truth_combo.setCurrentText("truth")
    for threshold in (low, float(np.percentile(image.data[image.data > 0], 95)), 10.0):
        widget.threshold_slider.setValue(min(threshold, widget.threshold_slider.maximum()))
        predicted = labels.data > 0
        total = predicted.sum() + truth.sum()
        expected = 1.0 if total == 0 else 2 * (predicted & (truth > 0)).sum() / total
        assert widget.dice_label.text() == f"Dice: {expected:.3f}"
    viewer.add_labels(np.zeros((5, 5, 5), np.uint8), name="wrong shape")
    widget.truth_combo.setCurrentText("wrong shape")
    assert "differs" in widget.dice_label.text()

    # the paper's |x - x_hat| score: a map at least as large everywhere; the stored
    # threshold was chosen for the other score, so Auto is off; layers are replaced, not added
    positive = image.data.copy()
    n_layers = len(viewer.layers)
    widget.residual_combo.setCurrentIndex(widget.residual_combo.findData("absolute"))
    widget.compute()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert len(viewer.layers) == n_layers
    assert (widget.image_layer.data >= positive - 1e-6).all() and widget.image_layer.data.sum() > positive.sum()
    assert not widget.auto_button.isEnabled()


def test_widget_bad_inputs(make_napari_viewer, qtbot, tiny_weights) -> None:
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    viewer = make_napari_viewer()
    widget = AnomalyWidget(viewer)
    widget.weights["dense3d"] = tiny_weights
    widget.compute()  # no layer: a notification, no crash
    assert widget.worker is None
    viewer.add_image(_volume(), name="sample T1")
    widget.refresh_layer_choices()
    widget.layer_combo.setCurrentText("sample T1")
    widget.compute()  # a T1 still runs, with a warning
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert widget.labels_layer is not None and "T1" in widget.status.text()
    viewer.add_image(np.zeros((20, 24, 24), np.float32), name="empty FLAIR")
    widget.layer_combo.setCurrentText("empty FLAIR")
    widget.compute()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert "error" in widget.status.text()
