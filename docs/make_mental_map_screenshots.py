"""Screenshots of the mental map widget for the README (run under xvfb-run).

    xvfb-run -a .venv/bin/python docs/make_mental_map_screenshots.py [--weights PATH]

Uses the shipped BRUNO weights unless ``--weights`` is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import napari
from qtpy.QtCore import QEventLoop, QTimer

from napari_mentalmap.cli import setup_demo_viewer
from napari_mentalmap.widgets.mental_map import MentalMapWidget

DOCS = Path(__file__).parent


def settle(viewer, widget: MentalMapWidget | None = None) -> None:
    """Process events (and wait for the widget's job)."""
    loop = QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: None if widget is not None and widget.busy else loop.quit())
    timer.start(100)
    loop.exec()
    timer.stop()


def sagittal(viewer) -> None:
    """Show a sagittal plane (axial axis vertical, superior up) through the middle."""
    ndim = viewer.dims.ndim
    order = list(range(ndim))
    order = [*order[: ndim - 3], order[-1], order[-3], order[-2]]
    viewer.dims.order = tuple(order)
    viewer.dims.set_current_step(ndim - 1, viewer.dims.nsteps[-1] // 2 + 3)
    viewer.scene.camera.orientation2d = ("up", "right")
    viewer.reset_view()


def shot(viewer, name: str) -> None:
    settle(viewer)
    viewer.reset_view()
    settle(viewer)
    path = DOCS / name
    viewer.screenshot(str(path), canvas_only=False)
    print(f"saved {path}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", default="")
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    viewer = napari.Viewer(title="napari-mentalmap: mental maps")
    viewer.window.resize(1500, 950)
    setup_demo_viewer(viewer)
    widget = next(w for w in viewer.window.dock_widgets.values() if isinstance(w, MentalMapWidget))
    widget.weights_edit.setText(args.weights)
    widget.n_samples.setValue(args.samples)
    name = widget.layer_combo.currentText()

    sagittal(viewer)
    shot(viewer, "screenshot_contexts.png")

    widget.run("mean")
    settle(viewer, widget)
    viewer.layers[name].visible = False
    viewer.layers[f"{name} contexts"].visible = False
    viewer.layers.selection.active = viewer.layers[f"{name} BRUNO std"]
    shot(viewer, "screenshot_mean_std.png")

    widget.run("samples")
    settle(viewer, widget)
    for layer in viewer.layers:
        layer.visible = layer.name in (name, f"{name} BRUNO samples")
    viewer.layers.selection.active = viewer.layers[f"{name} BRUNO samples"]
    sagittal(viewer)
    viewer.dims.set_current_step(0, 2)
    shot(viewer, "screenshot_samples.png")
    viewer.close()


if __name__ == "__main__":
    main()
