"""Mental maps (BRUNO) dock widget: contexts -> mean, uncertainty and samples of the missing slices.

One dock, read top to bottom: the image, its context slices (embedded
:class:`ContextSlicesWidget`), the model and sampling settings, then Mean / Samples /
Prior. Every job runs in a worker thread (:mod:`._worker`). Results are layers named
after the input and placed over it: "<name> BRUNO mean" and "<name> BRUNO std" on the
input's voxel grid with its scale/translate/affine and metadata (so File > Save writes
them with the input's affine); "<name> BRUNO samples" is on the input grid too (refined with
the acquired slices) up to 2 GB of samples, else on the model grid with the scale/translate
that places it over the input. Prior jobs (no contexts) give
"<name> BRUNO prior ..." layers. Results are per input: re-running on the same image
updates its layers in place, another image gets its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGroupBox,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..checkpoints import shipped
from ._forms import column, form, row
from ._layers import RESULT_KEY, aligned_with, find_result, input_images, update_layer
from ._layout import scroll_content, section
from ._modality import ModalityWatch
from ._worker import JobRunner, report_error, warm_up
from .context_slices import ContextSlicesWidget, volume_of

if TYPE_CHECKING:
    import napari

    from ..inference.mental_map import InputGridMaps, MentalMap

TITLE = "Mental maps (BRUNO)"
DEFAULT_WEIGHTS = shipped("bruno_t1").path
MODEL_MODULES = ("napari_mentalmap.inference.mental_map",)
"""Imported in a worker thread when the dock opens (torch and the flow load off the GUI thread)."""


def mental_map_job(volume: np.ndarray, spacing: tuple[float, ...], contexts: list[int], keep_contexts: bool,
                   **options):
    """The dock's job: :func:`~napari_mentalmap.inference.mental_map.hallucinate` then the
    input-grid maps; its module (torch) is imported inside the worker thread."""
    from ..inference.mental_map import hallucinate, hallucinate_on_input_grid

    job = hallucinate(volume, spacing, contexts, keep_contexts=keep_contexts, **options)
    return (yield from hallucinate_on_input_grid(job, volume, keep_contexts))
DEMO_CONTEXTS = 5


class MentalMapWidget(QWidget):
    """Choose an image and its context slices, then compute BRUNO mean, std and samples."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.results: dict[tuple[str, str], object] = {}  # (source name, kind) -> layer added by this widget
        self.last_result: MentalMap | None = None

        self.layer_combo = QComboBox()
        self.modality = ModalityWatch(self, "T1", "BRUNO model", self.refresh_layer_choices)
        self.contexts = ContextSlicesWidget(napari_viewer, self)
        self.weights_edit = QLineEdit()
        self.weights_edit.setPlaceholderText(f"shipped weights ({DEFAULT_WEIGHTS.name})")
        self.browse_button = QPushButton("…")
        self.browse_button.setToolTip("choose a BRUNO checkpoint (.pt)")
        self.n_samples = QSpinBox()
        self.n_samples.setRange(1, 100)
        self.n_samples.setValue(8)
        self.n_samples.setToolTip("samples drawn per job (the std needs at least 2)")
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(1.0)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu"])  # + GPUs once torch is loaded (warm_up)
        self.keep_contexts = QCheckBox("keep acquired slices")
        self.keep_contexts.setChecked(True)
        self.keep_contexts.setToolTip("put the acquired context slices back exactly into the results")
        self.mean_button = QPushButton("Mean")
        self.mean_button.setToolTip("posterior mean + voxel-wise std (uncertainty) of the samples")
        self.samples_button = QPushButton("Samples")
        self.samples_button.setToolTip("a 4-D stack of hallucinated volumes (+ mean and std)")
        self.prior_button = QPushButton("Prior")
        self.prior_button.setToolTip("no contexts: what the model expects of any brain")
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)

        context_box = QGroupBox("Context (acquired) slices")
        QVBoxLayout(context_box).addWidget(self.contexts)
        column(scroll_content(self),
               form(("image", self.layer_combo)),
               self.modality.label,
               context_box,
               section("Model and sampling options",
                       form(("model", row(self.weights_edit, self.browse_button, stretch_first=True)),
                            ("samples", self.n_samples), ("temperature", self.temperature), ("seed", self.seed),
                            ("device", self.device_combo), ("", self.keep_contexts))),
               row(self.mean_button, self.samples_button, self.prior_button, self.cancel_button),
               self.progress, self.status)

        self.runner = JobRunner(
            self.progress, self.status, self.cancel_button,
            [self.mean_button, self.samples_button, self.prior_button, self.layer_combo, self.contexts,
             self.weights_edit, self.browse_button, self.device_combo],
            TITLE, owner=self,
        )
        self.mean_button.clicked.connect(lambda: self.run("mean"))
        self.samples_button.clicked.connect(lambda: self.run("samples"))
        self.prior_button.clicked.connect(lambda: self.run("prior"))
        self.browse_button.clicked.connect(self._browse)
        self.layer_combo.currentTextChanged.connect(self.modality.chosen)  # first: a refresh its slots cause keeps it
        self.layer_combo.currentTextChanged.connect(self._layer_chosen)
        self.viewer.layers.events.inserted.connect(self.refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self.refresh_layer_choices)
        self.refresh_layer_choices()
        warm_up(self, MODEL_MODULES, self.device_combo)

    # --- layers -----------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while a job runs or the contexts wait for the brain mask (the demo waits for both
        before its screenshot)."""
        return self.runner.busy or self.contexts.range_pending

    def input_layers(self) -> list:
        """Image layers the user can work on (not this plugin's result layers); a layer that
        is not a 3-D volume is listed so that choosing it explains why it cannot be used."""
        return input_images(self.viewer, ndim=None)

    def refresh_layer_choices(self, event: object = None) -> None:
        """Fill the image combo; keep the user's choice, else a T1-looking image (the active one
        first), else the current, active or topmost image (:class:`._modality.ModalityWatch`)."""
        layers = self.input_layers()
        names = [layer.name for layer in layers]
        active = self.viewer.layers.selection.active
        preferred = active.name if active is not None and active.name in names else (names[-1] if names else "")
        current = self.modality.pick(layers, self.layer_combo.currentText(), preferred)
        self.modality.request(layers)
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        self._layer_chosen(current)

    def selected_image_layer(self):
        """The chosen input image layer, or None."""
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _layer_chosen(self, name: str = "") -> None:
        self.contexts.set_layer(self.selected_image_layer())
        self.modality.show(self.selected_image_layer())

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "BRUNO checkpoint", str(DEFAULT_WEIGHTS.parent),
                                              "PyTorch checkpoints (*.pt *.ckpt)")
        if path:
            self.weights_edit.setText(path)

    def weights(self) -> Path | None:
        """The checkpoint to use (None: the shipped weights)."""
        text = self.weights_edit.text().strip()
        return Path(text).expanduser() if text else None

    # --- jobs -------------------------------------------------------------------------
    def run(self, kind: str = "mean"):
        """Start a ``mean``, ``samples`` or ``prior`` job; returns the worker (None if refused)."""
        if self.runner.busy:
            return self._refuse("a job is already running: wait for it to finish or press Cancel")
        layer = self.selected_image_layer()
        if layer is None:
            return self._refuse("no image layer: open a 3-D brain volume first (e.g. File > Open Sample)")
        volume = volume_of(layer)
        if volume.ndim != 3 or getattr(layer, "rgb", False):
            return self._refuse(f"{layer.name!r} has shape {volume.shape}: a 3-D greyscale volume is needed")
        contexts = [] if kind == "prior" else self.contexts.slices
        n_samples = int(self.n_samples.value())
        spacing = tuple(float(s) for s in layer.scale[-3:])
        keep = self.keep_contexts.isChecked()
        job = mental_map_job(
            volume, spacing, contexts, n_samples=n_samples, temperature=float(self.temperature.value()),
            seed=int(self.seed.value()), device=self.device_combo.currentText(), weights=self.weights(),
            keep_contexts=keep, mask=self.contexts.cached_brain_mask(),
        )
        label = f"{kind} ({len(contexts)} contexts, {n_samples} samples)" if contexts else f"{kind} (no contexts: prior)"
        return self.runner.start(label, job, lambda result: self.show_result(result, layer, kind))

    def _refuse(self, message: str) -> None:
        self.status.setText(message)
        report_error(f"{TITLE}: {message}")
        return None

    def cancel(self) -> None:
        """Stop the running job at its next batch."""
        self.runner.cancel()

    def run_demo(self) -> None:
        """Demo: the mean and uncertainty of the sample from 5 evenly spaced contexts (started
        once the model's range on the sample is known)."""
        def start() -> None:
            if not self.contexts.slices:
                self.contexts.evenly_spaced(DEMO_CONTEXTS)
            self.run("mean")

        self.contexts.when_range_ready(start)

    def prepare_demo(self) -> None:
        """Demo: preselect 5 evenly spaced context slices."""
        self.contexts.evenly_spaced(DEMO_CONTEXTS)

    # --- results ----------------------------------------------------------------------
    def _put(self, key: tuple[str, str], name: str, data: np.ndarray, **kwargs):
        """Show a result: update the layer of the same (source, kind) in place, else add one.

        Results are per input: a run on another image gets its own layers. Updating in place
        is much cheaper for the GUI thread than removing and adding a layer.
        """
        old = self.results.get(key)
        if old is None or old not in self.viewer.layers:  # e.g. made by this dock before it was reopened
            old = find_result(self.viewer, *key)
        if old is not None and old in self.viewer.layers and old.ndim == data.ndim:
            update_layer(old, data, name=name, **{attribute: kwargs[attribute] for attribute in
                                                  ("scale", "translate", "contrast_limits", "metadata")
                                                  if attribute in kwargs})
            return old
        if old is not None and old in self.viewer.layers:
            self.viewer.layers.remove(old)
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        self.results[key] = self.viewer.add_image(data, name=name, **kwargs)
        return self.results[key]

    def show_result(self, prepared: InputGridMaps, source, kind: str) -> list:
        """Display steps adding (or updating) the samples / mean / std layers placed over ``source``."""
        result = prepared.result
        self.last_result = result
        tag = "prior " if kind == "prior" else ""
        prefix = f"{source.name} BRUNO {tag}"
        limits = tuple(float(v) for v in source.contrast_limits)
        steps = []
        if kind == "samples" and prepared.samples is not None:  # refined, on the input grid
            placed = aligned_with(source, f"{tag}samples")
            placed.update(scale=(1.0, *source.scale[-3:]), translate=(0.0, *source.translate[-3:]),
                          units=("pixel", *(str(u) for u in source.units[-3:])),
                          axis_labels=("sample", *source.axis_labels[-3:]))
            for key in ("rotate", "shear", "affine"):  # the reader places volumes by scale/translate only
                placed.pop(key)
            steps.append(lambda: self._put((source.name, f"{tag}samples"), prefix + "samples", prepared.samples,
                                           colormap="gray", contrast_limits=limits, **placed).name)
        elif kind == "samples" and result.samples_grid is not None:
            scale, translate = result.grid_world_transform(source.scale[-3:], source.translate[-3:])
            steps.append(lambda: self._put(
                (source.name, f"{tag}samples"), prefix + "samples", result.samples_grid, colormap="gray",
                contrast_limits=limits, scale=(1.0, *scale), translate=(0.0, *translate),
                units=("pixel", *(str(u) for u in source.units[-3:])), axis_labels=("sample", *source.axis_labels[-3:]),
                metadata={RESULT_KEY: {"source": source.name, "kind": f"{tag}samples"},
                          "mentalmap_grid": result.mapping.to_dict()}).name)
        steps.append(lambda: self._put((source.name, f"{tag}mean"), prefix + "mean", prepared.mean, colormap="gray",
                                       contrast_limits=limits, **aligned_with(source, f"{tag}mean")).name)
        if prepared.std is not None:
            steps.append(lambda: self._put(
                (source.name, f"{tag}std"), prefix + "std", prepared.std, colormap="inferno", blending="additive", opacity=0.5,
                contrast_limits=(0.0, prepared.std_top), **aligned_with(source, f"{tag}std")).name)
        return steps
