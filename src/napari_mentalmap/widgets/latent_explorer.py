"""Latent explorer dock widget for the slice VAE.

Encode the current slice of the selected image layer, walk the top principal directions
of the latent space at that slice position (live decoding), interpolate between two
stored latents, draw slices with the naive / instance-specific / mixed-instance sampling
strategies, sample whole volumes with a latent volume model, and browse the training
latents in a 2-D PCA embedding plot (click a point to decode it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..inference import latent

if TYPE_CHECKING:
    import napari

N_DIRECTIONS = 4
SLIDER_RANGE = 30  # slider units per direction: +-3 standard deviations in steps of 0.1
DECODED_LAYER = "latent explorer: decoded"
SAMPLES_LAYER = "latent explorer: slice samples"
DEFAULT_GRID_MM = (2.4, 2.5, 2.5)  # typical pose / pixel spacing of the model grid on NiChart T1


class EmbeddingPlot(QWidget):
    """Matplotlib scatter of the training slice latents (2-D PCA), coloured by slice position."""

    def __init__(self, embedding: latent.LatentEmbedding, on_pick, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.embedding = embedding
        self.on_pick = on_pick
        self.figure = Figure(figsize=(3.6, 3.2), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.axes = self.figure.add_subplot(111)
        points = embedding.points
        scatter = self.axes.scatter(points[:, 0], points[:, 1], c=embedding.poses, cmap="viridis", s=6, alpha=0.7)
        self.figure.colorbar(scatter, ax=self.axes, label="slice position (inferior → superior)")
        self.axes.set_xlabel("PC 1")
        self.axes.set_ylabel("PC 2")
        self.axes.set_title("training slice latents (click to decode)", fontsize=9)
        (self.marker,) = self.axes.plot([], [], marker="*", color="red", markersize=16, markeredgecolor="k",
                                        linestyle="none", label="current")
        (self.ab_markers,) = self.axes.plot([], [], marker="o", color="orange", markersize=9, markeredgecolor="k",
                                            linestyle="none", label="A / B")
        self.axes.legend(loc="lower right", fontsize=7)
        self.canvas.mpl_connect("button_press_event", self._clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.setMinimumSize(300, 260)

    def mark(self, z: np.ndarray | None, stored: list[np.ndarray] | None = None) -> None:
        """Move the current-latent marker (and the A/B markers) to the projections of ``z``."""
        if z is not None:
            x, y = self.embedding.project(z)
            self.marker.set_data([x], [y])
        if stored is not None:
            xy = np.array([self.embedding.project(s) for s in stored]).reshape(-1, 2)
            self.ab_markers.set_data(xy[:, 0], xy[:, 1])
        self.canvas.draw_idle()

    def _clicked(self, event) -> None:
        if event.inaxes is not self.axes or event.xdata is None:
            return
        self.on_pick(self.embedding.nearest((event.xdata, event.ydata)))


class LatentExplorerWidget(QWidget):
    """Dock widget: encode, walk, interpolate, sample (slices and volumes), embedding plot."""

    def __init__(
        self,
        napari_viewer: napari.viewer.Viewer,
        weights: str | Path | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.bundle: latent.SliceVAEBundle | None = None
        self.base: np.ndarray | None = None  # the encoded (or picked) latent
        self.current: np.ndarray | None = None  # what is decoded right now
        self.stored: dict[str, np.ndarray] = {}
        self.pose = 0
        self.directions = np.zeros((N_DIRECTIONS, 1), np.float32)
        self.stds = np.zeros(N_DIRECTIONS, np.float32)
        self.last_latency_ms = float("nan")
        self.embedding_plot: EmbeddingPlot | None = None
        self._prepared_cache: dict[int, latent.PreparedVolume] = {}
        self._worker = None
        self._plot_timer = QTimer(self)
        self._plot_timer.setSingleShot(True)
        self._plot_timer.setInterval(120)
        self._plot_timer.timeout.connect(self._update_plot_marker)
        self._build_ui()
        try:
            self.bundle = latent.load_slice_vae(weights, device="cpu")
        except (FileNotFoundError, RuntimeError) as error:
            self._set_enabled(False)
            self.status.setText(str(error))
            return
        self.pose_spin.setMaximum(self.bundle.n_poses - 1)
        self.pose_spin.setValue(self.bundle.n_poses // 2)
        self._set_pose(self.bundle.n_poses // 2)
        self.embedding = latent.latent_embedding(self.bundle)
        self.embedding_plot = EmbeddingPlot(self.embedding, self.decode_training_point)
        self._dock_embedding()
        self.status.setText("select an image layer and press “Encode current slice”, or click the embedding")

    # --- UI ---------------------------------------------------------------------------
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Latent explorer (slice VAE)</b>"))
        self.status = QLabel()
        self.status.setWordWrap(True)

        encode_row = QHBoxLayout()
        self.encode_button = QPushButton("Encode current slice")
        self.encode_button.clicked.connect(self.encode_current_slice)
        self.pose_spin = QSpinBox()
        self.pose_spin.setToolTip("slice position on the model grid (principal directions are taken here)")
        self.pose_spin.valueChanged.connect(self._set_pose)
        encode_row.addWidget(self.encode_button)
        encode_row.addWidget(QLabel("position"))
        encode_row.addWidget(self.pose_spin)
        layout.addLayout(encode_row)

        directions = QGroupBox("Principal directions at this position (±3 std)")
        form = QFormLayout(directions)
        self.sliders: list[QSlider] = []
        for k in range(N_DIRECTIONS):
            slider = QSlider(Qt.Orientation.Horizontal)
            slider.setRange(-SLIDER_RANGE, SLIDER_RANGE)
            slider.setValue(0)
            slider.valueChanged.connect(self._sliders_changed)
            form.addRow(f"PC {k + 1}", slider)
            self.sliders.append(slider)
        reset = QPushButton("Reset sliders")
        reset.clicked.connect(self.reset_sliders)
        self.latency_label = QLabel("decode: – ms")
        form.addRow(reset, self.latency_label)
        layout.addWidget(directions)

        interpolation = QGroupBox("Interpolation A → B")
        form = QFormLayout(interpolation)
        ab_row = QHBoxLayout()
        for name in ("A", "B"):
            button = QPushButton(f"Set {name} = current")
            button.clicked.connect(lambda _=False, n=name: self.store(n))
            ab_row.addWidget(button)
        form.addRow(ab_row)
        self.t_slider = QSlider(Qt.Orientation.Horizontal)
        self.t_slider.setRange(0, 100)
        self.t_slider.valueChanged.connect(self._interpolate_changed)
        form.addRow("t", self.t_slider)
        layout.addWidget(interpolation)

        sampling = QGroupBox("Sampling")
        form = QFormLayout(sampling)
        self.strategy_combo = QComboBox()
        self.strategy_combo.addItems(latent.STRATEGIES)
        self.strategy_combo.setToolTip(
            "naive: prior N(0, I); instance-specific: around the current latent; "
            "mixed-instance: between training instances at this position"
        )
        self.n_spin = QSpinBox()
        self.n_spin.setRange(1, 64)
        self.n_spin.setValue(8)
        self.sample_slices_button = QPushButton("Sample slices")
        self.sample_slices_button.clicked.connect(self.sample_slices)
        row = QHBoxLayout()
        row.addWidget(self.strategy_combo)
        row.addWidget(self.n_spin)
        row.addWidget(self.sample_slices_button)
        form.addRow("slices", row)
        self.model_combo = QComboBox()
        self.model_combo.addItems(["ppca (coherent)", "per_slice (paper)", "naive"])
        self.sample_volume_button = QPushButton("Sample volume")
        self.sample_volume_button.clicked.connect(self.sample_volume)
        row = QHBoxLayout()
        row.addWidget(self.model_combo)
        row.addWidget(self.sample_volume_button)
        form.addRow("volume", row)
        layout.addWidget(sampling)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._buttons = [self.encode_button, self.sample_slices_button, self.sample_volume_button, reset]

    def _set_enabled(self, enabled: bool) -> None:
        for widget in [*self._buttons, *self.sliders, self.t_slider, self.pose_spin]:
            widget.setEnabled(enabled)

    def _dock_embedding(self) -> None:
        window = getattr(self.viewer, "window", None)
        if window is not None and hasattr(window, "add_dock_widget"):
            window.add_dock_widget(self.embedding_plot, name="Latent embedding (PCA)", area="right")

    # --- helpers ----------------------------------------------------------------------
    def _notify(self, message: str) -> None:
        from napari.utils.notifications import show_info

        self.status.setText(message)
        show_info(message)

    def selected_image_layer(self):
        """The active layer if it is an image, else None."""
        from napari.layers import Image

        active = self.viewer.layers.selection.active
        return active if isinstance(active, Image) else None

    def _set_pose(self, pose: int) -> None:
        if self.bundle is None:
            return
        self.pose = int(pose)
        self.directions, self.stds = latent.principal_directions(self.bundle, self.pose, N_DIRECTIONS)
        if self.base is not None:
            self._sliders_changed()

    def _grid_scale(self) -> tuple[float, float, float]:
        info = self.bundle.info if self.bundle is not None else {}
        grid_mm = (info.get("metrics") or {}).get("grid_mm")
        return tuple(grid_mm) if grid_mm else DEFAULT_GRID_MM

    def _show_decoded(self, image: np.ndarray) -> None:
        scale = self._grid_scale()[1:]
        if DECODED_LAYER in self.viewer.layers:
            self.viewer.layers[DECODED_LAYER].data = image
        else:
            self.viewer.add_image(image, name=DECODED_LAYER, colormap="gray", contrast_limits=(0, 1), scale=scale)

    def decode_latent(self, z: np.ndarray) -> np.ndarray:
        """Decode ``z`` into the decoded layer; records the latency in ms."""
        started = time.perf_counter()
        image = latent.decode(self.bundle, z)
        self._show_decoded(image)
        self.last_latency_ms = (time.perf_counter() - started) * 1000
        self.latency_label.setText(f"decode: {self.last_latency_ms:.1f} ms")
        self.current = np.asarray(z, np.float32)
        if self.embedding_plot is not None:
            self._plot_timer.start()  # redraw the marker once the slider settles
        return image

    def _update_plot_marker(self) -> None:
        if self.embedding_plot is not None and self.current is not None:
            self.embedding_plot.mark(self.current)

    def set_base(self, z: np.ndarray) -> None:
        """Make ``z`` the explorer's base latent, reset the sliders and decode it."""
        self.base = np.asarray(z, np.float32)
        self.reset_sliders()
        self.decode_latent(self.base)

    # --- actions ----------------------------------------------------------------------
    def encode_current_slice(self) -> np.ndarray | None:
        """Encode the current axial slice of the selected image layer (resampled if needed)."""
        if self.bundle is None:
            return None
        layer = self.selected_image_layer()
        if layer is None:
            self._notify("no image layer selected: select the image whose slice to encode")
            return None
        data = np.asarray(layer.data[0] if layer.multiscale else layer.data)
        if data.ndim == 4 and data.shape[-1] in (3, 4):
            self._notify(f"{layer.name} is an RGB image: the slice VAE needs a greyscale volume")
            return None
        data = data.reshape(data.shape[-3:]) if data.ndim > 3 else data
        try:
            key = id(layer.data)
            if key not in self._prepared_cache:
                spacing = tuple(float(s) for s in layer.scale[-data.ndim :])
                spacing = spacing if data.ndim == 3 else (1.0, *spacing)
                self._prepared_cache = {key: latent.prepare_volume(data, spacing, self.bundle.spec)}
            prepared = self._prepared_cache[key]
        except ValueError as error:
            self._notify(f"cannot encode {layer.name}: {error}")
            return None
        note = prepared.note
        if data.ndim == 2:
            pose = self.pose
            grid_slice = prepared.grid[0]
        else:
            index = float(layer.world_to_data(self.viewer.dims.point)[-3])
            if prepared.mapping is None:
                pose = int(np.clip(round(index), 0, self.bundle.n_poses - 1))
            else:
                raw = prepared.mapping.slice_to_pose(index)
                pose = int(np.clip(round(raw), 0, self.bundle.n_poses - 1))
                if abs(raw - pose) > 0.5:
                    note = (note + "; " if note else "") + (
                        f"slice {index:.0f} is outside the modelled range (middle 75 % of the brain): "
                        f"using the nearest position {pose}"
                    )
            grid_slice = prepared.grid[pose]
        self.pose_spin.blockSignals(True)
        self.pose_spin.setValue(pose)
        self.pose_spin.blockSignals(False)
        self._set_pose(pose)
        z = latent.encode(self.bundle, grid_slice)
        self.set_base(z)
        self.status.setText(f"encoded {layer.name} at position {pose}" + (f" — note: {note}" if note else ""))
        return z

    def decode_training_point(self, index: int) -> None:
        """Decode the training latent ``index`` of the embedding (from a click in the plot)."""
        pose = int(self.embedding.poses[index])
        self.pose_spin.blockSignals(True)
        self.pose_spin.setValue(pose)
        self.pose_spin.blockSignals(False)
        self._set_pose(pose)
        self.set_base(self.embedding.latents[index])
        subject = int(self.embedding.subjects[index])
        self.status.setText(f"training subject #{subject + 1}, position {pose} (from the embedding plot)")

    def slider_steps(self) -> np.ndarray:
        return np.array([s.value() / 10.0 for s in self.sliders], np.float32)

    def _sliders_changed(self, _value: int = 0) -> None:
        if self.bundle is None or self.base is None:
            return
        self.decode_latent(latent.walk(self.base, self.directions, self.stds, self.slider_steps()))

    def reset_sliders(self) -> None:
        for slider in self.sliders:
            slider.blockSignals(True)
            slider.setValue(0)
            slider.blockSignals(False)

    def store(self, name: str) -> None:
        """Remember the currently decoded latent as interpolation end ``name`` (A or B)."""
        if self.current is None:
            self._notify("nothing decoded yet: encode a slice or click the embedding first")
            return
        self.stored[name] = self.current.copy()
        if self.embedding_plot is not None:
            self.embedding_plot.mark(None, list(self.stored.values()))
        self.status.setText(f"{name} stored")

    def _interpolate_changed(self, value: int) -> None:
        if self.bundle is None:
            return
        if not {"A", "B"} <= self.stored.keys():
            self.status.setText("set A and B first")
            return
        self.decode_latent(latent.interpolate(self.stored["A"], self.stored["B"], value / 100.0))

    def sample_slices(self) -> np.ndarray | None:
        """Draw slices at the current position with the chosen strategy into a stack layer."""
        if self.bundle is None:
            return None
        strategy = self.strategy_combo.currentText()
        instances = self.current[None] if strategy == "instance-specific" and self.current is not None else None
        latents = latent.strategy_latents(self.bundle, strategy, self.pose, self.n_spin.value(), instances)
        images = latent.decode(self.bundle, latents)
        scale = (1.0, *self._grid_scale()[1:])
        if SAMPLES_LAYER in self.viewer.layers:
            self.viewer.layers.remove(SAMPLES_LAYER)
        self.viewer.add_image(images, name=SAMPLES_LAYER, colormap="gray", contrast_limits=(0, 1), scale=scale)
        self.status.setText(f"{len(images)} slices sampled ({strategy}) at position {self.pose}")
        return images

    def sample_volume(self) -> None:
        """Sample one volume with the chosen latent model in a worker -> new Image layer."""
        if self.bundle is None:
            return
        from napari.qt.threading import create_worker

        model = self.model_combo.currentText().split(" ")[0]
        seed = int(np.random.default_rng().integers(1 << 31))
        worker = create_worker(latent.sample_volume, self.bundle, 1, model, seed)
        worker.yielded.connect(lambda p: self.status.setText(f"{p[2]} ({p[0]}/{p[1]})"))
        worker.returned.connect(lambda volumes: self._add_volume(volumes[0], model))
        worker.errored.connect(lambda error: self._notify(f"sampling failed: {error}"))
        worker.finished.connect(lambda: self.sample_volume_button.setEnabled(True))
        self.sample_volume_button.setEnabled(False)
        self._worker = worker
        worker.start()

    def _add_volume(self, volume: np.ndarray, model: str) -> None:
        name = f"slice VAE sample ({model})"
        self.viewer.add_image(volume, name=name, colormap="gray", contrast_limits=(0, 1),
                              scale=self._grid_scale(), rendering="attenuated_mip")
        self.status.setText(f"added {name}: {volume.shape}, scale {self._grid_scale()} mm")
