"""The Anomaly maps dock's "Calibrate Auto to these labels" in a napari window: learned from the
user's corrected labels, used by the next Compute on another image, forgotten on request."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mentalmap.inference.auto_calibration import CalibratedThreshold, load_calibrations
from napari_mentalmap.inference.labels import threshold_labels
from napari_mentalmap.inference.scan_threshold import ScanThreshold


def _flair(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((24, 40, 36), np.float32)
    image[3:21, 5:35, 5:31] = 100 + 8 * rng.standard_normal((18, 30, 26))
    z, y, x = np.indices(image.shape)
    image += 90 * np.exp(-((z - 12) ** 2 + (y - 20) ** 2 + (x - 17) ** 2) / 8.0) * (image > 0)  # a soft lesion
    return image


def _computed(widget, qtbot, name: str) -> None:
    widget.layer_combo.setCurrentText(name)
    assert widget.compute() is not None
    qtbot.waitUntil(lambda: not widget.busy and widget.current is not None
                    and widget.current.source.name == name, timeout=60_000)


def test_calibrate_auto_to_corrected_labels_then_use_and_forget_it(make_napari_viewer, qtbot, tmp_path,
                                                                  monkeypatch) -> None:
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    path = tmp_path / "calibration.json"
    monkeypatch.setenv("MENTALMAP_CALIBRATION", str(path))
    viewer = make_napari_viewer()
    for name, seed in (("first FLAIR", 0), ("second FLAIR", 1)):
        viewer.add_image(_flair(seed), name=name, scale=(2.0, 2.0, 2.0))
    widget = AnomalyWidget(viewer)
    _computed(widget, qtbot, "first FLAIR")
    first = widget.current
    assert isinstance(first.auto_thresholds["lesions"], ScanThreshold) and not widget.calibration.forget_button.isEnabled()
    # the user's correction: only the lesion's bright core is lesion (a site that draws tight)
    anomaly = first.labels.proposal.anomaly
    proposed = np.asarray(first.labels_layer.data) > 0
    core = threshold_labels(anomaly, float(np.quantile(anomaly[proposed], 0.5))) > 0
    assert 0 < core.sum() < proposed.sum()
    first.labels_layer.data[:] = 0
    first.labels_layer.data[core] = 1
    first.labels_layer.refresh()
    assert widget.calibration.calibrate() is not None  # a job in the dock's worker
    qtbot.waitUntil(lambda: not widget.busy and path.exists(), timeout=30_000)
    [calibration] = load_calibrations(path).values()
    assert calibration.source == "first FLAIR" and calibration.dice > 0.8 and calibration.sds is not None
    assert "Auto calibrated" in widget.status.text()
    assert isinstance(first.auto_thresholds["lesions"], CalibratedThreshold)
    assert widget.target_combo.currentText().endswith("(your calibration)")
    assert "Auto calibrated" in widget.calibration.status.text() and "--auto-sds" in widget.calibration.status.text()
    assert widget.calibration.forget_button.isEnabled()
    # the next image's Auto is the calibrated one, and it labels the core, not the halo
    _computed(widget, qtbot, "second FLAIR")
    second = widget.current
    auto = second.auto_thresholds["lesions"]
    assert isinstance(auto, CalibratedThreshold) and widget.threshold_slider.value() == pytest.approx(auto, abs=1e-3)
    calibrated = int((np.asarray(second.labels_layer.data) > 0).sum())
    widget.calibration.forget()
    assert load_calibrations(path) == {}
    assert all(type(r.auto_thresholds["lesions"]) is ScanThreshold for r in (first, second))
    shipped = int((threshold_labels(second.labels.proposal.anomaly, second.auto_thresholds["lesions"]) > 0).sum())
    assert 0 < calibrated < 0.75 * shipped  # the tight drawing carried over to the next scan
    assert widget.target_combo.currentText().endswith("(this scan)") and widget.calibration.status.text() == ""


def test_calibrating_empty_labels_says_why_and_saves_nothing(make_napari_viewer, qtbot, tmp_path, monkeypatch) -> None:
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    path = tmp_path / "calibration.json"
    monkeypatch.setenv("MENTALMAP_CALIBRATION", str(path))
    errors: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", errors.append)
    viewer = make_napari_viewer()
    viewer.add_image(_flair(0), name="FLAIR", scale=(2.0, 2.0, 2.0))
    widget = AnomalyWidget(viewer)
    assert not widget.calibration.calibrate_button.isEnabled()  # nothing computed yet
    _computed(widget, qtbot, "FLAIR")
    widget.current.labels_layer.data[:] = 0
    assert widget.calibration.calibrate() is None
    assert errors and "labels are empty" in errors[-1] and not path.exists()


def test_cancel_during_calibration_saves_nothing(make_napari_viewer, qtbot, tmp_path, monkeypatch) -> None:
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    path = tmp_path / "calibration.json"
    monkeypatch.setenv("MENTALMAP_CALIBRATION", str(path))
    viewer = make_napari_viewer()
    viewer.add_image(_flair(0), name="FLAIR", scale=(2.0, 2.0, 2.0))
    widget = AnomalyWidget(viewer)
    _computed(widget, qtbot, "FLAIR")
    before = dict(widget.current.auto_thresholds)
    assert widget.calibration.calibrate() is not None
    widget.cancel()
    assert not widget.runner.busy and "cancelled" in widget.status.text()
    qtbot.wait(300)
    assert not path.exists() and widget.current.auto_thresholds == before
