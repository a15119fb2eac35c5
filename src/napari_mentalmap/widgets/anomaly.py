"""Anomaly maps dock widget: a score map over a FLAIR, thresholded live into editable labels.

Methods: the DAE-gated FLAIR intensity (default: the best method on validation, see
docs/uad.md), the FLAIR intensity baseline, the denoising autoencoder and the four VAEs of
Lambert et al. Jobs run through :class:`._worker.JobRunner` (progress, Cancel). Results
are per input: "<name> anomaly" and "<name> anomaly labels" are tied to their source;
re-computing on the same image updates them in place, another image gets its own. The
labels are :class:`inference.labels.EditedLabels`: the threshold only changes the model's
proposal, painted or erased voxels stay (until "Reset to proposal"), and the live Dice
counts them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QLabel, QProgressBar, QPushButton, QSpinBox, QWidget
from superqt import QLabeledDoubleSlider

from ..inference.anomaly_jobs import PreparedAnomaly, anomaly_job, auto_text, prepared_anomaly_job
from ..inference.anomaly_methods import (
    ANOMALY_KINDS,
    GATED_METHOD,
    RESIDUALS,
    SCORELESS_METHODS,
    modality_warning,
    weights_path,
)
from ..inference.labels import DEFAULT_MIN_SIZE, EditedLabels
from ..models.kinds import KINDS
from ._anomaly_calibration import AutoCalibrationControls
from ._anomaly_results import SourceResult, adopt_result, propose
from ._forms import column, form, row
from ._layers import aligned_with, input_images, is_result, update_layer
from ._layout import scroll_content, section
from ._modality import ModalityWatch, flair_by_name
from ._worker import JobRunner, LatestOnly, warm_up

if TYPE_CHECKING:
    import napari


NO_TRUTH = "(none)"
DEFAULT_METHOD = GATED_METHOD  # best on validation (docs/uad.md)
METHODS = (*SCORELESS_METHODS, *ANOMALY_KINDS)
MODEL_MODULES = ("napari_mentalmap.inference.anomaly", "pandas")
"""Imported in a worker thread when the dock opens: torch and the models, and pandas, which
napari imports when the first Labels layer is made (0.26 s in the GUI thread otherwise)."""
TARGET_LABELS = {"lesions": "lesions (MS, white matter)", "tumour": "tumour (glioma)"}
RESIDUAL_NAMES = {"positive": "brighter than reconstruction (hyperintense)",
                  "absolute": "|image − reconstruction| (paper)"}


class AnomalyWidget(QWidget):
    """Choose a FLAIR layer and a method, compute the anomaly map, threshold it live, edit."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.results: dict[str, SourceResult] = {}  # source layer name -> its result
        self.weights: dict[str, Path] = {kind: weights_path(kind) for kind in ANOMALY_KINDS}
        self.last_update_ms = float("nan")
        self._truth_cache: tuple | None = None

        self.layer_combo = QComboBox()
        self.modality = ModalityWatch(self, "FLAIR", "anomaly models", self.refresh_layer_choices)
        self.model_combo = QComboBox()
        for method in METHODS:
            label = (method if method in SCORELESS_METHODS else f"VAE {method} (Lambert et al.)" if method in KINDS
                     else f"DAE {method} (Kascenas et al.)")
            self.model_combo.addItem(label, method)
        self.model_combo.setCurrentIndex(METHODS.index(DEFAULT_METHOD))
        self.residual_combo = QComboBox()
        for residual in RESIDUALS:
            self.residual_combo.addItem(RESIDUAL_NAMES[residual], residual)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu"])  # + GPUs once torch is loaded (warm_up)
        self.compute_button = QPushButton("Compute anomaly map")
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar()
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
        self.target_combo = QComboBox()
        for target, label in TARGET_LABELS.items():
            self.target_combo.addItem(label, target)
        self.target_combo.setToolTip("what the Auto threshold is chosen for (on validation data; see the README)")
        self.reset_button = QPushButton("Reset to proposal")
        self.reset_button.setToolTip("drop every painted or erased voxel and show the model's proposal again")
        self.truth_combo = QComboBox()
        self.calibration = AutoCalibrationControls(self)
        self.dice_label = QLabel("Dice: –")
        self.timing_label = QLabel("")
        for label in (self.dice_label, self.timing_label):
            label.setWordWrap(True)  # a long line would widen the dock past its side

        column(scroll_content(self),
               form(("FLAIR", self.layer_combo), ("method", self.model_combo)), self.modality.label,
               section("Options", form(("score (VAE)", self.residual_combo), ("device", self.device_combo))),
               row(self.compute_button, self.cancel_button),
               self.progress, self.status,
               form(("threshold", row(self.threshold_slider, self.auto_button, stretch_first=True)),
                    ("Auto for", self.target_combo),
                    ("min size (voxels)", self.min_size), ("", self.reset_button), ("ground truth", self.truth_combo)),
               self.dice_label, self.timing_label, self.calibration.widget, self.calibration.status)

        self.runner = JobRunner(self.progress, self.status, self.cancel_button,
                                [self.compute_button, self.model_combo, self.layer_combo], "Anomaly maps", owner=self)
        self.compute_button.clicked.connect(self.compute)
        self.model_combo.currentIndexChanged.connect(self._method_changed)
        self.layer_combo.currentTextChanged.connect(self.modality.chosen)  # first: a refresh its slots cause keeps it
        self.layer_combo.currentTextChanged.connect(self._source_changed)
        self.labeller = LatestOnly(propose, self._proposed, owner=self)
        self.progress.destroyed.connect(self.labeller.shutdown)
        self.threshold_slider.valueChanged.connect(self.request_labels)
        self.min_size.valueChanged.connect(self.request_labels)
        self.auto_button.clicked.connect(self.set_auto_threshold)
        self.target_combo.currentIndexChanged.connect(self._target_changed)
        self.reset_button.clicked.connect(self.reset_edits)
        self.truth_combo.currentTextChanged.connect(self._truth_changed)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.refresh_layer_choices)
        self.refresh_layer_choices()
        warm_up(self, MODEL_MODULES, self.device_combo)
        self._method_changed()
        self._show_controls_for(self.current)  # a reopened dock's earlier result, else disabled

    # --- state ------------------------------------------------------------------------
    @property
    def worker(self):
        return self.runner.worker

    @property
    def busy(self) -> bool:
        """True while a job runs, its result is being shown, or a slider move is being labelled."""
        return self.runner.busy or self.labeller.busy

    @property
    def current(self) -> SourceResult | None:
        """The result of the image chosen in the FLAIR combo (None before a computation)."""
        result = self.results.get(self.layer_combo.currentText())
        if result is not None and result.labels_layer not in self.viewer.layers:
            return None
        return result

    @property
    def labels_layer(self):
        return None if self.current is None else self.current.labels_layer

    @property
    def image_layer(self):
        return None if self.current is None else self.current.image_layer

    # --- layer choices ----------------------------------------------------------------
    def refresh_layer_choices(self, event: object = None) -> None:
        """Fill the FLAIR (input images) and ground-truth (labels) combos; results are never inputs.

        A FLAIR-looking image is picked until the user chooses (:class:`._modality.ModalityWatch`).
        """
        from napari.layers import Labels

        layers = input_images(self.viewer, ndim=None)
        images = [layer.name for layer in layers]
        truths = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels) and not is_result(layer)]
        inserted = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        for combo, names, extra in ((self.layer_combo, images, []), (self.truth_combo, truths, [NO_TRUTH])):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(extra + names)
            if combo is self.layer_combo:
                combo.setCurrentText(self.modality.pick(layers, current, flair_by_name(names, current, inserted)))
            elif current in extra + names:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        self.modality.request(layers)
        self.modality.show(self._layer(self.layer_combo.currentText()))
        self._adopt_results()
        self._show_controls_for(self.current)

    def _adopt_results(self) -> None:
        """Re-link to the results an earlier dock (closed since) left in the viewer."""
        for layer in input_images(self.viewer, ndim=None):
            known = self.results.get(layer.name)
            if known is None or known.labels_layer not in self.viewer.layers:
                adopted = adopt_result(self.viewer, layer)
                if adopted is not None:
                    self.results[layer.name] = adopted

    def _layer(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _method_changed(self, index: object = None) -> None:
        self.residual_combo.setEnabled(self.model_combo.currentData() not in SCORELESS_METHODS)

    def _source_changed(self, name: str) -> None:
        self._truth_cache = None
        self.modality.show(self._layer(name))
        self._show_controls_for(self.current)

    # --- compute ----------------------------------------------------------------------
    def compute(self):
        """Start the anomaly-map job for the chosen image and method (None when refused)."""
        from napari.utils.notifications import show_error, show_warning

        if self.runner.busy:
            show_error("Anomaly maps: a computation is already running; wait or press Cancel")
            return None
        layer = self._layer(self.layer_combo.currentText())
        if layer is None:
            show_error("Anomaly maps: open a FLAIR image first")
            return None
        data = np.asarray(layer.data)
        if data.ndim != 3:
            show_error(f"Anomaly maps need a 3-D volume; {layer.name!r} has shape {data.shape}")
            return None
        spacing = tuple(float(s) for s in layer.scale[-3:])
        method, residual = self.model_combo.currentData(), self.residual_combo.currentData()
        note = self.modality.note(layer, modality_warning)
        if note:
            show_warning(note)
        job = prepared_anomaly_job(
            anomaly_job(data, spacing, method, self.device_combo.currentText(), residual, self.weights.get(method),
                        self.calibration.saved()), self.target, int(self.min_size.value()))
        started = time.perf_counter()

        def on_returned(value: PreparedAnomaly) -> list[Callable[[], str]]:
            steps = self.show_result(value, layer, method, residual)
            elapsed = time.perf_counter() - started
            if note:
                steps.append(lambda: f"warning: {note} ({elapsed:.1f} s)")
            return steps

        return self.runner.start(f"{method} on {layer.name}", job, on_returned)

    def cancel(self) -> None:
        """Stop the job between batches; nothing is added."""
        self.runner.cancel()

    # --- results ----------------------------------------------------------------------
    def show_result(self, prepared: PreparedAnomaly, source, method: str, residual: str = "positive") -> list:
        """Display steps adding (or updating in place) ``source``'s anomaly image and labels."""
        from napari.utils.notifications import show_warning

        result, thresholds, limits, start = prepared.result, prepared.thresholds, prepared.limits, prepared.start
        anomaly = result.anomaly
        previous = self.results.get(source.name)
        if previous is not None and (previous.image_layer not in self.viewer.layers
                                     or previous.labels_layer not in self.viewer.layers):
            previous = None

        def image_step() -> str:
            for note in result.warnings:
                show_warning(note)
            if previous is not None and previous.image_layer.data.shape == anomaly.shape:
                update_layer(previous.image_layer, anomaly, contrast_limits=limits)
                return previous.image_layer.name
            return self.viewer.add_image(anomaly, name=f"{source.name} anomaly", colormap="inferno",
                                         blending="additive", contrast_limits=limits,
                                         **aligned_with(source, "anomaly")).name

        def labels_step() -> str:
            image_layer = self.viewer.layers[f"{source.name} anomaly"] if previous is None else previous.image_layer
            old_labels = previous.labels if previous is not None else None
            labels = EditedLabels(anomaly, previous=old_labels, proposal=prepared.proposal)
            if previous is not None and previous.labels_layer.data is labels.labels:
                labels_layer = previous.labels_layer
            else:
                labels_layer = self.viewer.add_labels(labels.labels, name=f"{source.name} anomaly labels",
                                                      opacity=0.6, **aligned_with(source, "anomaly labels"))
            shown = self.results[source.name] = SourceResult(
                source, method, image_layer, labels_layer, labels, dict(thresholds), start, list(result.warnings),
                residual, result.intensity_bulk)
            if self.layer_combo.currentText() != source.name:
                self.layer_combo.setCurrentText(source.name)
            self._show_controls_for(shown)
            self._show_labels(shown, shown.threshold, int(self.min_size.value()))
            return labels_layer.name

        return [image_step, labels_step]

    def _show_controls_for(self, result: SourceResult | None) -> None:
        """Point the post-processing controls at ``result`` (disabled when there is none)."""
        for widget in (self.threshold_slider, self.min_size, self.auto_button, self.reset_button):
            widget.setEnabled(result is not None)
        if result is None:
            self.dice_label.setText("Dice: –")
            self.calibration.refresh()
            return
        self._target_changed()
        self.threshold_slider.blockSignals(True)
        top = max(float(result.labels.proposal.anomaly.max()), *result.auto_thresholds.values(), 1e-3)
        self.threshold_slider.setRange(0.0, top)
        self.threshold_slider.setValue(result.threshold)
        self.threshold_slider.blockSignals(False)

    @property
    def target(self) -> str:
        """What Auto is chosen for: ``lesions`` or ``tumour``."""
        return self.target_combo.currentData()

    def _target_changed(self, *_: object) -> None:
        """Show each target's Auto threshold of the current result (method and score) in the
        target list; Auto is on when the chosen target has one."""
        thresholds = {} if self.current is None else self.current.auto_thresholds
        for index in range(self.target_combo.count()):
            target = self.target_combo.itemData(index)
            value = thresholds.get(target)
            self.target_combo.setItemText(index, TARGET_LABELS[target] + auto_text(value))
        self.auto_button.setEnabled(self.target in thresholds)
        self.auto_button.setToolTip(
            f"set the Auto threshold for {TARGET_LABELS[self.target]}{auto_text(thresholds[self.target])}" if self.target in thresholds
            else "no threshold was chosen on validation data for this method, score and target")
        self.calibration.refresh()

    def set_auto_threshold(self) -> None:
        """Set the threshold chosen on validation for the method, score and target."""
        value = None if self.current is None else self.current.auto_thresholds.get(self.target)
        if value is not None:
            self.threshold_slider.setValue(value)

    def reset_edits(self) -> None:
        """Drop the user's edits of the current labels: back to the model's proposal."""
        result = self.current
        if result is None:
            return
        result.labels.reset()
        result.labels_layer.refresh()
        self.update_dice()

    def request_labels(self, value: object = None) -> None:
        """Slider or min size moved: label the new proposal in a worker thread (the newest
        request wins), then merge it under the user's edits in the GUI thread."""
        result = self.current
        if result is None:
            return
        result.threshold = float(self.threshold_slider.value())
        self.labeller.request((result, result.threshold, int(self.min_size.value())))

    def _proposed(self, value: tuple[SourceResult, float, int, float]) -> None:
        result, threshold, min_size, worker_ms = value
        if self.results.get(result.source.name) is not result:  # re-computed meanwhile: stale
            return
        self._show_labels(result, threshold, min_size, worker_ms)

    def _show_labels(self, result: SourceResult, threshold: float, min_size: int, worker_ms: float = 0.0) -> None:
        """Threshold ``result``'s map into its labels now, keeping the user's edits (and update Dice)."""
        started = time.perf_counter()
        result.labels.update(threshold, min_size)  # a no-op proposal when the worker made it
        result.labels_layer.refresh()
        result.remember(threshold, min_size)
        self.update_dice()
        self.last_update_ms = 1000 * (time.perf_counter() - started) + worker_ms
        edited = result.labels.n_edited
        components = result.labels.proposal.n_components
        self.timing_label.setText(
            (f"{components} proposed components" if components else "nothing above the threshold: lower it to explore")
            + (f" · {edited} voxels edited by you (kept)" if edited else "")
            + f" · update {self.last_update_ms:.0f} ms")

    def _truth_changed(self, name: str) -> None:
        self._truth_cache = None
        self.update_dice()

    def update_dice(self, value: object = None) -> None:
        """Dice of the current labels (edits included) against the chosen ground-truth layer."""
        result = self.current
        truth_layer = self._layer(self.truth_combo.currentText())
        if result is None or truth_layer is None:
            self.dice_label.setText("Dice: –")
            return
        truth = np.asarray(truth_layer.data)
        shape = result.labels.labels.shape
        if truth.shape != shape:
            self.dice_label.setText(f"Dice: ground truth shape {truth.shape} differs from the image {shape}")
            return
        if self._truth_cache is None or self._truth_cache[0] is not truth_layer:
            self._truth_cache = (truth_layer, np.flatnonzero(truth))
        _, truth_index = self._truth_cache
        result.labels.absorb_edits()
        overlap = result.labels.overlap(truth_index)
        total = result.labels.n_labelled + truth_index.size
        self.dice_label.setText(f"Dice: {1.0 if total == 0 else 2.0 * overlap / total:.3f}")
