"""Closing napari (the viewer or a dock) while any job runs ends Python cleanly.

An abort is a process-level event and its hazard is the interpreter's exit, so every
scenario runs in its own Python process (``benchmarks/close_bench.py --child``: a napari
window with the sample images and a dock; each cycle starts a job, closes the viewer or the
dock after a delay, and the process ends while the last job still runs). Clean = exit code
0 and no "Fatal Python error" / "has been deleted" on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "close_bench.py"
BAD = ("Fatal Python error", "has been deleted")

# each group: one process, cycles of (job, delay in s, how to close); the last one exits at once
GROUPS = {
    "mental map": [["mental map: finding the brain", 0.0, "viewer"], ["mental map: Mean", 0.2, "dock"],
                   ["mental map: Samples", 0.05, "viewer"], ["mental map: Prior", 0.0, "exit"]],
    "anomaly": [["anomaly: Compute", 0.0, "dock"], ["anomaly: live relabelling", 0.1, "viewer"],
                ["anomaly: Calibrate Auto", 0.0, "dock"], ["anomaly: Compute", 0.0, "exit"]],
    "latent explorer": [["latent: model loading", 0.0, "viewer"], ["latent: Encode", 0.0, "dock"],
                        ["latent: slider decoding", 0.1, "viewer"], ["latent: Sample volume", 0.0, "exit"]],
    "two docks": [["mental map: Mean on two images + anomaly map", 0.0, "exit"]],
    "segmenter": [["segmenter: Train", 0.0, "dock"], ["segmenter: Predict", 0.1, "viewer"],
                  ["segmenter: Train", 0.5, "exit"]],
}

# a worker still running when Python exits: PyQt destroys its signals object at exit, the
# worker's next emit raises inside QRunnable.run, and PyQt aborts (what users saw)
EXIT_SCRIPT = """
import atexit, sys, threading, time
release = threading.Event()
def last():  # registered before PyQt: runs after PyQt destroyed its objects
    release.set()
    time.sleep(0.5)
atexit.register(last)
from napari.qt import get_qapp
from napari.qt.threading import create_worker
from napari_mentalmap.widgets import _threads
app = get_qapp()
if sys.argv[1] == "napari":  # napari's own worker, and no wait at exit
    atexit.unregister(_threads.stop_all_workers)
    worker = create_worker(release.wait, 2.0, _start_thread=False, _ignore_errors=True)
else:
    if sys.argv[1] == "no-exit-wait":
        atexit.unregister(_threads.stop_all_workers)
    worker = _threads.new_worker(release.wait, 2.0)
worker.start()
end = time.perf_counter() + 0.2
while time.perf_counter() < end:
    app.processEvents()
    time.sleep(0.01)
"""


def _env(window: bool = False) -> dict[str, str]:
    """The child's environment; ``window``: a real window when there is a display (xvfb), as
    users have (Qt's offscreen platform sometimes gets no OpenGL context for napari's canvas)."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1", "OMP_NUM_THREADS": "1"}
    if window and env.get("DISPLAY"):
        env.pop("QT_QPA_PLATFORM", None)
    else:
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
    return env


def _clean(done: subprocess.CompletedProcess) -> bool:
    return done.returncode == 0 and not any(bad in done.stderr for bad in BAD)


@pytest.mark.parametrize("worker", ["napari", "plugin", "no-exit-wait"])
def test_a_worker_running_at_exit_aborts_only_without_the_plugin_guard(worker: str) -> None:
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, worker], capture_output=True, text=True,
                          timeout=120, env=_env())
    if worker == "napari":  # the harness sees the abort users saw
        assert done.returncode != 0 and "has been deleted" in done.stderr and "Fatal Python error" in done.stderr
    else:  # the plugin's workers: waited for at exit, and never abort even without that wait
        assert _clean(done), done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("group", list(GROUPS))
def test_closing_during_every_job_ends_python_cleanly(group: str, tiny_bruno_weights, tmp_path) -> None:
    from test_slice_vae import write_tiny_weights

    from napari_mentalmap.inference.anomaly_methods import INTENSITY_METHOD

    command = [sys.executable, str(BENCH), "--child", "--cycles", json.dumps(GROUPS[group]), "--threads=1",
               "--show" if os.environ.get("DISPLAY") else "--no-show",
               f"--bruno-weights={tiny_bruno_weights}", f"--vae-weights={write_tiny_weights(tmp_path / 'vae.pt')}",
               f"--method={INTENSITY_METHOD}"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env(window=True), cwd=ROOT)
    assert _clean(done), f"exit code {done.returncode}\n{done.stderr[-3000:]}"
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["job"] for r in records] == [cycle[0] for cycle in GROUPS[group]]
    assert not records[-1]["done"], "the last job should still run when Python exits"
    assert time.perf_counter() - started < 300


def test_a_job_raising_runtime_error_is_reported_and_frees_the_dock(qtbot, mental_map_dock, errors,
                                                                   monkeypatch) -> None:
    """napari's generator worker ends silently on a RuntimeError (torch's usual error type): the
    runner re-raises it as another type, so the dock reports it and is usable again."""
    from napari_mentalmap.widgets import mental_map as mental_map_module

    def failing(*args, **kwargs):
        yield 0, 2, "working"
        raise RuntimeError("CUDA out of memory (simulated)")

    dock = mental_map_dock
    monkeypatch.setattr(mental_map_module, "mental_map_job", failing)
    assert dock.run("mean") is not None
    qtbot.waitUntil(lambda: not dock.busy, timeout=30_000)
    assert dock.runner.stats.outcome == "failed" and dock.runner.stats.error.startswith("RuntimeError")
    assert "out of memory (simulated)" in dock.status.text() and any("out of memory" in e for e in errors)
    assert dock.mean_button.isEnabled()


def test_a_function_worker_stopped_before_it_starts_never_runs(qtbot) -> None:
    from napari_mentalmap.widgets._threads import new_worker

    calls: list[int] = []
    worker = new_worker(calls.append, 1)
    returned: list[object] = []
    worker.returned.connect(returned.append)
    worker.quit()
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        worker.start()
    assert calls == [] and returned == []


def test_a_job_cancelled_inside_inference_mode_leaves_its_thread_as_it_was(qtbot) -> None:
    """Cancel inside ``with torch.inference_mode():`` (an anomaly map, a prediction): the worker
    closes the job in its own thread, so that thread leaves inference mode before it takes the
    next job (a training there failed with "does not require grad")."""
    import threading

    import torch

    from napari_mentalmap.widgets._threads import new_worker

    seen: list[tuple[int, bool]] = []
    closed: list[tuple[int, bool]] = []

    def predicting():
        try:
            with torch.inference_mode():
                for i in range(10_000):
                    seen.append((threading.get_ident(), torch.is_inference_mode_enabled()))
                    time.sleep(0.005)
                    yield i
        finally:
            closed.append((threading.get_ident(), torch.is_inference_mode_enabled()))

    worker = new_worker(predicting)
    worker.start()
    qtbot.waitUntil(lambda: len(seen) > 5, timeout=10_000)
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        worker.quit()
    assert seen[-1][1] is True and seen[-1][0] != threading.get_ident()
    assert closed == [(seen[-1][0], False)]  # closed in the worker's thread, inference mode left


def test_cancel_frees_the_dock_at_once_during_a_long_step(qtbot, mental_map_dock, errors, monkeypatch) -> None:
    """Cancel does not wait for the running step (seconds on a loaded machine): the dock is free
    at once, the worker stops at the job's next report, and nothing of it is ever shown."""
    import threading

    from napari_mentalmap.widgets import mental_map as mental_map_module

    step_started, release = threading.Event(), threading.Event()

    def long_step(*args, **kwargs):
        yield 0, 2, "working"
        step_started.set()
        release.wait(20)  # a step that does not report progress
        yield 1, 2, "still working"
        raise AssertionError("the cancelled job should have stopped at its report")

    dock = mental_map_dock
    names = [layer.name for layer in dock.viewer.layers]
    monkeypatch.setattr(mental_map_module, "mental_map_job", long_step)
    worker = dock.run("mean")
    qtbot.waitUntil(step_started.is_set, timeout=30_000)
    clicked = time.perf_counter()
    dock.cancel_button.click()
    assert not dock.busy and time.perf_counter() - clicked < 0.5
    assert "cancelled, no layers added" in dock.status.text() and dock.mean_button.isEnabled()
    assert dock.runner.stopping == [worker] and worker.abort_requested
    release.set()
    qtbot.waitUntil(lambda: not dock.runner.stopping, timeout=30_000)
    qtbot.wait(100)
    assert [layer.name for layer in dock.viewer.layers] == names and not errors
    assert dock.runner.stats.outcome == "cancelled"


def test_the_anomaly_dock_job_reports_every_few_slices_with_the_same_map() -> None:
    """Cancel stops a job at its next report: the dock's DAE job reconstructs 4 slices between
    two reports (16 took 0.9-1.4 s on 2 CPU threads) and gives the CLI's map."""
    import numpy as np

    from napari_mentalmap.inference.anomaly import gated_intensity_map, load_anomaly_model
    from napari_mentalmap.inference.anomaly_jobs import DOCK_BATCH_SIZE, anomaly_job
    from napari_mentalmap.inference.anomaly_methods import GATED_METHOD
    from napari_mentalmap.inference.jobs import run_to_completion

    rng = np.random.default_rng(1)
    image = np.zeros((24, 40, 36), np.float32)
    image[3:21, 5:35, 5:31] = 100 + 8 * rng.standard_normal((18, 30, 26))
    image[10:14, 18:23, 15:20] += 70
    reports: list = []
    result, _ = run_to_completion(anomaly_job(image, (2.0, 2.0, 2.0), GATED_METHOD, "cpu"), reports.append)
    batches = [message for _, _, message in reports if message.startswith("reconstructing slices")]
    n_slices = load_anomaly_model("dae2d").grid.n_poses
    assert DOCK_BATCH_SIZE == 4 and len(batches) == -(-n_slices // DOCK_BATCH_SIZE)
    reference = run_to_completion(gated_intensity_map(image, (2.0, 2.0, 2.0), load_anomaly_model("dae2d"), batch_size=16))
    np.testing.assert_allclose(result.anomaly, reference.anomaly, atol=1e-5)
