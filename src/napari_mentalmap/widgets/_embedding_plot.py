"""The latent explorer's 2-D PCA scatter of the training slice latents (matplotlib in Qt)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import QVBoxLayout, QWidget

if TYPE_CHECKING:
    from ..inference import latent


def load_explorer_model(weights: str | Path | None) -> tuple:
    """(bundle, training-latent embedding): what the dock loads in a worker thread when it opens
    (matplotlib's Qt canvas is imported here too, so the embedding plot is quick to build)."""
    import matplotlib.backends.backend_qtagg  # noqa: F401
    import matplotlib.figure  # noqa: F401

    from ..inference import latent

    bundle = latent.load_slice_vae(weights, device="cpu")
    return bundle, latent.latent_embedding(bundle)


class EmbeddingPlot(QWidget):
    """Matplotlib scatter of the training slice latents (2-D PCA), coloured by slice position."""

    def __init__(self, embedding: latent.LatentEmbedding, on_pick, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.embedding = embedding
        self.on_pick = on_pick
        self.figure = Figure(figsize=(3.6, 3.2), layout="constrained")  # keeps the colour bar's label in
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.axes = self.figure.add_subplot(111)
        points = embedding.points
        scatter = self.axes.scatter(points[:, 0], points[:, 1], c=embedding.poses, cmap="viridis", s=6, alpha=0.7)
        self.figure.colorbar(scatter, ax=self.axes).set_label("slice position (I → S)", fontsize=8)
        self.axes.set_xlabel("PC 1")
        self.axes.set_ylabel("PC 2")
        self.axes.set_title("training slice latents (click to decode)", fontsize=9)
        # the markers are animated (blitted over a saved background): moving them on every
        # slider step costs a few ms instead of a full redraw with its layout and text
        (self.marker,) = self.axes.plot([], [], marker="*", color="red", markersize=16, markeredgecolor="k",
                                        linestyle="none", label="current", animated=True)
        (self.ab_markers,) = self.axes.plot([], [], marker="o", color="orange", markersize=9, markeredgecolor="k",
                                            linestyle="none", label="A / B", animated=True)
        self.axes.legend(loc="lower right", fontsize=7)
        self.background = None
        self.full_draws = 0
        self.deleted = False  # the plot's dock was closed and Qt deleted the canvas
        self.canvas.mpl_connect("draw_event", self._drawn)
        self.canvas.mpl_connect("button_press_event", self._clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.setMinimumSize(300, 120)  # small enough for the three docks beside it on a 768-px screen

    def mark(self, z: np.ndarray | None, stored: list[np.ndarray] | None = None) -> None:
        """Move the current-latent marker (and the A/B markers) to the projections of ``z``."""
        if z is not None:
            x, y = self.embedding.project(z)
            self.marker.set_data([x], [y])
        if stored is not None:
            xy = np.array([self.embedding.project(s) for s in stored]).reshape(-1, 2)
            self.ab_markers.set_data(xy[:, 0], xy[:, 1])
        if self.deleted:
            return
        if self.background is None:  # nothing drawn yet: the first full draw shows them
            self.canvas.draw_idle()
            return
        self.canvas.restore_region(self.background)
        self._blit_markers()

    def _drawn(self, event: object) -> None:
        """After a full draw (first show, resize): keep the background, draw the markers on it."""
        self.full_draws += 1
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._blit_markers()

    def _blit_markers(self) -> None:
        self.axes.draw_artist(self.ab_markers)
        self.axes.draw_artist(self.marker)
        try:
            self.canvas.blit(self.figure.bbox)
        except RuntimeError:  # "wrapped C/C++ object ... has been deleted"
            self.deleted = True

    def _clicked(self, event) -> None:
        if event.inaxes is not self.axes or event.xdata is None:
            return
        self.on_pick(self.embedding.nearest((event.xdata, event.ydata)))
