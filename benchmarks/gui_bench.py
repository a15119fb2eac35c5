"""GUI responsiveness of every dock action on a 1 mm volume (prints a Markdown table).

A QTimer pings the Qt event loop every ``--ping-ms`` while an action runs (until the dock
is idle again, its result shown); the longest gap between two pings is how long the viewer
was frozen (fluid below ~100 ms). Each action runs twice: the first creates its layers, the
second updates them. Also: how long each dock takes to open the first time, and how long
Cancel takes when pressed at several moments of each dock's long jobs (spread over the
job's duration, measured first): until the dock is free again ("dock free": the status
says cancelled, its buttons are back, nothing was added) and until the worker thread has
really stopped (the job stops at its next progress report, unseen).

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python benchmarks/gui_bench.py [--t1 PATH --flair PATH]
    ... benchmarks/gui_bench.py --cancel-only   # only the Cancel table
    ... benchmarks/gui_bench.py --segmenter-only [--segmenter-steps 300]

The Lesion segmenter dock trains on one labelled pair (``--pair-flair``, ``--pair-lesions``)
with ``--segmenter-steps`` (the dock's default: 300), then predicts on ``--flair`` with that
model. ``--segmenter-only`` measures only its Train and Predict, beside the anomaly dock's
Compute (default method) on the same FLAIR: the level the other docks reach.

Defaults: open_ms patient19 T1 and FLAIR (1 mm) from ../shared/data; the pair: patient26
FLAIR and lesion_consensus.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

DATA = Path("../shared/data/open_ms/patient19")
PAIR = Path("../shared/data/open_ms/patient26")
CANCEL_FRACTIONS = (0.0, 0.1, 0.25, 0.4, 0.6, 0.8, 0.95)  # of the job's duration


class Pinger:
    """Records the gaps between QTimer ticks."""

    def __init__(self, ping_ms: int) -> None:
        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(ping_ms)
        self.timer.timeout.connect(self._tick)
        self.last = time.perf_counter()
        self.longest = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        self.longest = max(self.longest, now - self.last)
        self.last = now

    def start(self) -> None:
        self.last = time.perf_counter()
        self.longest = 0.0
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        self._tick()
        return self.longest


def measure(app, pinger: Pinger, action: Callable[[], object], busy: Callable[[], bool],
            timeout: float = 3600.0) -> tuple[float, float]:
    """(longest event-loop gap, wall time) of ``action`` until ``busy()`` is False."""
    pinger.start()
    started = time.perf_counter()
    action()
    app.processEvents()
    while busy() and time.perf_counter() - started < timeout:
        app.processEvents()
        time.sleep(0.002)
    for _ in range(5):  # let the last staged display steps run
        app.processEvents()
        time.sleep(0.005)
    return pinger.stop(), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t1", default=str(DATA / "T1.nii.gz"))
    parser.add_argument("--flair", default=str(DATA / "FLAIR.nii.gz"))
    parser.add_argument("--ping-ms", type=int, default=10)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--cancel-only", action="store_true", help="only the Cancel table")
    parser.add_argument("--pair-flair", default=str(PAIR / "FLAIR.nii.gz"), help="the segmenter's training image")
    parser.add_argument("--pair-lesions", default=str(PAIR / "lesion_consensus.nii.gz"), help="... and its labels")
    parser.add_argument("--segmenter-steps", type=int, default=300, help="training steps (the dock's default: 300)")
    parser.add_argument("--segmenter-only", action="store_true",
                        help="only the segmenter's Train and Predict, and the anomaly dock's Compute beside them")
    args = parser.parse_args()
    everything = not args.segmenter_only

    import napari
    import numpy as np
    from qtpy.QtCore import QThreadPool

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1920, 1080)
    app = napari.qt.get_qapp()
    pinger = Pinger(args.ping_ms)
    volumes = {}
    for path, name in ((args.t1, "T1"), (args.flair, "FLAIR"), (args.pair_flair, "pair FLAIR"),
                       (args.pair_lesions, "pair FLAIR lesions")):  # the labels' name carries their image's
        if everything or name != "T1":
            [volumes[name]] = viewer.open(path, plugin="napari-mentalmap", name=name)
    t1 = volumes.get("T1")
    rows: list[tuple[str, str, float, float]] = []

    def record(name: str, action, busy, runs: int = 2) -> None:
        """Two runs (first, repeat); with more runs, the first and the worst repeat."""
        results = [measure(app, pinger, action, busy) for _ in range(runs)]
        rows.append((name, "first", *results[0]))
        if runs > 1:
            worst = max(results[1:])
            rows.append((name, "repeat" if runs == 2 else f"worst of {runs - 1} repeats", *worst))

    # what napari itself costs on this machine: one redraw, and adding / removing a 1-voxel layer
    if args.cancel_only:
        record = lambda name, action, busy, runs=2: [measure(app, pinger, action, busy) for _ in range(1)]  # noqa: E731
    record("napari floor: redraw the canvas", lambda: viewer.window._qt_viewer.canvas.native.update(), lambda: False)
    record("napari floor: add + remove a 1x1x1 image layer",
           lambda: viewer.layers.remove(viewer.add_image(np.zeros((1, 1, 1), np.float32), name="floor")),
           lambda: False)

    opened = {}
    titles = ("Mental maps (BRUNO)", "Anomaly maps", "Latent explorer (slice VAE)", "Lesion segmenter")
    for title in titles if everything else titles[1::2]:
        started = time.perf_counter()
        pinger.start()
        _, widget = viewer.window.add_plugin_dock_widget("napari-mentalmap", title)
        app.processEvents()
        rows.append((f"open dock: {title}", "first", pinger.stop(), time.perf_counter() - started))
        opened[title] = widget
    mental, anomaly, explorer, segmenter = (opened.get(title) for title in titles)
    if everything:
        record("latent explorer: model loading (worker thread)", lambda: None, lambda: explorer.loading, runs=1)
    models = tempfile.TemporaryDirectory(prefix="gui-bench-")  # the trained models, removed at the end
    segmenter.models_folder = Path(models.name)
    segmenter.device_combo.setCurrentText("cpu")
    segmenter.steps.setValue(args.segmenter_steps)
    pool = QThreadPool.globalInstance()
    record("segmenter: torch + models import (worker thread)", lambda: None, lambda: pool.activeThreadCount() > 0,
           runs=1)

    if everything:
        viewer.layers.selection.active = t1
        mental.layer_combo.setCurrentText("T1")
        record("mental map: choose image (brain range)", lambda: None, lambda: mental.busy, runs=1)
        mental.n_samples.setValue(args.samples)
        record("mental map: 5 evenly spaced contexts", lambda: mental.contexts.evenly_spaced(5), lambda: mental.busy)
        record(f"mental map: Mean ({args.samples} samples)", lambda: mental.run("mean"), lambda: mental.busy)
        record(f"mental map: Samples ({args.samples})", lambda: mental.run("samples"), lambda: mental.busy)
        record("mental map: Prior", lambda: mental.run("prior"), lambda: mental.busy)

    anomaly.layer_combo.setCurrentText("FLAIR")
    methods = ("DAE-gated FLAIR intensity", "FLAIR intensity (baseline)", "spatial2d")  # the default first
    for method in methods if everything else methods[:1]:
        anomaly.model_combo.setCurrentIndex(anomaly.model_combo.findData(method))
        record(f"anomaly: Compute ({method})", anomaly.compute, lambda: anomaly.busy)
    if everything:
        values = iter(np.linspace(0.05, float(anomaly.threshold_slider.maximum()), 12))
        record("anomaly: threshold move (each of 12)", lambda: anomaly.threshold_slider.setValue(float(next(values))),
               lambda: anomaly.busy, runs=12)
        record("anomaly: Auto", anomaly.auto_button.click, lambda: anomaly.busy)

        viewer.layers.selection.active = t1
        viewer.dims.set_point(0, float(t1.data_to_world((t1.data.shape[0] // 2, 0, 0))[0]))
        record("latent: Encode current slice", explorer.encode_current_slice, lambda: explorer.busy)
        steps = iter(range(-25, 26, 5))
        record("latent: direction-slider move (each of 10)", lambda: explorer.sliders[0].setValue(next(steps)),
               lambda: explorer.busy, runs=10)
        explorer.store("A")
        explorer.sliders[1].setValue(20)
        explorer.store("B")
        ts = iter(range(0, 101, 10))
        record("latent: interpolation step (each of 10)", lambda: explorer.t_slider.setValue(next(ts)),
               lambda: explorer.busy, runs=10)
        record("latent: Sample slices (8)", explorer.sample_slices, lambda: explorer.busy)
        record("latent: Sample volume", explorer.sample_volume, lambda: explorer.busy)

    # the Lesion segmenter: Train on the labelled pair only, then Predict on the FLAIR with that model
    for pair in segmenter.checked_pairs():
        segmenter.set_checked(pair.labels.name, False)
    segmenter.set_checked("pair FLAIR lesions", True)
    train = f"segmenter: Train ({args.segmenter_steps} steps, 1 pair)"
    record(train, segmenter.train, lambda: segmenter.busy, runs=1)
    if segmenter.segmenter is None:
        sys.exit(f"{train} failed: {segmenter.status.text()}")
    durations = {train: segmenter.runner.stats.seconds}  # the job's time in its worker
    segmenter.layer_combo.setCurrentText("FLAIR")
    record("segmenter: Predict", segmenter.predict, lambda: segmenter.busy)
    durations["segmenter: Predict"] = segmenter.runner.stats.seconds

    # Cancel at several moments of each long job (spread over its duration, measured first)
    def wait(condition: Callable[[], bool]) -> None:
        while condition():
            app.processEvents()
            time.sleep(0.002)

    def cancel_after(start: Callable[[], object], dock, delay: float) -> tuple[float, float, str]:
        """(dock free after, worker stopped after, stage) of a Cancel ``delay`` s into a job; NaN
        when the job's worker had already ended (its result being shown, or done)."""
        start()
        started = time.perf_counter()
        while time.perf_counter() - started < delay:
            app.processEvents()
            time.sleep(0.005)
        if dock.runner.worker is None:  # nothing left to cancel
            stage = "(showing the result)" if dock.runner.busy else "(already done)"
            wait(lambda: dock.busy)
            if dock.runner.stats.outcome == "failed":  # not a Cancel timing: the job itself failed
                stage = f"(FAILED: {dock.status.text()})"
            return float("nan"), float("nan"), stage
        stage = dock.status.text()
        cancelled = time.perf_counter()
        dock.cancel_button.click()
        wait(lambda: dock.runner.busy)
        free = time.perf_counter() - cancelled
        wait(lambda: dock.runner.stopping)
        stopped = time.perf_counter() - cancelled
        wait(lambda: dock.busy)  # e.g. the explorer's slider decoding after an earlier result
        return free, stopped, stage

    def choose(method: str) -> Callable[[], object]:
        return lambda: anomaly.model_combo.setCurrentIndex(anomaly.model_combo.findData(method))

    # (name, prepare, start, dock, the job's time in its worker when known from the rows above)
    cancel_jobs = [("anomaly: Compute (default, DAE-gated)", choose("DAE-gated FLAIR intensity"), anomaly.compute,
                    anomaly, None)]
    if everything:
        mental.n_samples.setValue(args.samples)
        cancel_jobs = [
            (f"mental map: Samples ({args.samples})", lambda: None, lambda: mental.run("samples"), mental, None),
            *cancel_jobs,
            ("anomaly: Compute (spatial2d)", choose("spatial2d"), anomaly.compute, anomaly, None),
            ("latent: Encode current slice", lambda: setattr(viewer.layers.selection, "active", t1),
             explorer.encode_current_slice, explorer, None),
            ("latent: Sample volume (ppca)", lambda: None, explorer.sample_volume, explorer, None),
        ]
    cancel_jobs += [(name, lambda: None, start, segmenter, durations[name])  # no second training to time it
                    for name, start in ((train, segmenter.train), ("segmenter: Predict", segmenter.predict))]
    cancels = []
    for name, prepare, start, dock, duration in cancel_jobs:
        prepare()
        if duration is None:
            measure(app, pinger, start, lambda dock=dock: dock.busy)
            duration = dock.runner.stats.seconds
        for fraction in CANCEL_FRACTIONS:
            delay = fraction * duration
            cancels.append((name, delay, *cancel_after(start, dock, delay)))
            print(f"{name} after {delay:.2f} s: dock free after {cancels[-1][2]:.2f} s, worker stopped after "
                  f"{cancels[-1][3]:.2f} s ({cancels[-1][4]})", file=sys.stderr, flush=True)
    final_status = {name: dock.status.text() for name, dock in
                    (("mental map", mental), ("anomaly", anomaly), ("latent", explorer), ("segmenter", segmenter))
                    if dock is not None}
    models.cleanup()

    shapes = ", ".join(f"{name} {layer.data.shape}" for name, layer in volumes.items())
    print(f"1 mm volumes: {shapes}; segmenter trained for {args.segmenter_steps} steps; ping every {args.ping_ms} ms\n")
    print("| action | run | longest event-loop gap (ms) | wall (s) |")
    print("|---|---|---|---|")
    for name, run, gap, wall in rows:
        print(f"| {name} | {run} | {1000 * gap:.0f} | {wall:.2f} |")
    print("\n| job cancelled | after (s) | while | dock free after (s) | worker stopped after (s) |")
    print("|---|---|---|---|---|")
    for name, delay, free, stopped, stage in cancels:
        print(f"| {name} | {delay:.2f} | {stage} | {free:.2f} | {stopped:.2f} |")
    measured = [c for c in cancels if c[2] == c[2]]  # not NaN
    print(f"longest Cancel: dock free after {max(c[2] for c in measured):.2f} s, worker stopped after "
          f"{max(c[3] for c in measured):.2f} s; final status: {final_status}")
    worst = max(rows, key=lambda r: r[2] if not r[0].startswith(("open dock", "napari floor")) else 0)
    print(f"longest gap over all actions: {1000 * worst[2]:.0f} ms ({worst[0]}, {worst[1]} run)")
    nan = float("nan")
    for dock in ("anomaly: Compute", "segmenter: "):  # the segmenter's gaps beside the other docks' level
        gap = max((r for r in rows if r[0].startswith(dock)), key=lambda r: r[2], default=("-", "-", nan, nan))
        stops = [c for c in measured if c[0].startswith(dock)]
        print(f"{dock.rstrip(': ')}: longest gap {1000 * gap[2]:.0f} ms ({gap[0]}, {gap[1]} run); longest Cancel: "
              f"dock free after {max((c[2] for c in stops), default=nan):.2f} s, worker stopped after "
              f"{max((c[3] for c in stops), default=nan):.2f} s")
    viewer.close()


if __name__ == "__main__":
    main()
