"""Screenshots of the window with the three docks open, at the size of the (virtual) screen.

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/screenshot_three_docks.py [--out docs]
    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/screenshot_three_docks.py --stacked
    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python scripts/screenshot_three_docks.py --stacked

Opens the shipped sample T1 and FLAIR (+ lesions), runs each dock's main action (Mean with
5 contexts, the anomaly map, Encode + Sample slices). By default the docks are tabified and
``screenshot_docks_<n>.png`` is saved with dock n raised; with ``--stacked`` they are opened
as the Plugins menu opens them (stacked on the right, with the latent embedding plot) and one
``screenshot_docks_<width>x<height>.png`` is saved. Prints the window and dock sizes, to
check that nothing grows past the screen.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import napari

from napari_mentalmap._sample_data import sample_flair_with_lesions, sample_t1
from napari_mentalmap.cli import save_window_screenshot, wait_while

DOCKS = ("Mental maps (BRUNO)", "Anomaly maps", "Latent explorer (slice VAE)")


def save_stacked(viewer, app, path: Path) -> None:
    """Screenshot of the stacked docks; prints each dock's height against its content's."""
    for _ in range(20):  # the docks share the height after napari's own resizing
        app.processEvents()
        time.sleep(0.01)
    for layer in viewer.layers:
        layer.visible = layer.name in ("sample FLAIR", "sample FLAIR anomaly", "sample FLAIR anomaly labels")
    saved = save_window_screenshot(viewer, path)
    size = viewer.window._qt_window.size()
    print(f"{saved} (window {size.width()}x{size.height()})")
    for name, dock in viewer.window._dock_widgets.items():
        print(f"  {name}: {dock.height()} px high, would like {dock.sizeHint().height()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs")
    parser.add_argument("--stacked", action="store_true", help="docks stacked as the Plugins menu opens them")
    args = parser.parse_args()
    viewer = napari.Viewer(title="napari-mentalmap")
    app = napari.qt.get_qapp()
    screen = app.primaryScreen().geometry()  # xvfb has no window manager to maximise the window
    viewer.window._qt_window.showMaximized()
    viewer.window.resize(screen.width(), screen.height())
    for data, kwargs, layer_type in [*sample_t1(), *sample_flair_with_lesions()]:
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    docks = {}
    for title in DOCKS:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-mentalmap", title, tabify=not args.stacked)
        docks[title] = (dock, widget)
    mental, anomaly, explorer = (docks[t][1] for t in DOCKS)
    mental.layer_combo.setCurrentText("sample T1")
    wait_while(lambda: mental.busy)
    mental.contexts.evenly_spaced(5)
    mental.run("mean")
    wait_while(lambda: mental.busy)
    anomaly.layer_combo.setCurrentText("sample FLAIR")
    anomaly.truth_combo.setCurrentText("sample lesions")
    anomaly.compute()
    wait_while(lambda: anomaly.busy)
    anomaly.set_auto_threshold()
    viewer.layers.selection.active = viewer.layers["sample T1"]
    wait_while(lambda: explorer.loading)  # the model loads in a worker thread
    explorer.encode_current_slice()
    wait_while(lambda: explorer.busy)
    explorer.sample_slices()
    wait_while(lambda: explorer.busy)
    out = Path(args.out)
    if args.stacked:
        save_stacked(viewer, app, out / f"screenshot_docks_{screen.width()}x{screen.height()}.png")
        viewer.close()
        return
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
