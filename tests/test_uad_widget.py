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


def _labelled(qtbot, widget) -> None:
    """Wait for the slider's labelling worker and the merge into the labels layer."""
    qtbot.waitUntil(lambda: not widget.busy, timeout=10_000)


def test_widget_compute_slider_dice(make_napari_viewer, qtbot, tiny_weights) -> None:
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    viewer = make_napari_viewer()
    flair = viewer.add_image(_volume(), name="FLAIR", scale=(2.0, 1.5, 1.5), translate=(10, 20, 30))
    truth = np.zeros((20, 24, 24), np.uint8)
    truth[7:13, 8:14, 8:14] = 1
    viewer.add_labels(truth, name="truth", scale=(2.0, 1.5, 1.5), translate=(10, 20, 30))
    widget = AnomalyWidget(viewer)
    widget.weights["dense3d"] = tiny_weights
    widget.model_combo.setCurrentIndex(widget.model_combo.findData("dense3d"))
    assert widget.layer_combo.currentText() == "FLAIR"

    widget.compute()
    qtbot.waitUntil(lambda: widget.labels_layer is not None and not widget.busy, timeout=30_000)
    image, labels = widget.image_layer, widget.labels_layer
    assert image.blending == "additive" and image.data.shape == flair.data.shape
    for layer in (image, labels):
        np.testing.assert_allclose(layer.scale, flair.scale)
        np.testing.assert_allclose(layer.translate, flair.translate)

    # the Auto button restores the stored threshold
    widget.threshold_slider.setValue(0.0)
    _labelled(qtbot, widget)
    widget.auto_button.click()
    _labelled(qtbot, widget)
    assert widget.threshold_slider.value() == pytest.approx(0.05, abs=1e-3)

    # slider: a threshold above the map's maximum clears the labels, a low one fills them
    widget.threshold_slider.setValue(widget.threshold_slider.maximum())
    _labelled(qtbot, widget)
    assert labels.data.max() == 0
    low = float(np.percentile(image.data[image.data > 0], 5))
    widget.threshold_slider.setValue(low)
    _labelled(qtbot, widget)
    assert labels.data.max() > 0
    expected = (image.data > widget.threshold_slider.value()).sum()
    assert 0 < (labels.data > 0).sum() <= expected
    assert widget.last_update_ms < 500

    # a min size larger than every component removes them all
    widget.min_size.setValue(100_000)
    _labelled(qtbot, widget)
    assert labels.data.max() == 0
    widget.min_size.setValue(1)
    _labelled(qtbot, widget)

    # Dice against the chosen ground truth, updated with the slider
    widget.truth_combo.setCurrentText("truth")
    for threshold in (low, float(np.percentile(image.data[image.data > 0], 95)), 10.0):
        widget.threshold_slider.setValue(min(threshold, widget.threshold_slider.maximum()))
        _labelled(qtbot, widget)
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
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert len(viewer.layers) == n_layers
    assert (widget.image_layer.data >= positive - 1e-6).all() and widget.image_layer.data.sum() > positive.sum()
    assert not widget.auto_button.isEnabled()


def test_widget_bad_inputs(make_napari_viewer, qtbot, tiny_weights) -> None:
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    viewer = make_napari_viewer()
    widget = AnomalyWidget(viewer)
    widget.weights["dense3d"] = tiny_weights
    widget.model_combo.setCurrentIndex(widget.model_combo.findData("dense3d"))
    widget.compute()  # no layer: a notification, no crash
    assert widget.worker is None
    viewer.add_image(_volume(), name="sample T1")
    widget.refresh_layer_choices()
    widget.layer_combo.setCurrentText("sample T1")
    widget.compute()  # a T1 still runs, with a warning
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert widget.labels_layer is not None and "T1" in widget.status.text()
    viewer.add_image(np.zeros((20, 24, 24), np.float32), name="empty FLAIR")
    widget.layer_combo.setCurrentText("empty FLAIR")
    widget.compute()
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert "failed" in widget.status.text()


def _use_intensity_method(widget) -> None:
    from napari_mentalmap.inference.anomaly_methods import INTENSITY_METHOD

    widget.model_combo.setCurrentIndex(widget.model_combo.findData(INTENSITY_METHOD))


def _compute(qtbot, widget) -> None:
    assert widget.compute() is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)


def test_edits_survive_slider_auto_recompute_and_save(make_napari_viewer, qtbot, tmp_path) -> None:
    """Painted and erased voxels are the user's: the threshold, Auto and a re-computation only
    change the proposal around them; Reset drops them; Dice and the saved file include them."""
    from napari_mentalmap._writer import write_labels
    from napari_mentalmap.inference.anomaly_methods import GATED_METHOD
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    viewer = make_napari_viewer()
    viewer.add_image(_volume(), name="FLAIR", scale=(2.0, 1.5, 1.5))
    truth = np.zeros((20, 24, 24), np.uint8)
    truth[7:13, 8:14, 8:14] = 1
    viewer.add_labels(truth, name="truth", scale=(2.0, 1.5, 1.5))
    widget = AnomalyWidget(viewer)
    assert widget.model_combo.currentData() == GATED_METHOD  # the default method
    assert not widget.residual_combo.isEnabled()  # one score
    _use_intensity_method(widget)
    _compute(qtbot, widget)
    labels = widget.labels_layer
    widget.threshold_slider.setValue(0.745)
    _labelled(qtbot, widget)
    proposal_before = labels.data.copy()
    # the user paints 21 voxels with a new label and erases part of a proposed component
    painted = (slice(2, 3), slice(1, 8), slice(1, 4))
    labels.data[painted] = 7
    erased = np.argwhere(proposal_before > 0)[:5]
    for index in erased:
        labels.data[tuple(index)] = 0
    for threshold in (0.5, 0.9, 0.6):
        widget.threshold_slider.setValue(threshold)
        _labelled(qtbot, widget)
        assert (labels.data[painted] == 7).all()
        assert all(labels.data[tuple(i)] == 0 for i in erased)
    assert "26 voxels edited" in widget.timing_label.text()
    widget.auto_button.click()
    _labelled(qtbot, widget)
    assert (labels.data[painted] == 7).all()

    # live Dice counts the edits
    widget.truth_combo.setCurrentText("truth")
    predicted = labels.data > 0
    expected = 2 * (predicted & (truth > 0)).sum() / (predicted.sum() + truth.sum())
    assert widget.dice_label.text() == f"Dice: {expected:.3f}"

    # a re-computation on the same image keeps the layer, its array and the edits
    _compute(qtbot, widget)
    assert widget.labels_layer is labels and (labels.data[painted] == 7).all()
    assert [layer.name for layer in viewer.layers].count("FLAIR anomaly labels") == 1

    # saved with the edits
    [written] = write_labels(str(tmp_path / "edited.nii.gz"), labels.data,
                             {"name": labels.name, "scale": labels.scale, "translate": labels.translate,
                              "metadata": labels.metadata})
    import nibabel as nib
    saved = np.asarray(nib.load(written).dataobj)
    assert (saved == 7).sum() == 21

    widget.reset_button.click()
    assert not (labels.data == 7).any()
    np.testing.assert_array_equal(labels.data > 0, widget.current.labels.proposal.labels > 0)


def test_results_per_input_and_only_inputs_listed(make_napari_viewer, qtbot) -> None:
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    viewer = make_napari_viewer()
    viewer.add_image(_volume(), name="FLAIR A")
    widget = AnomalyWidget(viewer)
    _use_intensity_method(widget)  # fast; the dock's mechanics do not depend on the method
    _compute(qtbot, widget)
    first = viewer.layers["FLAIR A anomaly labels"]
    first.data[0, 0, 0] = 3  # an edit on A
    items = [widget.layer_combo.itemText(i) for i in range(widget.layer_combo.count())]
    assert items == ["FLAIR A"]  # the dock's own results are not inputs
    viewer.add_image(_volume()[:, ::-1].copy(), name="FLAIR B")
    assert widget.layer_combo.currentText() in ("FLAIR A", "FLAIR B")
    widget.layer_combo.setCurrentText("FLAIR B")
    assert not widget.threshold_slider.isEnabled()  # B has no result yet
    _compute(qtbot, widget)
    assert viewer.layers["FLAIR A anomaly labels"] is first and first.data[0, 0, 0] == 3
    assert viewer.layers["FLAIR B anomaly labels"] is widget.labels_layer
    # the slider acts on the chosen image's labels only
    widget.threshold_slider.setValue(widget.threshold_slider.maximum())
    _labelled(qtbot, widget)
    assert widget.labels_layer.data.max() == 0 and first.data.max() > 0
    widget.layer_combo.setCurrentText("FLAIR A")
    assert widget.labels_layer is first and widget.threshold_slider.isEnabled()


def test_cancel_adds_nothing_and_second_job_is_refused(make_napari_viewer, qtbot, monkeypatch) -> None:
    import time

    from napari_mentalmap.widgets import anomaly as anomaly_widget

    def slow_job(*args, **kwargs):
        for i in range(200):
            time.sleep(0.02)
            yield i, 200, "working"
        raise AssertionError("should have been cancelled")

    monkeypatch.setattr(anomaly_widget, "anomaly_job", slow_job)
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    viewer.add_image(_volume(), name="FLAIR")
    widget = anomaly_widget.AnomalyWidget(viewer)
    n_layers = len(viewer.layers)
    assert widget.compute() is not None
    qtbot.waitUntil(lambda: "working" in widget.status.text(), timeout=10_000)
    assert widget.compute() is None and "already running" in shown[-1]
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.busy, timeout=10_000)
    assert len(viewer.layers) == n_layers and "cancelled" in widget.status.text()
    assert widget.compute_button.isEnabled()


def test_auto_threshold_per_target_is_visible_and_applied(make_napari_viewer, qtbot, tiny_weights) -> None:
    from napari_mentalmap.inference.anomaly_methods import (
        INTENSITY_METHOD,
        TARGETS,
        scan_auto_threshold,
    )
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    viewer = make_napari_viewer()
    viewer.add_image(_volume(), name="FLAIR", scale=(2.0, 1.5, 1.5))
    widget = AnomalyWidget(viewer)
    _use_intensity_method(widget)
    widget.compute()
    qtbot.waitUntil(lambda: widget.labels_layer is not None and not widget.busy, timeout=30_000)
    anomaly = np.asarray(widget.image_layer.data)
    values = {}
    for target in TARGETS:
        widget.target_combo.setCurrentIndex(widget.target_combo.findData(target))
        # per scan where the table says so (the map is 0 outside the eroded brain: the whole
        # volume gives the brain mask's fit), else the fixed validation value
        values[target] = scan_auto_threshold(INTENSITY_METHOD, "", target, anomaly, np.ones(anomaly.shape, bool))
        per_scan = " (this scan)" if type(values[target]) is not float else ""
        assert widget.auto_button.isEnabled()
        assert widget.target_combo.currentText().endswith(f"{values[target]:.3g}{per_scan}")
        widget.threshold_slider.setValue(0.0)
        _labelled(qtbot, widget)
        widget.auto_button.click()
        _labelled(qtbot, widget)
        assert widget.threshold_slider.value() == pytest.approx(values[target], abs=1e-3)

    # weights the user picked carry only their own (lesion) threshold: no tumour Auto
    widget.weights["dense3d"] = tiny_weights
    widget.model_combo.setCurrentIndex(widget.model_combo.findData("dense3d"))
    widget.compute()
    qtbot.waitUntil(lambda: not widget.busy and widget.current.method == "dense3d", timeout=30_000)
    assert not widget.auto_button.isEnabled()
    widget.target_combo.setCurrentIndex(widget.target_combo.findData("lesions"))
    assert widget.auto_button.isEnabled() and "0.05" in widget.target_combo.currentText()


def test_slider_labels_in_a_worker_keep_edits_made_meanwhile(make_napari_viewer, qtbot) -> None:
    """Fast slider moves are labelled in a worker thread (the newest wins); a voxel painted
    while it runs is kept, and the labels end as the final threshold's proposal under it."""
    from napari_mentalmap.inference.labels import threshold_labels
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    viewer = make_napari_viewer()
    viewer.add_image(_volume(), name="FLAIR", scale=(2.0, 1.5, 1.5))
    widget = AnomalyWidget(viewer)
    _use_intensity_method(widget)  # fast; the dock's mechanics do not depend on the method
    _compute(qtbot, widget)
    labels = widget.labels_layer
    top = widget.threshold_slider.maximum()
    for fraction in np.linspace(0.9, 0.2, 15):  # no waiting in between
        widget.threshold_slider.setValue(float(fraction * top))
    labels.data[0, 0:3, 0:3] = 9  # painted while the worker runs
    _labelled(qtbot, widget)
    expected = threshold_labels(widget.current.labels.proposal.anomaly, widget.threshold_slider.value(),
                                widget.min_size.value())
    expected[0, 0:3, 0:3] = 9
    np.testing.assert_array_equal(labels.data, expected)
    assert "9 voxels edited by you" in widget.timing_label.text()
