"""The Lesion segmenter dock's predictions: per image, "<name> lesion probability" and the
editable "<name> lesion labels", with the cutoff, min size and Reset controls.

The labels follow the Anomaly maps dock's rules (:class:`~napari_mentalmap.inference.labels.EditedLabels`,
:class:`._anomaly_results.SourceResult`): the cutoff changes only the model's proposal,
painted or erased voxels stay, a re-prediction of the same image keeps the labels layer and
the edits, and a reopened dock re-links to the layers (their tag holds the cutoff).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QPushButton, QSpinBox, QWidget
from superqt import QLabeledDoubleSlider

from ..inference.labels import DEFAULT_MIN_SIZE, EditedLabels
from ..inference.segment import DEFAULT_CUTOFF
from ._anomaly_results import SourceResult, adopt_result, propose
from ._layers import aligned_with, update_layer
from ._segmenter_jobs import PreparedSegmentation
from ._worker import LatestOnly

KIND = "lesion probability"
"""Tag of the probability layer; its labels are tagged "<KIND> labels" (see ``adopt_result``)."""


class Predictions:
    """The results of Predict and the controls that threshold them into labels."""

    def __init__(self, owner: QWidget, viewer: Any, chosen: Callable[[], str], choose: Callable[[str], None]) -> None:
        """``chosen()``: the image name the dock shows; ``choose(name)``: show that image."""
        self.viewer, self.chosen, self.choose = viewer, chosen, choose
        self.results: dict[str, SourceResult] = {}  # image name -> its prediction
        self.cutoff_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.cutoff_slider.setRange(0.0, 1.0)
        self.cutoff_slider.setDecimals(2)
        self.cutoff_slider.setValue(DEFAULT_CUTOFF)
        self.cutoff_slider.setToolTip("lesion probability above which a voxel is labelled")
        self.min_size = QSpinBox()
        self.min_size.setRange(1, 100_000)
        self.min_size.setValue(DEFAULT_MIN_SIZE)
        self.reset_button = QPushButton("Reset to proposal")
        self.reset_button.setToolTip("drop every painted or erased voxel and show the model's proposal again")
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.labeller = LatestOnly(propose, self._proposed, owner=owner)
        self.cutoff_slider.valueChanged.connect(self.request_labels)
        self.min_size.valueChanged.connect(self.request_labels)
        self.reset_button.clicked.connect(self.reset_edits)

    @property
    def current(self) -> SourceResult | None:
        """The prediction of the chosen image (None before one, or once its labels are gone)."""
        result = self.results.get(self.chosen())
        if result is not None and result.labels_layer not in self.viewer.layers:
            return None
        return result

    def adopt(self, images: list[Any]) -> None:
        """Re-link to the predictions an earlier dock (closed since) left in the viewer."""
        for layer in images:
            known = self.results.get(layer.name)
            if known is None or known.labels_layer not in self.viewer.layers:
                adopted = adopt_result(self.viewer, layer, KIND)
                if adopted is not None:
                    self.results[layer.name] = adopted
        self.controls_for(self.current)

    def show_result(self, prepared: PreparedSegmentation, source: Any, method: str) -> list[Callable[[], str]]:
        """Display steps adding (or updating in place) ``source``'s probability and labels."""
        from napari.utils.notifications import show_warning

        probability = prepared.result.probability
        previous = self.results.get(source.name)
        if previous is not None and (previous.image_layer not in self.viewer.layers
                                     or previous.labels_layer not in self.viewer.layers):
            previous = None
        added: list[Any] = []

        def image_step() -> str:
            for note in prepared.result.warnings:
                show_warning(f"Lesion segmenter: {note}")
            if previous is not None and previous.image_layer.data.shape == probability.shape:
                update_layer(previous.image_layer, probability)
                added.append(previous.image_layer)
            else:
                added.append(self.viewer.add_image(
                    probability, name=f"{source.name} lesion probability", colormap="magma", blending="additive",
                    contrast_limits=(0.0, 1.0), **aligned_with(source, KIND)))
            return added[0].name

        def labels_step() -> str:
            labels = EditedLabels(probability, previous=previous.labels if previous else None,
                                  proposal=prepared.proposal)
            if previous is not None and previous.labels_layer.data is labels.labels:
                labels_layer = previous.labels_layer
            else:
                labels_layer = self.viewer.add_labels(labels.labels, name=f"{source.name} lesion labels",
                                                      opacity=0.6, **aligned_with(source, f"{KIND} labels"))
            shown = self.results[source.name] = SourceResult(source, method, added[0], labels_layer, labels, {},
                                                             prepared.cutoff, list(prepared.result.warnings))
            if self.chosen() != source.name:
                self.choose(source.name)
            self.controls_for(shown)
            self._show_labels(shown, float(self.cutoff_slider.value()), int(self.min_size.value()))
            return labels_layer.name

        return [image_step, labels_step]

    def controls_for(self, result: SourceResult | None) -> None:
        """Point the cutoff controls at ``result`` (disabled when there is none)."""
        for widget in (self.cutoff_slider, self.min_size, self.reset_button):
            widget.setEnabled(result is not None)
        if result is not None:
            self.cutoff_slider.blockSignals(True)
            self.cutoff_slider.setValue(result.threshold)
            self.cutoff_slider.blockSignals(False)

    def request_labels(self, value: object = None) -> None:
        """Cutoff or min size moved: the new proposal in a worker thread (the newest request
        wins), merged under the user's edits in the GUI thread."""
        result = self.current
        if result is None:
            return
        result.threshold = float(self.cutoff_slider.value())
        self.labeller.request((result, result.threshold, int(self.min_size.value())))

    def _proposed(self, value: tuple[SourceResult, float, int, float]) -> None:
        result, cutoff, min_size, _ = value
        if self.results.get(result.source.name) is result:  # not re-predicted meanwhile
            self._show_labels(result, cutoff, min_size)

    def _show_labels(self, result: SourceResult, cutoff: float, min_size: int) -> None:
        started = time.perf_counter()
        result.labels.update(cutoff, min_size)
        result.labels_layer.refresh()
        result.remember(cutoff, min_size)
        edited, components = result.labels.n_edited, result.labels.proposal.n_components
        self.info.setText(
            (f"{components} proposed lesions" if components else "nothing above the cutoff: lower it to explore")
            + (f" · {edited} voxels edited by you (kept)" if edited else "")
            + f" · update {1000 * (time.perf_counter() - started):.0f} ms")

    def reset_edits(self) -> None:
        """Drop the user's edits of the chosen image's labels: back to the model's proposal."""
        result = self.current
        if result is not None:
            result.labels.reset()
            result.labels_layer.refresh()
            self._show_labels(result, result.threshold, int(self.min_size.value()))
