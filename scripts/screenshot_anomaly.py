"""The README's anomaly-map screenshot: sample FLAIR + lesions, Anomaly maps dock, Auto threshold.

    xvfb-run -a .venv/bin/python scripts/screenshot_anomaly.py [--kind spatial2d] [--out docs/screenshot_anomaly.png]
        [--calibrate]

``--kind`` is a method of the dock (default: its default, the DAE-gated intensity).
``--calibrate``: the labels replaced by the sample's manual lesions (as a user's corrections)
and *Calibrate Auto to these labels* pressed (into a temporary calibration file, not yours).

Runs the same job as the dock's Compute button (synchronously, so the script needs no
event-loop polling), shows it through the widget, picks the sample's lesion mask as
ground truth, moves to the axial slice with the most lesion voxels and saves the window.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import napari
import numpy as np
from napari.utils import DirectLabelColormap

from napari_mentalmap._sample_data import sample_flair_with_lesions
from napari_mentalmap.cli import save_window_screenshot, wait_while
from napari_mentalmap.inference.jobs import run_to_completion
from napari_mentalmap.widgets.anomaly import DEFAULT_METHOD, anomaly_job, prepared_anomaly_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default=DEFAULT_METHOD)
    parser.add_argument("--out", default="docs/screenshot_anomaly.png")
    parser.add_argument("--slice", type=int, default=None,
                        help="axial slice to show (default: the one with the most lesion voxels)")
    parser.add_argument("--calibrate", action="store_true")
    args = parser.parse_args()
    if args.calibrate:
        os.environ["MENTALMAP_CALIBRATION"] = str(Path(tempfile.mkdtemp()) / "calibration.json")

    viewer = napari.Viewer(title="napari-mentalmap: anomaly maps")
    viewer.window.resize(1500, 900)
    for data, kwargs, layer_type in sample_flair_with_lesions():
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    _, widget = viewer.window.add_plugin_dock_widget("napari-mentalmap", "Anomaly maps")
    widget.model_combo.setCurrentIndex(widget.model_combo.findData(args.kind))
    flair = viewer.layers["sample FLAIR"]
    lesions = viewer.layers["sample lesions"]
    lesions.contour = 1  # the manual lesions as cyan outlines over the labels
    lesions.opacity = 1.0
    lesions.colormap = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent", 1: "cyan"})
    spacing = tuple(float(s) for s in flair.scale[-3:])
    prepared = run_to_completion(prepared_anomaly_job(
        anomaly_job(np.asarray(flair.data), spacing, args.kind, "cpu", weights=widget.weights.get(args.kind)),
        widget.target, int(widget.min_size.value())))
    for step in widget.show_result(prepared, flair, args.kind):
        step()
    widget.truth_combo.setCurrentText("sample lesions")
    if args.calibrate:
        widget.labels_layer.data[:] = np.asarray(lesions.data) > 0
        widget.labels_layer.refresh()
        widget.calibration.calibrate()  # a job in the dock's worker: let the event loop run it
        wait_while(lambda: widget.busy, settle=0)
        print(widget.calibration.status.text())
    widget.set_auto_threshold()
    busiest = int(np.argmax((np.asarray(lesions.data) > 0).sum(axis=(1, 2))))
    shown = busiest if args.slice is None else args.slice
    viewer.dims.set_current_step(0, shown)
    # a darker FLAIR so the additive overlay stands out
    flair.contrast_limits = (0.0, 1.5 * float(np.percentile(np.asarray(flair.data), 99.9)))
    print(f"{args.kind}: threshold {widget.threshold_slider.value():.3f}, {widget.dice_label.text()}, "
          f"{widget.timing_label.text()}, slice {shown}")
    viewer.layers.move(viewer.layers.index(lesions), len(viewer.layers))
    print(f"saved {save_window_screenshot(viewer, args.out)}")
    viewer.close()


if __name__ == "__main__":
    main()
