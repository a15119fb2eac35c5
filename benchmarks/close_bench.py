"""Close napari while a dock works: does Python end cleanly? (prints a Markdown table)

Each run is its own Python process, because an abort kills the process and the hazard is
the interpreter's exit: a real napari window (1920x1080), the shipped sample T1 / FLAIR,
one dock, one job; after a random delay in [0, 1.1 x the job's duration] (measured first,
one run per job type) the viewer is closed in one of three ways, then the script ends
while the job may still run:

- ``viewer``: ``viewer.close()``, 0.3 s of event loop (late results meet deleted widgets), exit;
- ``dock``: the dock is removed, 0.3 s of event loop, ``viewer.close()``, exit at once;
- ``exit``: ``viewer.close()`` and exit at once (no event-loop turn in between).

A run is clean when the process exits with 0 and stderr has no "Fatal Python error" and
no "has been deleted".

    xvfb-run -a -s "-screen 0 1920x1080x24" nice -n 10 .venv/bin/python benchmarks/close_bench.py [--runs 20]

``--child`` runs the scenarios of one process (``tests/test_close_during_jobs.py`` uses it
with tiny weights and several cycles per process).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

CLOSES = ("viewer", "dock", "exit")
JOBS = {  # job -> dock it runs in
    "mental map: finding the brain": "mental",
    "mental map: Mean": "mental",
    "mental map: Samples": "mental",
    "mental map: Prior": "mental",
    "mental map: Mean on two images + anomaly map": "both",
    "anomaly: Compute": "anomaly",
    "anomaly: live relabelling": "anomaly",
    "anomaly: Calibrate Auto": "anomaly",
    "latent: model loading": "latent",
    "latent: Encode": "latent",
    "latent: Sample volume": "latent",
    "latent: slider decoding": "latent",
    "segmenter: Train": "segmenter",
    "segmenter: Predict": "segmenter",
}
SLIDER_JOBS = ("anomaly: live relabelling", "latent: slider decoding")
BAD = ("Fatal Python error", "has been deleted")


# --- child: one process, one or more (job, delay, close) cycles ---------------------------
def _pump(app, seconds: float, until=None) -> bool:
    """Run the event loop for ``seconds`` (or until ``until()``); True when ``until`` held."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        if until is not None and until():
            return True
        time.sleep(0.005)
    return until is not None and until()


class Scene:
    """A viewer with the sample images and the dock(s) of one job."""

    def __init__(self, job: str, options: argparse.Namespace) -> None:
        import napari

        from napari_mentalmap._sample_data import SAMPLE_FLAIR, SAMPLE_LESIONS, SAMPLE_T1

        self.app = napari.qt.get_qapp()
        self.job, self.options = job, options
        self.viewer = napari.Viewer(show=options.show)
        self.viewer.window.resize(1920, 1080)
        self.paths = {"T1": str(SAMPLE_T1), "FLAIR": str(SAMPLE_FLAIR), "lesions": str(SAMPLE_LESIONS)}
        self.docks = {}
        self.timer = self.poll = None  # the scene's own timers (slider moves, next step)
        kind = JOBS[job]
        if kind == "latent":
            from napari_mentalmap.widgets.latent_explorer import LatentExplorerWidget

            self.open("T1")
            self._add("latent", LatentExplorerWidget(self.viewer, weights=options.vae_weights))
            return
        if kind == "segmenter":  # the FLAIR and its lesions: one training pair
            import tempfile

            from napari_mentalmap.widgets.segmenter import SegmenterWidget

            self.open("FLAIR")
            self.open("lesions")
            segmenter = self._add("segmenter", SegmenterWidget(self.viewer))
            self.models = tempfile.TemporaryDirectory(prefix="close-bench-")  # removed at exit
            segmenter.models_folder = Path(self.models.name)
            segmenter.steps.setValue(options.segmenter_steps)
            segmenter.device_combo.setCurrentText("cpu")
            return
        if kind in ("mental", "both"):
            from napari_mentalmap.widgets.mental_map import MentalMapWidget

            mental = self._add("mental", MentalMapWidget(self.viewer))
            mental.device_combo.setCurrentText("cpu")
            mental.n_samples.setValue(options.samples)
            if options.bruno_weights:
                mental.weights_edit.setText(options.bruno_weights)
        if kind in ("anomaly", "both"):
            from napari_mentalmap.widgets.anomaly import AnomalyWidget

            anomaly = self._add("anomaly", AnomalyWidget(self.viewer))
            anomaly.device_combo.setCurrentText("cpu")
            if options.method:
                anomaly.model_combo.setCurrentIndex(anomaly.model_combo.findData(options.method))
        if job != "mental map: finding the brain":  # that job starts when the image is opened
            self.open("FLAIR" if kind == "anomaly" else "T1")

    def _add(self, name: str, widget):
        self.docks[name] = (widget, self.viewer.window.add_dock_widget(widget, name=name))
        return widget

    def open(self, name: str) -> None:
        self.viewer.open(self.paths[name], plugin="napari-mentalmap", name=name)

    def widget(self, name: str):
        return self.docks[name][0]

    @property
    def busy(self) -> bool:
        return any(widget.busy for widget, _ in self.docks.values())

    def prepare(self, timeout: float = 300.0) -> None:
        """Wait until the job can start (brain range known, model loaded, map computed)."""
        if self.job in ("mental map: finding the brain", "latent: model loading"):
            return
        if not _pump(self.app, timeout, lambda: not self.busy):
            raise TimeoutError(f"{self.job}: the dock did not get ready in {timeout} s")
        if self.job in ("anomaly: live relabelling", "anomaly: Calibrate Auto"):
            self.widget("anomaly").compute()
            _pump(self.app, timeout, lambda: not self.busy)
        if self.job == "segmenter: Predict":  # an untrained model: what it predicts does not matter here
            from napari_mentalmap.inference.segment import UserSegmenter
            from napari_mentalmap.models.segmenter import LesionSegmenter, SegmenterConfig

            self.widget("segmenter").use_model(UserSegmenter(LesionSegmenter(SegmenterConfig()).eval(), {}))
        if self.job == "latent: slider decoding":
            self.viewer.layers.selection.active = self.viewer.layers["T1"]
            self.widget("latent").encode_current_slice()
            _pump(self.app, timeout, lambda: not self.busy)

    def begin(self) -> None:
        """Start the job (``latent: model loading`` started with the dock)."""
        from qtpy.QtCore import QTimer

        job = self.job
        if job == "mental map: finding the brain":
            self.open("T1")
        elif job.startswith("mental map: ") and JOBS[job] == "mental":
            self.widget("mental").run(job.removeprefix("mental map: ").lower())
        elif JOBS[job] == "both":
            mental = self.widget("mental")
            mental.run("mean")
            self.open("FLAIR")  # the anomaly dock picks the new FLAIR; the mental map keeps the T1
            self.widget("anomaly").compute()
            self._then(lambda: not mental.busy, lambda: (mental.layer_combo.setCurrentText("FLAIR"),
                                                         mental.contexts.when_range_ready(lambda: mental.run("mean"))))
        elif job == "anomaly: Compute":
            self.widget("anomaly").compute()
        elif job == "anomaly: Calibrate Auto":  # to the proposal as shown, into a throw-away file
            import tempfile

            os.environ["MENTALMAP_CALIBRATION"] = str(Path(tempfile.mkdtemp(prefix="close-bench-")) / "c.json")
            self.widget("anomaly").calibration.calibrate()
        elif job in SLIDER_JOBS:  # 12 slider moves, 40 ms apart
            slider = self._slider()
            values = [type(slider.value())(slider.minimum() + (slider.maximum() - slider.minimum()) * k / 11)
                      for k in range(12)]

            def move() -> None:
                if values:
                    slider.setValue(values.pop(0))
                else:
                    self.timer.stop()

            self.timer = QTimer()
            self.timer.setInterval(40)
            self.timer.timeout.connect(move)
            self.timer.start()
        elif job == "latent: Encode":
            self.viewer.layers.selection.active = self.viewer.layers["T1"]
            self.widget("latent").encode_current_slice()
        elif job == "latent: Sample volume":
            self.widget("latent").sample_volume()
        elif job == "segmenter: Train":
            self.widget("segmenter").train()
        elif job == "segmenter: Predict":
            self.widget("segmenter").predict()

    def _then(self, condition, action) -> None:
        from qtpy.QtCore import QTimer

        def check() -> None:
            if condition():
                self.poll.stop()
                action()

        self.poll = QTimer()
        self.poll.setInterval(20)
        self.poll.timeout.connect(check)
        self.poll.start()

    def _slider(self):
        if self.job.startswith("anomaly"):
            return self.widget("anomaly").threshold_slider
        return self.widget("latent").sliders[0]

    def finished(self) -> bool:
        """Whether the job is over (its results shown)."""
        if self.job in SLIDER_JOBS:
            return not self.timer.isActive() and not self.busy
        if JOBS[self.job] == "both":
            return not self.busy and sum("BRUNO mean" in layer.name for layer in self.viewer.layers) >= 2
        return not self.busy

    def status(self) -> str:
        """What the docks said when the viewer was closed."""
        texts = [widget.status.text() for widget, _ in self.docks.values()]
        if "mental" in self.docks:
            texts.append(self.widget("mental").contexts.info.text())
        return " | ".join(text for text in texts if text)

    def close(self, how: str) -> None:
        for timer in (self.timer, self.poll):  # the "user" stops moving sliders
            if timer is not None:
                timer.stop()
        if how == "dock":
            for _, dock in list(self.docks.values()):
                self.viewer.window.remove_dock_widget(dock)
            _pump(self.app, 0.3)
            self.viewer.close()
            return
        self.viewer.close()
        if how == "viewer":
            _pump(self.app, 0.3)


def child(options: argparse.Namespace) -> None:
    """Run the cycles of ``options.cycles`` (JSON list of [job, delay, close]); one JSON line each.
    ``close`` "none" waits for the job to end (its duration) and closes the viewer normally."""
    import torch

    torch.set_num_threads(options.threads)
    if options.unguarded:  # as before issue 28: napari's plain workers, no wait at exit
        import atexit

        from napari.qt.threading import create_worker

        from napari_mentalmap.widgets import _threads, _worker

        atexit.unregister(_threads.stop_all_workers)
        _threads.new_worker = _worker.new_worker = lambda function, *args: create_worker(
            function, *args, _start_thread=False, _ignore_errors=True)
    for job, delay, how in json.loads(options.cycles):
        scene = Scene(job, options)
        scene.prepare()
        scene.begin()
        started = time.perf_counter()  # delays count from here too (opening an image takes a while)
        if how == "none":
            _pump(scene.app, 600.0, scene.finished)
            record = {"job": job, "duration": time.perf_counter() - started}
            scene.close("viewer")
        else:
            _pump(scene.app, delay)
            record = {"job": job, "delay": delay, "close": how, "status": scene.status(),
                      "done": scene.finished()}
            scene.close(how)
        print(json.dumps(record), flush=True)


# --- parent: calibrate, run, tabulate ------------------------------------------------------
def run_child(cycles: list, extra: list[str], timeout: float = 900.0) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a child process running ``cycles``."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--cycles", json.dumps(cycles), *extra]
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    return done.returncode, done.stdout, done.stderr


def clean(code: int, stderr: str) -> bool:
    """Whether a child ended cleanly: exit code 0 and none of :data:`BAD` on stderr."""
    return code == 0 and not any(bad in stderr for bad in BAD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--jobs", nargs="*", default=list(JOBS), help="job types (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", default="", help="append every run (JSON) to this file")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--cycles", default="[]")
    parser.add_argument("--show", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--bruno-weights", default="")
    parser.add_argument("--vae-weights", default=None)
    parser.add_argument("--method", default="", help="anomaly method (default: the dock's default)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the GUI thread")
    parser.add_argument("--samples", type=int, default=4, help="samples per mental-map job")
    parser.add_argument("--segmenter-steps", type=int, default=30, help="training steps of the segmenter job")
    parser.add_argument("--unguarded", action="store_true",
                        help="without the plugin's worker guards (as before issue 28): shows what the bench catches")
    options = parser.parse_args()
    if options.child:
        child(options)
        return
    extra = [f"--threads={options.threads}", f"--samples={options.samples}", f"--segmenter-steps={options.segmenter_steps}", "--show" if options.show else "--no-show",
             *(["--unguarded"] if options.unguarded else [])]
    for flag in ("bruno_weights", "vae_weights", "method"):
        if getattr(options, flag):
            extra.append(f"--{flag.replace('_', '-')}={getattr(options, flag)}")
    rng = random.Random(options.seed)
    rows = []
    for job in options.jobs:
        code, out, err = run_child([[job, 0.0, "none"]], extra)
        duration = json.loads(out.strip().splitlines()[-1])["duration"] if code == 0 and out.strip() else 10.0
        outcomes, running = [], 0
        for run in range(options.runs):
            delay, how = round(rng.uniform(0.0, 1.1 * duration), 2), CLOSES[run % len(CLOSES)]
            code, out, err = run_child([[job, delay, how]], extra)
            outcomes.append(clean(code, err))
            running += bool(out.strip()) and json.loads(out.strip().splitlines()[-1]).get("done") is False
            record = {"job": job, "delay": delay, "close": how, "code": code, "clean": outcomes[-1],
                      "child": out.strip().splitlines()[-1] if out.strip() else "",
                      "stderr_tail": err.strip().splitlines()[-3:] if not outcomes[-1] else []}
            print(json.dumps(record), file=sys.stderr, flush=True)
            if options.log:
                with open(options.log, "a") as log:
                    log.write(json.dumps(record) + "\n")
        rows.append((job, duration, len(outcomes), running, sum(outcomes)))
    print("| job type | job duration (s) | runs | closed while the job ran | clean exits | aborts / errors |")
    print("|---|---|---|---|---|---|")
    for job, duration, runs, running, good in rows:
        print(f"| {job} | {duration:.1f} | {runs} | {running} | {good} | {runs - good} |")


if __name__ == "__main__":
    main()
