"""Screenshots of the latent explorer for the README (run under xvfb-run, needs the shipped weights).

    xvfb-run -a .venv/bin/python docs/make_explorer_screenshots.py
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np

from napari_mentalmap._sample_data import SAMPLE_T1
from napari_mentalmap.widgets.latent_explorer import LatentExplorerWidget

DOCS = Path(__file__).parent


def main() -> None:
    viewer = napari.Viewer(title="napari-mentalmap latent explorer")
    viewer.window.resize(1500, 950)
    viewer.open(str(SAMPLE_T1), plugin="napari-mentalmap", name="sample T1")
    viewer.dims.set_current_step(0, viewer.dims.nsteps[0] // 2 + 4)
    widget = LatentExplorerWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Latent explorer (slice VAE)", area="right")
    viewer.layers.selection.active = viewer.layers["sample T1"]
    widget.encode_current_slice()
    widget.store("A")
    widget.sliders[0].setValue(20)
    widget.sliders[1].setValue(-15)
    widget.store("B")
    widget._update_plot_marker()
    # show the decoded slice next to the input: the decoded layer lives on the model grid
    decoded = viewer.layers["latent explorer: decoded"]
    t1 = viewer.layers["sample T1"]
    decoded.translate = (0, float(t1.extent.world[1][-1]) + 10)
    app = napari.qt.get_qapp()
    for _ in range(20):
        app.processEvents()
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
    viewer.screenshot(str(DOCS / "screenshot_explorer.png"), canvas_only=False)

    from napari_mentalmap.inference import latent

    volume = latent.run(latent.sample_volume(widget.bundle, 1, "ppca", seed=3))[0]
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    cut = volume.copy()
    cut[:, : volume.shape[1] // 2, volume.shape[2] // 2 :] = 0  # a cut-away shows the inside
    viewer.add_image(cut, name="slice VAE sample (ppca), cut-away", colormap="gray", contrast_limits=(0.05, 0.9),
                     scale=widget._grid_scale(), rendering="attenuated_mip", attenuation=0.5)
    viewer.dims.ndisplay = 3
    viewer.axes.visible = True
    for _ in range(20):
        app.processEvents()
    viewer.reset_view()
    viewer.camera.angles = (-60, 30, 120)
    viewer.camera.zoom *= 0.9
    for _ in range(20):
        app.processEvents()
    viewer.screenshot(str(DOCS / "screenshot_sampled_3d.png"), canvas_only=False)
    print("saved", DOCS / "screenshot_explorer.png", DOCS / "screenshot_sampled_3d.png",
          "sample range", float(np.min(volume)), float(np.max(volume)))
    viewer.close()


if __name__ == "__main__":
    main()
