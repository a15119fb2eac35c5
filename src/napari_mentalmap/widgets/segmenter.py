"""Lesion segmenter dock: train a segmenter on the user's own labels, then predict with it.

*Train on my labels* lists the image/Labels pairs found in the viewer (:mod:`._segmenter_pairs`;
"Add pair from files…" opens an image and its labels with the package's reader); Train checks
every checked pair (grids, something labelled, FLAIR), trains in a worker (progress, ETA,
Cancel) and saves the model with its card under :func:`~napari_mentalmap.inference.segment.user_segmenter_folder`.
*Load model…* loads a saved one with the safe loader. *Predict* segments the chosen image:
"<name> lesion probability" and the editable "<name> lesion labels", placed over the image.
The labels are :class:`~napari_mentalmap.inference.labels.EditedLabels`, as in the Anomaly
maps dock: the cutoff only changes the model's proposal, painted or erased voxels stay (also
through a re-prediction), until "Reset to proposal".
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..inference.segment import SegmenterInputError, UserSegmenter, user_segmenter_folder
from ._anomaly_results import SourceResult
from ._forms import column, form, row
from ._layers import input_images, is_result
from ._layout import scroll_content, section
from ._modality import WARNING_STYLE, ModalityWatch, flair_by_name
from ._segmenter_jobs import MODULES, prediction_job, training_job
from ._segmenter_pairs import Pair, find_pairs, pair_data, read_pair
from ._segmenter_results import Predictions
from ._threads import start_thread
from ._worker import JobRunner, report_error

if TYPE_CHECKING:
    import napari

TITLE = "Lesion segmenter"
AUGMENTATION_TEXT = {"none": "none", "classical": "classical (MONAI)", "learned": "learned deformations",
                     "c4": "rotation-equivariant (C4)"}


def _warm(modules: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Worker side of opening the dock: import torch and the models, list the devices, and
    say which augmentations cannot run here (MONAI may be absent: a 4 s import when present)."""
    import importlib

    from ..device import available_devices
    from ..inference.segmenter_augment import AUGMENTATIONS, missing_dependency

    for name in modules:
        importlib.import_module(name)
    problems = {aug: problem for aug in AUGMENTATIONS if (problem := missing_dependency(aug)) is not None}
    return available_devices(), problems


class SegmenterWidget(QWidget):
    """Train a lesion segmenter on labelled pairs, load one, predict editable labels."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        from ..inference.segmenter_augment import AUGMENTATIONS
        from ..inference.segmenter_training import DEFAULT_AUGMENTATION, SegmenterTrainConfig

        super().__init__(parent)
        self.viewer = napari_viewer
        self.models_folder: Path = user_segmenter_folder()
        self.segmenter: UserSegmenter | None = None
        self.pairs: list[Pair] = []
        self.explicit: dict[int, Any] = {}  # labels layer id -> image layer (pairs added from files)
        self._checked: dict[tuple[str, str], bool] = {}
        self.unavailable: dict[str, str] = {}  # augmentation -> why it cannot run here
        self.loading = False

        self.pair_list = QListWidget()
        rows = self.pair_list.fontMetrics().height() + 6
        self.pair_list.setMinimumHeight(2 * rows + 4)
        self.pair_list.setMaximumHeight(5 * rows + 4)
        self.pair_list.setToolTip("Labels layers and the image each was painted over; train on the checked ones")
        self.pair_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.pair_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.add_pair_button = QPushButton("Add pair from files…")
        self.augmentation_combo = QComboBox()
        for aug in AUGMENTATIONS:
            self.augmentation_combo.addItem(AUGMENTATION_TEXT.get(aug, aug), aug)
        self.augmentation_combo.setCurrentIndex(AUGMENTATIONS.index(DEFAULT_AUGMENTATION))
        self.augmentation_note = QLabel("")
        self.augmentation_note.setWordWrap(True)
        self.augmentation_note.setStyleSheet(WARNING_STYLE)
        self.augmentation_note.setVisible(False)
        self.steps = QSpinBox()
        self.steps.setRange(1, 100_000)
        self.steps.setValue(SegmenterTrainConfig().steps)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu"])  # + GPUs once torch is loaded
        self.train_button = QPushButton("Train")
        self.load_button = QPushButton("Load model…")
        self.model_label = QLabel("no model yet: train one on your labels, or load one")
        self.model_label.setWordWrap(True)
        self.layer_combo = QComboBox()
        self.modality = ModalityWatch(self, "FLAIR", "segmenter", self.refresh_layer_choices)
        self.predict_button = QPushButton("Predict")
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.predictions = Predictions(self, self.viewer, self.layer_combo.currentText, self.layer_combo.setCurrentText)
        self.cutoff_slider, self.min_size = self.predictions.cutoff_slider, self.predictions.min_size

        column(scroll_content(self),
               QLabel("<b>Train on my labels</b>"), self.pair_list, self.add_pair_button,
               form(("augmentation", self.augmentation_combo)), self.augmentation_note,
               section("Options", form(("steps", self.steps), ("device", self.device_combo))),
               row(self.train_button, self.load_button), self.model_label,
               QLabel("<b>Predict</b>"), form(("FLAIR", self.layer_combo)), self.modality.label,
               row(self.predict_button, self.cancel_button), self.progress, self.status,
               form(("cutoff", self.cutoff_slider), ("min size (voxels)", self.min_size),
                    ("", self.predictions.reset_button)), self.predictions.info)

        self.runner = JobRunner(self.progress, self.status, self.cancel_button,
                                [self.train_button, self.predict_button, self.load_button, self.add_pair_button,
                                 self.layer_combo, self.augmentation_combo, self.steps], TITLE, owner=self)
        self.progress.destroyed.connect(self.predictions.labeller.shutdown)
        self.pair_list.itemChanged.connect(self._pair_checked)
        self.add_pair_button.clicked.connect(self._browse_pair)
        self.train_button.clicked.connect(self.train)
        self.load_button.clicked.connect(self._browse_model)
        self.predict_button.clicked.connect(self.predict)
        self.layer_combo.currentTextChanged.connect(self.modality.chosen)
        self.layer_combo.currentTextChanged.connect(self._source_changed)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.refresh_layer_choices)
        self.refresh_layer_choices()
        start_thread(_warm, MODULES, on_returned=self._warmed,
                     on_errored=lambda error: report_error(f"{TITLE}: loading the models failed: {error}"), owner=self)

    # --- state ------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while a job runs or shows its result, a model loads or the cutoff is being applied."""
        return self.runner.busy or self.predictions.labeller.busy or self.loading

    @property
    def current(self) -> SourceResult | None:
        """The prediction of the image chosen for Predict (None before one)."""
        return self.predictions.current

    def _refuse(self, message: str) -> None:
        self.status.setText(message)
        report_error(f"{TITLE}: {message}")

    def _warmed(self, value: tuple[list[str], dict[str, str]]) -> None:
        devices, self.unavailable = value
        present = {self.device_combo.itemText(i) for i in range(self.device_combo.count())}
        self.device_combo.addItems([d for d in devices if d not in present])
        model = self.augmentation_combo.model()
        for index in range(self.augmentation_combo.count()):
            aug = self.augmentation_combo.itemData(index)
            model.item(index).setEnabled(aug not in self.unavailable)
            model.item(index).setToolTip(self.unavailable.get(aug, ""))
        if self.augmentation_combo.currentData() in self.unavailable:
            self.augmentation_combo.setCurrentIndex(self.augmentation_combo.findData("none"))
        self.augmentation_note.setText("; ".join(f"{AUGMENTATION_TEXT.get(a, a)} is off: {why}"
                                                 for a, why in self.unavailable.items()))
        self.augmentation_note.setVisible(bool(self.unavailable))

    # --- pairs and images -------------------------------------------------------------
    def refresh_layer_choices(self, event: object = None) -> None:
        """Refill the pair list and the Predict image combo (a FLAIR-looking one is proposed)."""
        self.refresh_pairs()
        layers = input_images(self.viewer, ndim=3)
        names = [layer.name for layer in layers]
        inserted = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        current = self.layer_combo.currentText()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        self.layer_combo.setCurrentText(self.modality.pick(layers, current, flair_by_name(names, current, inserted)))
        self.layer_combo.blockSignals(False)
        self.modality.request(layers)
        self.modality.show(self._layer(self.layer_combo.currentText()))
        self.predictions.adopt(layers)

    def refresh_pairs(self) -> None:
        """List the image/Labels pairs of the viewer (check marks kept by layer names)."""
        live = {id(layer) for layer in self.viewer.layers}
        self.explicit = {key: image for key, image in self.explicit.items() if key in live}
        self.pairs = find_pairs(self.viewer, self.explicit)
        self.pair_list.blockSignals(True)
        self.pair_list.clear()
        for pair in self.pairs:
            item = QListWidgetItem(pair.text())
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            checked = self._checked.setdefault(pair.key, not is_result(pair.labels))
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
            item.setToolTip(f"{pair.text()}: paired by {pair.how}" + (" (made by a dock: check it once you have corrected it)"
                                                      if is_result(pair.labels) else ""))
            self.pair_list.addItem(item)
        self.pair_list.blockSignals(False)

    def _pair_checked(self, item: QListWidgetItem) -> None:
        pair = self.pairs[self.pair_list.row(item)]
        self._checked[pair.key] = item.checkState() == Qt.CheckState.Checked

    def set_checked(self, labels_name: str, checked: bool) -> None:
        """Check or uncheck the pair of the Labels layer ``labels_name``."""
        for index, pair in enumerate(self.pairs):
            if pair.labels.name == labels_name:
                state = Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked
                self.pair_list.item(index).setCheckState(state)

    def checked_pairs(self) -> list[Pair]:
        """The pairs Train would use."""
        self.refresh_pairs()
        return [pair for pair in self.pairs if self._checked[pair.key]]

    def _browse_pair(self) -> None:
        image, _ = QFileDialog.getOpenFileName(self, "Image (FLAIR)", "", "Volumes (*.nii *.nii.gz *.mgz)")
        if not image:
            return
        labels, _ = QFileDialog.getOpenFileName(self, "Its lesion labels", str(Path(image).parent),
                                                "Volumes (*.nii *.nii.gz *.mgz)")
        if labels:
            self.add_pair_from_files(image, labels)

    def add_pair_from_files(self, image_path: str | Path, labels_path: str | Path) -> Pair | None:
        """Open an image and its labels file as two layers paired with each other (None when refused)."""
        from napari.layers import Layer
        from napari.utils.notifications import show_warning

        try:
            image_data, labels_data, notes = read_pair(image_path, labels_path)
        except ValueError as error:  # VolumeReadError, SegmenterInputError
            self._refuse(f"pair not added: {error}")
            return None
        for note in notes:
            show_warning(note)
        image = self.viewer.add_layer(Layer.create(*image_data))
        labels = Layer.create(*labels_data)
        self.explicit[id(labels)] = image
        self.viewer.add_layer(labels)
        self.status.setText(f"pair added: {labels.name} → {image.name}")
        return next((pair for pair in self.pairs if pair.labels is labels), None)

    def _layer(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _source_changed(self, name: str) -> None:
        self.modality.show(self._layer(name))
        self.predictions.controls_for(self.current)

    # --- model ------------------------------------------------------------------------
    def train(self):
        """Train on the checked pairs in a worker (returns it; None when refused)."""
        from ..inference.segmenter_training import SegmenterTrainConfig

        if self.busy:
            return self._refuse("a job is running: wait for it or press Cancel")
        pairs = self.checked_pairs()
        if not pairs:
            return self._refuse("no pair to train on: paint lesions in a Labels layer over a FLAIR "
                                "(Layers > New labels), or Add pair from files…")
        try:
            data = [pair_data(pair) for pair in pairs]
        except SegmenterInputError as error:
            return self._refuse(f"nothing trained: {error}")
        augmentation = self.augmentation_combo.currentData()
        if augmentation in self.unavailable:
            return self._refuse(f"nothing trained: {self.unavailable[augmentation]}")
        config = SegmenterTrainConfig(steps=int(self.steps.value()), augmentation=augmentation)
        job = training_job(data, config, self.models_folder)
        return self.runner.start(f"training on {len(data)} pair(s)", job,
                                 lambda segmenter: [lambda: self.use_model(segmenter)])

    def use_model(self, segmenter: UserSegmenter) -> str:
        """Make ``segmenter`` the dock's model and show its card line."""
        self.segmenter = segmenter
        where = f"{segmenter.path.name}: " if segmenter.path is not None else ""
        self.model_label.setText(where + segmenter.describe())
        pairs = segmenter.card.get("pairs") or [{"labels": name} for name in segmenter.card.get("scans", [])]
        self.model_label.setToolTip("\n".join([str(segmenter.path or "")] + [
            f"{p.get('labels')} on {p.get('image', '?')}" for p in pairs]))
        return f"model {where}{segmenter.describe()}"

    def _browse_model(self) -> None:
        self.models_folder.mkdir(parents=True, exist_ok=True)
        path, _ = QFileDialog.getOpenFileName(self, "Lesion segmenter", str(self.models_folder),
                                              "Segmenters (*.pt)")
        if path:
            self.load_model(path)

    def load_model(self, path: str | Path) -> None:
        """Load a saved segmenter in a worker (a refused file gives a one-line message)."""
        from ..inference.segment import load_segmenter

        if self.busy:
            return self._refuse("a job is running: wait for it or press Cancel")
        self.loading = True
        self.status.setText(f"loading {Path(path).name} …")

        def loaded(segmenter: UserSegmenter) -> None:
            self.loading = False
            self.status.setText(f"loaded {Path(path).name}")
            self.use_model(segmenter)

        def failed(error: BaseException) -> None:
            self.loading = False
            self._refuse(f"model not loaded: {error}")

        start_thread(load_segmenter, str(path), "cpu", on_returned=loaded, on_errored=failed, owner=self)

    # --- predict ----------------------------------------------------------------------
    def predict(self):
        """Segment the chosen image in a worker (returns it; None when refused)."""
        from napari.utils.notifications import show_warning

        if self.busy:
            return self._refuse("a job is running: wait for it or press Cancel")
        if self.segmenter is None:
            return self._refuse("no model: train one on your labels, or Load model…")
        layer = self._layer(self.layer_combo.currentText())
        if layer is None:
            return self._refuse("open a FLAIR image first")
        data = np.asarray(layer.data)
        if data.ndim != 3 or getattr(layer, "rgb", False):
            return self._refuse(f"{layer.name!r} has shape {data.shape}: a 3-D greyscale volume is needed")
        note = self.modality.warning(layer)
        if note:
            show_warning(note)
        spacing = tuple(float(s) for s in layer.scale[-3:])
        job = prediction_job(data, spacing, self.segmenter, self.device_combo.currentText(),  # type: ignore[arg-type]
                             float(self.cutoff_slider.value()), int(self.min_size.value()))
        method = self.segmenter.path.name if self.segmenter.path is not None else "segmenter"
        return self.runner.start(f"segmenting {layer.name}", job,
                                 lambda prepared: self.predictions.show_result(prepared, layer, method))
