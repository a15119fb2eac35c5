"""Screenshot of the Lesion segmenter dock after a Predict (docs/screenshot_segmenter_dock.png).

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python docs/make_segmenter_screenshot.py [--steps 150]

The shipped sample FLAIR (open_ms patient07): one half of it (axis 2, a hemisphere) with its
lesions as the training pair, as a user who labelled one scan; then Predict on the whole FLAIR,
so the other hemisphere's lesions are ones the model never saw. The model goes to a temporary
folder (``--models`` keeps it), not the user's data folder.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import napari
import numpy as np

from napari_mentalmap._sample_data import SAMPLE_FLAIR, SAMPLE_LESIONS
from napari_mentalmap.cli import save_window_screenshot, wait_while
from napari_mentalmap.widgets.segmenter import SegmenterWidget

DOCS = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", default=str(DOCS / "screenshot_segmenter_dock.png"))
    parser.add_argument("--models", default="", help="keep the model in this folder (default: a temporary one)")
    parser.add_argument("--load", default="", help="load this model instead of training one")
    parser.add_argument("--min-size", type=int, default=3, help="min size of a lesion (voxels; 2 mm lesions are small)")
    parser.add_argument("--slice", type=int, default=30)
    args = parser.parse_args()
    viewer = napari.Viewer(title="napari-mentalmap lesion segmenter")
    viewer.window.resize(1600, 1000)
    [flair] = viewer.open(str(SAMPLE_FLAIR), plugin="napari-mentalmap", name="patient07 FLAIR")
    [truth] = viewer.open(str(SAMPLE_LESIONS), plugin="napari-mentalmap", name="patient07 lesions")
    half = flair.data.shape[2] // 2
    part = viewer.add_image(flair.data[:, :, :half], name="patient07 FLAIR half", scale=flair.scale,
                            translate=flair.translate, units=flair.units, axis_labels=flair.axis_labels, colormap="gray")
    labelled = viewer.add_labels(np.asarray(truth.data)[:, :, :half].astype(np.uint8), name="patient07 FLAIR half lesions",
                                 scale=flair.scale, translate=flair.translate, units=flair.units,
                                 axis_labels=flair.axis_labels)
    viewer.layers.remove(truth)
    widget = SegmenterWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Lesion segmenter", area="right")
    with tempfile.TemporaryDirectory() as folder:
        widget.models_folder = Path(args.models or folder)
        widget.steps.setValue(args.steps)
        widget.min_size.setValue(args.min_size)
        if args.load:
            widget.load_model(args.load)
        else:
            widget.train()
        wait_while(lambda: widget.busy, timeout=900.0, settle=20)
        print(widget.status.text())
        widget.layer_combo.setCurrentText("patient07 FLAIR")
        widget.predict()
        wait_while(lambda: widget.busy, timeout=900.0, settle=20)
        print(widget.status.text(), "|", widget.predictions.info.text())
        part.visible = labelled.visible = False
        viewer.layers["patient07 FLAIR lesion probability"].visible = False
        viewer.dims.set_current_step(0, args.slice)
        saved = save_window_screenshot(viewer, args.out)
        print(saved, widget.model_label.text())


if __name__ == "__main__":
    main()
