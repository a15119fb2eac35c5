"""Mental maps (BRUNO) dock widget: first version showing the selected image layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

if TYPE_CHECKING:
    import napari


class MentalMapWidget(QWidget):
    """Dock widget for BRUNO mental maps; shows which image layer it will work on."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.layer_label = QLabel()
        self.status_label = QLabel("model loading…")
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>Mental maps (BRUNO)</b>"))
        layout.addWidget(self.layer_label)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        self.viewer.layers.selection.events.active.connect(self._update_layer_label)
        self.viewer.layers.events.inserted.connect(self._update_layer_label)
        self.viewer.layers.events.removed.connect(self._update_layer_label)
        self._update_layer_label()

    def selected_image_layer(self) -> napari.layers.Image | None:
        """The active layer if it is an image, else the topmost image layer, else None."""
        from napari.layers import Image

        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            return active
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        return images[-1] if images else None

    def _update_layer_label(self, event: object = None) -> None:
        layer = self.selected_image_layer()
        self.layer_label.setText(f"Image: {layer.name}" if layer is not None else "Image: (none)")
