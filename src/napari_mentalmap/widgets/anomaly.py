"""Anomaly maps dock widget: a VAE's residual over a FLAIR, thresholded live into labels."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from ..device import available_devices
from ..inference.anomaly import (
    DEFAULT_MIN_SIZE,
    RESIDUALS,
    AnomalyResult,
    LabelUpdater,
    anomaly_map,
    load_anomaly_model,
    modality_warning,
    weights_path,
)
from ..models.uad_vae import KINDS

if TYPE_CHECKING:
    import napari

NO_TRUTH = "(none)"
DEFAULT_KIND = "spatial2d"  # the best VAE of `mentalmap eval uad` on both test sets (README)


RESIDUAL_NAMES = {"positive": "brighter than reconstruction (hyperintense)",
                  "absolute": "|image − reconstruction| (paper)"}


def anomaly_job(data: np.ndarray, spacing: tuple[float, float, float], weights: Path, device: str,
                residual: str = "positive"):
    """Load the model and run the anomaly-map generator (what the worker thread runs).

    Returns the result and the stored automatic threshold (None when it was chosen for
    another score than ``residual``).
    """
    model = load_anomaly_model(weights, device)
    result = yield from anomaly_map(data, spacing, model, residual=residual)
    return result, model.threshold if model.residual_kind == residual else None


class AnomalyWidget(QWidget):
    """Choose a FLAIR layer and a model, compute the anomaly map, threshold it live."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.weights: dict[str, Path] = {kind: weights_path(kind) for kind in KINDS}
        self.worker = None
        self.updater: LabelUpdater | None = None
        self.auto_threshold: float | None = None
        self.image_layer = None
        self.labels_layer = None
        self.last_update_ms = float("nan")
        self.modality_note: str | None = None
        self._truth_cache: tuple | None = None

        self.layer_combo = QComboBox()
        self.model_combo = QComboBox()
        self.model_combo.addItems(list(KINDS))
        self.model_combo.setCurrentText(DEFAULT_KIND)
        self.residual_combo = QComboBox()
        for residual in RESIDUALS:
            self.residual_combo.addItem(RESIDUAL_NAMES[residual], residual)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", *available_devices()])
        self.compute_button = QPushButton("Compute anomaly map")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        self.threshold_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(0.0, 1.0)
        self.threshold_slider.setDecimals(3)
        self.threshold_slider.setValue(0.3)
        self.min_size = QSpinBox()
        self.min_size.setRange(1, 100_000)
        self.min_size.setValue(DEFAULT_MIN_SIZE)
        self.auto_button = QPushButton("Auto")
        self.truth_combo = QComboBox()
        self.dice_label = QLabel("Dice: –")
        self.timing_label = QLabel("")

        form = QFormLayout()
        form.addRow("FLAIR", self.layer_combo)
        form.addRow("model", self.model_combo)
        form.addRow("score", self.residual_combo)
        form.addRow("device", self.device_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.compute_button)
        buttons.addWidget(self.cancel_button)
        threshold_row = QHBoxLayout()
        threshold_row.addWidget(self.threshold_slider, 1)
        threshold_row.addWidget(self.auto_button)
        post = QFormLayout()
        post.addRow("threshold", threshold_row)
        post.addRow("min size (voxels)", self.min_size)
        post.addRow("ground truth", self.truth_combo)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Anomaly maps (VAE, Lambert et al.)</b>"))
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(post)
        layout.addWidget(self.dice_label)
        layout.addWidget(self.timing_label)
        layout.addStretch(1)

        self.compute_button.clicked.connect(self.compute)
        self.cancel_button.clicked.connect(self.cancel)
        self.threshold_slider.valueChanged.connect(self.update_labels)
        self.min_size.valueChanged.connect(self.update_labels)
        self.auto_button.clicked.connect(self.set_auto_threshold)
        self.truth_combo.currentTextChanged.connect(self._truth_changed)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.refresh_layer_choices)
        self.refresh_layer_choices()
        self._set_post_enabled(False)

    # layer choices -------------------------------------------------------------------
    def refresh_layer_choices(self, event: object = None) -> None:
        """Fill the FLAIR (image) and ground-truth (labels) combos from the viewer."""
        from napari.layers import Image, Labels

        own = {self.image_layer, self.labels_layer}
        images = [layer.name for layer in self.viewer.layers if isinstance(layer, Image) and layer not in own]
        truths = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels) and layer not in own]
        for combo, names, extra in ((self.layer_combo, images, []), (self.truth_combo, truths, [NO_TRUTH])):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(extra + names)
            if current in extra + names:
                combo.setCurrentText(current)
            elif combo is self.layer_combo:
                flair = [n for n in names if "flair" in n.lower()]
                if flair:
                    combo.setCurrentText(flair[0])
            combo.blockSignals(False)

    def _layer(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    # compute -------------------------------------------------------------------------
    def compute(self) -> None:
        """Start the anomaly-map job for the chosen layer and model in a worker thread."""
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error, show_warning

        layer = self._layer(self.layer_combo.currentText())
        if layer is None:
            show_error("Anomaly maps: open a FLAIR image first")
            return
        data = np.asarray(layer.data)
        if data.ndim != 3:
            show_error(f"Anomaly maps need a 3-D volume; {layer.name!r} has shape {data.shape}")
            return
        spacing = tuple(float(s) for s in layer.scale[-3:])
        kind = self.model_combo.currentText()
        self.modality_note = modality_warning(layer.name)
        if self.modality_note:
            show_warning(self.modality_note)
        self.source_layer = layer
        self.worker = create_worker(anomaly_job, data, spacing, self.weights[kind], self.device_combo.currentText(),
                                    self.residual_combo.currentData(), _ignore_errors=True)
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.compute_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"computing with {kind} …")
        self._started = time.perf_counter()
        self.worker.start()

    def cancel(self) -> None:
        """Stop the job between batches."""
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("cancelled")

    def _on_progress(self, progress: tuple[int, int, str]) -> None:
        done, total, message = progress
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.status.setText(message)

    def _on_error(self, error: Exception) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(f"error: {error}")
        show_error(f"Anomaly map failed: {error}")

    def _on_finished(self) -> None:
        self.compute_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.worker = None

    def _on_returned(self, value: tuple[AnomalyResult, float | None]) -> None:
        result, threshold = value
        self.show_result(result, threshold, self.source_layer)
        done = f"done in {time.perf_counter() - self._started:.1f} s"
        self.status.setText(f"{done} · warning: {self.modality_note}" if self.modality_note else done)

    # results -------------------------------------------------------------------------
    def show_result(self, result: AnomalyResult, threshold: float | None, source) -> None:
        """Add (or replace) the anomaly Image and Labels layers, aligned with ``source``."""
        from napari.utils.notifications import show_warning

        for note in result.warnings:
            show_warning(note)
        self.source_layer = source
        self.auto_threshold = threshold
        aligned = {"scale": source.scale, "translate": source.translate, "rotate": source.rotate,
                   "shear": source.shear, "affine": source.affine.affine_matrix,
                   "metadata": dict(source.metadata)}
        anomaly = result.anomaly
        inside = anomaly[anomaly > 0]
        # show only the upper tail: the additive overlay stays readable over the FLAIR
        low, top = (float(v) for v in np.percentile(inside, [75, 99.9])) if inside.size else (0.0, 1.0)
        for layer in (self.image_layer, self.labels_layer):
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.image_layer = self.viewer.add_image(
            anomaly, name=f"{source.name} anomaly", colormap="inferno", blending="additive",
            contrast_limits=(low, max(top, low + 1e-6)), **aligned)
        self.updater = LabelUpdater(anomaly)
        self.labels_layer = self.viewer.add_labels(
            self.updater.labels, name=f"{source.name} anomaly labels", opacity=0.6, **aligned)
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setRange(0.0, max(float(anomaly.max()), 1e-3))
        self.threshold_slider.setValue(threshold if threshold is not None else top / 2)
        self.threshold_slider.blockSignals(False)
        self._set_post_enabled(True)
        self.auto_button.setEnabled(threshold is not None)
        self.refresh_layer_choices()
        self.update_labels()

    def _set_post_enabled(self, enabled: bool) -> None:
        for widget in (self.threshold_slider, self.min_size, self.auto_button):
            widget.setEnabled(enabled)

    def set_auto_threshold(self) -> None:
        """Set the threshold stored with the model's weights."""
        if self.auto_threshold is not None:
            self.threshold_slider.setValue(self.auto_threshold)

    def update_labels(self, value: object = None) -> None:
        """Re-threshold the anomaly map into the Labels layer (and update Dice)."""
        if self.updater is None or self.labels_layer is None:
            return
        started = time.perf_counter()
        labels = self.updater.update(float(self.threshold_slider.value()), int(self.min_size.value()))
        if self.labels_layer.data is labels:
            # updated in place, same shape: re-slice and redraw, the extent cannot change
            self.labels_layer.refresh(extent=False, highlight=False)
        else:
            self.labels_layer.data = labels
        self.update_dice()
        self.last_update_ms = 1000 * (time.perf_counter() - started)
        self.timing_label.setText(f"{self.updater.n_components} components · update {self.last_update_ms:.0f} ms")

    def _truth_changed(self, name: str) -> None:
        self._truth_cache = None
        self.update_dice()

    def update_dice(self, value: object = None) -> None:
        """Dice of the current labels against the chosen ground-truth layer."""
        truth_layer = self._layer(self.truth_combo.currentText())
        if self.updater is None or truth_layer is None:
            self.dice_label.setText("Dice: –")
            return
        truth = np.asarray(truth_layer.data)
        if truth.shape != self.updater.labels.shape:
            self.dice_label.setText(
                f"Dice: ground truth shape {truth.shape} differs from the image {self.updater.labels.shape}")
            return
        if self._truth_cache is None or self._truth_cache[0] is not truth_layer:
            self._truth_cache = (truth_layer, np.flatnonzero(truth))
        _, truth_index = self._truth_cache
        # the updater counts its labelled voxels; the overlap reads only the truth voxels
        overlap = self.updater.overlap(truth_index)
        total = self.updater.n_labelled + truth_index.size
        self.dice_label.setText(f"Dice: {1.0 if total == 0 else 2.0 * overlap / total:.3f}")
