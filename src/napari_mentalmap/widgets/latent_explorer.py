"""Latent explorer dock widget for the slice VAE.

Encode the current slice of the selected image layer, walk the top principal directions
of the latent space at that slice position (live decoding), interpolate between two
stored latents, draw slices with the naive / instance-specific / mixed-instance sampling
strategies, sample whole volumes with a latent volume model, and browse the training
latents in a 2-D PCA embedding plot (click a point to decode it).

Nothing heavy runs in the GUI thread: the model loads in a worker thread when the dock
opens (the controls are enabled once it is there); encoding and sampling are jobs of the shared
:class:`._worker.JobRunner` (progress, Cancel); slider decoding goes through
:class:`._worker.LatestOnly`. Results are placed over the input: the decoded slice sits at
its model-grid position over the encoded image, slice samples are a 4-D stack (sample x
one slice) at that position, so they never stretch the input's sliders.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from .._reader import AXIS_LABELS
from ..checkpoints import WeightsError
from ._embedding_plot import EmbeddingPlot, load_explorer_model
from ._explorer_ui import N_DIRECTIONS, build_explorer_ui
from ._layers import RESULT_KEY, input_images, update_layer
from ._layout import fit_docks
from ._worker import JobRunner, LatestOnly, report_error, start_thread

if TYPE_CHECKING:
    import napari

    from ..inference import latent

DECODED_LAYER = "latent explorer: decoded"
SAMPLES_LAYER = "latent explorer: slice samples"
DEFAULT_GRID_MM = (2.4, 2.5, 2.5)  # typical pose / pixel spacing of the model grid on NiChart T1


def _latent():
    """:mod:`napari_mentalmap.inference.latent`, imported on first use (it loads torch)."""
    from ..inference import latent

    return latent


class LatentExplorerWidget(QWidget):
    """Dock widget: encode, walk, interpolate, sample (slices and volumes), embedding plot."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, weights: str | Path | None = None,
                 parent: QWidget | None = None) -> None:
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
        self._prepared_cache: dict = {}
        self.placement: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # grid scale/translate
        self.source_name: str | None = None
        self._plot_timer = QTimer(self)
        self._plot_timer.setSingleShot(True)
        self._plot_timer.setInterval(120)
        self._plot_timer.timeout.connect(self._update_plot_marker)
        build_explorer_ui(self)
        self.runner = JobRunner(self.progress, self.status, self.cancel_button, self._buttons, "Latent explorer", owner=self)
        self.decoder = LatestOnly(self._decode_timed, self._decoded, owner=self)
        self.progress.destroyed.connect(self.decoder.shutdown)
        self.loading = True
        self._set_enabled(False)
        self.status.setText("loading the slice VAE …")
        start_thread(load_explorer_model, weights, on_returned=self._model_loaded, on_errored=self._model_failed,
                     owner=self)

    def _model_loaded(self, loaded: tuple) -> None:
        self.bundle, self.embedding = loaded
        self.loading = False
        self._set_enabled(True)
        self.pose_spin.setMaximum(self.bundle.n_poses - 1)
        self.pose_spin.setValue(self.bundle.n_poses // 2)
        self._set_pose(self.bundle.n_poses // 2)
        self._resume_decoded()
        self.embedding_plot = EmbeddingPlot(self.embedding, self.decode_training_point)
        self._dock_embedding()
        self.status.setText("select an image layer and press “Encode current slice”, or click the embedding")

    def _resume_decoded(self) -> None:
        """Walk on from the latent an earlier explorer (closed since) left in the decoded layer."""
        layer = self.viewer.layers[DECODED_LAYER] if DECODED_LAYER in self.viewer.layers else None
        tag = (layer.metadata.get(RESULT_KEY) or {}) if layer is not None else {}
        latent, pose, grid = tag.get("latent"), tag.get("pose"), tag.get("grid")
        if latent is None or pose is None or not 0 <= int(pose) < self.bundle.n_poses:
            return
        self.pose_spin.setValue(int(pose))  # -> _set_pose: the directions at that position
        if len(latent) != self.directions.shape[1]:
            return
        self.placement = None if grid is None else (tuple(grid[0]), tuple(grid[1]))
        self.source_name = tag.get("source")
        self.base = self.current = np.asarray(latent, np.float32)

    def _model_failed(self, error: BaseException) -> None:
        self.loading = False
        self.status.setText(str(error))
        if not isinstance(error, (FileNotFoundError, RuntimeError, WeightsError)):
            report_error(f"Latent explorer: {type(error).__name__}: {error}")

    def _set_enabled(self, enabled: bool) -> None:
        for widget in [*self._buttons, *self.sliders, self.t_slider, self.pose_spin]:
            widget.setEnabled(enabled)

    def _dock_embedding(self) -> None:
        window = getattr(self.viewer, "window", None)
        if window is not None and hasattr(window, "add_dock_widget"):
            window.add_dock_widget(self.embedding_plot, name="Latent embedding (PCA)", area="right")
            QTimer.singleShot(0, lambda: fit_docks(self))

    def _notify(self, message: str) -> None:
        from napari.utils.notifications import show_info

        self.status.setText(message)
        show_info(message)

    def selected_image_layer(self):
        """The active layer if it is an input image (not a result of a dock), else None."""
        active = self.viewer.layers.selection.active
        return active if active in input_images(self.viewer, ndim=None) else None

    def _set_pose(self, pose: int) -> None:
        if self.bundle is None:
            return
        self.pose = int(pose)
        self.directions, self.stds = _latent().principal_directions(self.bundle, self.pose, N_DIRECTIONS)
        if self.base is not None:
            self._sliders_changed()

    def _grid_scale(self) -> tuple[float, float, float]:
        info = self.bundle.info if self.bundle is not None else {}
        grid_mm = (info.get("metrics") or {}).get("grid_mm")
        return tuple(grid_mm) if grid_mm else DEFAULT_GRID_MM

    @property
    def busy(self) -> bool:
        """True while the model loads, a job runs, its result is shown, or a slider decode is pending."""
        return self.loading or self.runner.busy or self.decoder.busy

    def _slice_placement(self, n_leading: int = 0) -> dict:
        """scale/translate putting a (1, S, S) slice at the current position over the encoded
        image (the model grid's own spacing at the origin when nothing was encoded)."""
        if self.placement is None:
            scale, translate = self._grid_scale(), (0.0, 0.0, 0.0)
        else:
            scale, translate = self.placement
        z = translate[0] + scale[0] * self.pose
        lead = (1.0,) * n_leading
        return {"scale": (*lead, scale[0], scale[1], scale[2]),
                "translate": (*(0.0,) * n_leading, z, translate[1], translate[2]),
                "units": ("pixel",) * n_leading + ("mm",) * 3, "axis_labels": ("sample",) * n_leading + AXIS_LABELS,
                "metadata": {RESULT_KEY: {"source": self.source_name, "kind": "latent explorer"}}}

    def _show_decoded(self, image: np.ndarray) -> None:
        placement = self._slice_placement()
        placement["metadata"][RESULT_KEY].update(  # what a reopened explorer walks on from
            latent=None if self.base is None else [float(v) for v in self.base], pose=self.pose,
            grid=None if self.placement is None else [[float(v) for v in part] for part in self.placement])
        if DECODED_LAYER in self.viewer.layers:
            update_layer(self.viewer.layers[DECODED_LAYER], image[None], scale=placement["scale"],
                         translate=placement["translate"], metadata=placement["metadata"])
        else:
            self.viewer.add_image(image[None], name=DECODED_LAYER, colormap="gray", contrast_limits=(0, 1),
                                  **placement)

    def _decode_timed(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Worker side of a slider decode."""
        started = time.perf_counter()
        image = _latent().decode(self.bundle, z)
        return z, image, (time.perf_counter() - started) * 1000

    def _decoded(self, value: tuple[np.ndarray, np.ndarray, float]) -> None:
        z, image, milliseconds = value
        self._show_decoded(image)
        self.last_latency_ms = milliseconds
        self.latency_label.setText(f"decode: {milliseconds:.1f} ms")
        self.current = np.asarray(z, np.float32)
        if self.embedding_plot is not None:
            self._plot_timer.start()  # redraw the marker once the slider settles

    def decode_latent(self, z: np.ndarray) -> None:
        """Decode ``z`` into the decoded layer in a worker (the newest request wins)."""
        self.decoder.request(np.asarray(z, np.float32))

    def _update_plot_marker(self) -> None:
        if self.embedding_plot is not None and self.current is not None:
            self.embedding_plot.mark(self.current)

    def set_base(self, z: np.ndarray) -> None:
        """Make ``z`` the explorer's base latent, reset the sliders and decode it."""
        self.base = np.asarray(z, np.float32)
        self.reset_sliders()
        self.decode_latent(self.base)

    def encode_current_slice(self):
        """Encode the current axial slice of the selected image layer in a worker (None if refused)."""
        if self.bundle is None:
            if self.loading:
                self._notify("the slice VAE is still loading: try again in a moment")
            return None
        if self.runner.busy:
            self._notify("a job is already running: wait for it or press Cancel")
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
        if data.ndim not in (2, 3):
            self._notify(f"cannot encode {layer.name}: expected a 2-D slice or 3-D volume, got {data.shape}")
            return None
        spacing = tuple(float(s) for s in layer.scale[-data.ndim:])
        origin = tuple(float(t) for t in layer.translate[-data.ndim:])
        index = float(layer.world_to_data(self.viewer.dims.point)[-3]) if data.ndim == 3 else None
        job = _latent().encode_slice_job(self.bundle, data, spacing, origin, index, self.pose, self._prepared_cache)

        def show(encoded: latent.EncodedSlice) -> list:
            def apply() -> str:
                self.placement = (None if encoded.grid_scale is None
                                  else (encoded.grid_scale, encoded.grid_translate))
                self.source_name = layer.name
                self.pose_spin.blockSignals(True)
                self.pose_spin.setValue(encoded.pose)
                self.pose_spin.blockSignals(False)
                self._set_pose(encoded.pose)
                self.set_base(encoded.z)
                return f"encoded {layer.name} at position {encoded.pose}" + (
                    f" — note: {encoded.note}" if encoded.note else "")
            return [apply]

        return self.runner.start(f"encode {layer.name}", job, show)

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
        self.decode_latent(_latent().walk(self.base, self.directions, self.stds, self.slider_steps()))

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
        self.decode_latent(_latent().interpolate(self.stored["A"], self.stored["B"], value / 100.0))

    def sample_slices(self):
        """Draw slices at the current position with the chosen strategy in a worker, shown as a
        4-D stack (sample x slice) at that position (None if refused)."""
        if self.bundle is None or self.runner.busy:
            return None
        strategy = self.strategy_combo.currentText()
        instances = self.current[None] if strategy == "instance-specific" and self.current is not None else None
        n, pose = self.n_spin.value(), self.pose

        def job():
            yield 0, 1, f"sampling {n} slices"
            latents = _latent().strategy_latents(self.bundle, strategy, pose, n, instances)
            return _latent().decode(self.bundle, latents)

        def show(images: np.ndarray) -> list:
            def add() -> str:
                self.last_samples = images
                stack = images[:, None]
                placement = self._slice_placement(n_leading=1)
                if SAMPLES_LAYER in self.viewer.layers:
                    update_layer(self.viewer.layers[SAMPLES_LAYER], stack, scale=placement["scale"],
                                 translate=placement["translate"], metadata=placement["metadata"])
                else:
                    self.viewer.add_image(stack, name=SAMPLES_LAYER, colormap="gray", contrast_limits=(0, 1),
                                          **placement)
                return f"{len(images)} slices sampled ({strategy}) at position {pose}"
            return [add]

        return self.runner.start(f"sample slices ({strategy})", job(), show)

    def sample_volume(self):
        """Sample one volume with the chosen latent model in a worker -> new Image layer."""
        if self.bundle is None or self.runner.busy:
            return None
        model = self.model_combo.currentText().split(" ")[0]
        seed = int(np.random.default_rng().integers(1 << 31))
        return self.runner.start(f"sample volume ({model})", _latent().sample_volume(self.bundle, 1, model, seed),
                                 lambda volumes: [lambda: self._add_volume(volumes[0], model)])

    def _add_volume(self, volume: np.ndarray, model: str) -> str:
        """Show a sampled volume: a new sample replaces the last one of the same latent model
        in place (rename or duplicate the layer to keep one)."""
        name = f"slice VAE sample ({model})"
        scale, translate = self.placement if self.placement is not None else (self._grid_scale(), (0.0, 0.0, 0.0))
        metadata = {RESULT_KEY: {"source": self.source_name, "kind": "latent sample"}}
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        if existing is not None and existing.ndim == volume.ndim:
            update_layer(existing, volume, scale=scale, translate=translate, metadata=metadata)
            return f"updated {name}: {volume.shape}, scale {tuple(round(s, 2) for s in scale)} mm"
        self.viewer.add_image(volume, name=name, colormap="gray", contrast_limits=(0, 1), scale=scale,
                              translate=translate, rendering="attenuated_mip", units=("mm",) * 3,
                              axis_labels=AXIS_LABELS, metadata=metadata)
        return f"added {name}: {volume.shape}, scale {tuple(round(s, 2) for s in scale)} mm"
