"""Screenshots at 1920x1080 with the three docks open, one per dock in front (tabified).

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/screenshot_three_docks.py [--out docs]

Opens the shipped sample T1 and FLAIR (+ lesions), runs each dock's main action (Mean with
5 contexts, the anomaly map, Encode + Sample slices) and saves ``screenshot_docks_<n>.png``
with that dock raised. Prints the window size, to check that nothing grows past the screen.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import napari

from napari_mentalmap._sample_data import sample_flair_with_lesions, sample_t1
from napari_mentalmap.cli import save_window_screenshot

DOCKS = ("Mental maps (BRUNO)", "Anomaly maps", "Latent explorer (slice VAE)")


def wait(app, busy, timeout: float = 300.0) -> None:
    started = time.time()
    while busy() and time.time() - started < timeout:
        app.processEvents()
        time.sleep(0.01)
    for _ in range(10):
        app.processEvents()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    viewer = napari.Viewer(title="napari-mentalmap")
    viewer.window._qt_window.showMaximized()
    viewer.window.resize(1920, 1080)
    app = napari.qt.get_qapp()
    for data, kwargs, layer_type in [*sample_t1(), *sample_flair_with_lesions()]:
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    docks = {}
    for title in DOCKS:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-mentalmap", title, tabify=True)
        docks[title] = (dock, widget)
    mental, anomaly, explorer = (docks[t][1] for t in DOCKS)
    mental.layer_combo.setCurrentText("sample T1")
    wait(app, lambda: mental.busy)
    mental.contexts.evenly_spaced(5)
    mental.run("mean")
    wait(app, lambda: mental.busy)
    anomaly.layer_combo.setCurrentText("sample FLAIR")
    anomaly.truth_combo.setCurrentText("sample lesions")
    anomaly.compute()
    wait(app, lambda: anomaly.busy)
    anomaly.set_auto_threshold()
    viewer.layers.selection.active = viewer.layers["sample T1"]
    wait(app, lambda: explorer.loading)  # the model loads in a worker thread
    explorer.encode_current_slice()
    wait(app, lambda: explorer.busy)
    explorer.sample_slices()
    wait(app, lambda: explorer.busy)
    out = Path(args.out)
    shown = {DOCKS[0]: ("sample T1", "sample T1 BRUNO mean", "sample T1 BRUNO std", "sample T1 contexts"),
             DOCKS[1]: ("sample FLAIR", "sample FLAIR anomaly", "sample FLAIR anomaly labels", "sample lesions"),
             DOCKS[2]: ("sample T1", "latent explorer: decoded")}
    for number, title in enumerate(DOCKS, 1):
        for layer in viewer.layers:
            layer.visible = layer.name in shown[title]
        dock = docks[title][0]
        dock.show()
        dock.raise_()
        app.processEvents()
        path = save_window_screenshot(viewer, out / f"screenshot_docks_{number}.png")
        size = viewer.window._qt_window.size()
        print(f"{title}: {path} (window {size.width()}x{size.height()})")
    viewer.close()


if __name__ == "__main__":
    main()
