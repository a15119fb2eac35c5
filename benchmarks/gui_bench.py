"""GUI responsiveness of the mental map widget during a BRUNO job (prints a Markdown table).

A QTimer pings every ``--ping-ms`` while the widget runs a ``--samples`` sample job on the
sample T1 (5 evenly spaced contexts) in its worker thread; the longest gap between two
pings is how long the Qt event loop was blocked (the GUI stays fluid below ~100 ms). The
same job is then timed outside any worker, in the main thread, and torch's thread count is
reported inside and outside the worker.

    QT_QPA_PLATFORM=offscreen xvfb-run -a .venv/bin/python benchmarks/gui_bench.py [--weights PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from napari_mentalmap._sample_data import SAMPLE_T1
from napari_mentalmap.inference.mental_map import (
    DEFAULT_WEIGHTS,
    hallucinate,
    load_bruno,
    run_to_completion,
)

FALLBACK_WEIGHTS = (Path("runs/bruno_pose/best.pt"), Path("runs/bruno_pose/last.pt"))


def default_weights() -> Path:
    """The shipped weights, else the training run's best/last checkpoint."""
    for path in (DEFAULT_WEIGHTS, *FALLBACK_WEIGHTS):
        if path.exists():
            return path
    raise SystemExit(f"no BRUNO weights: {DEFAULT_WEIGHTS} is absent; pass --weights")


def run_in_widget(weights: Path, n_samples: int, ping_ms: int, device: str, runs: int = 2) -> list[dict]:
    """Run the job ``runs`` times through the widget's worker while pinging the event loop.

    The first run creates the result layers, later runs update them in place.
    """
    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    from napari_mentalmap.widgets.mental_map import MentalMapWidget

    viewer = napari.Viewer(show=True)
    viewer.open(str(SAMPLE_T1), plugin="napari-mentalmap", name="sample T1")
    widget = MentalMapWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.weights_edit.setText(str(weights))
    widget.device_combo.setCurrentText(device)
    widget.n_samples.setValue(n_samples)
    widget.contexts.evenly_spaced(5)
    app = napari.qt.get_qapp()
    app.processEvents()
    measured = []
    for _ in range(runs):
        ticks: list[float] = []
        loop = QEventLoop()

        def ping(ticks: list[float] = ticks, loop: QEventLoop = loop) -> None:
            ticks.append(time.perf_counter())
            if not widget.busy:
                loop.quit()

        timer = QTimer()
        timer.setInterval(ping_ms)
        timer.timeout.connect(ping)
        started = time.perf_counter()
        worker = widget.run("samples")
        events: list[tuple[float, str]] = [(started, "click")]
        worker.yielded.connect(lambda progress, events=events: events.append((time.perf_counter(), progress[2])))
        worker.returned.connect(lambda _, events=events: events.append((time.perf_counter(), "showing layers")))
        timer.start()
        loop.exec()
        ended = time.perf_counter()
        timer.stop()
        stats = widget.runner.stats
        points = [started, *[t for t in ticks if t <= ended], ended]
        gaps = np.diff(points) * 1000
        worst = int(gaps.argmax())
        returned_at = next((t for t, message in events if message == "showing layers"), ended)
        during_job = gaps[: max(1, int(np.searchsorted(points, returned_at)) - 1)]
        # the last event before the longest gap ended tells which phase blocked the GUI
        phase = [message for t, message in events if t <= points[worst + 1]][-1]
        measured.append({
            "max_gap_ms": float(gaps.max()),
            "max_gap_at_s": points[worst] - started,
            "max_gap_phase": phase,
            "max_gap_job_ms": float(during_job.max()),
            "p99_gap_ms": float(np.percentile(gaps, 99)),
            "worker_s": stats.seconds,
            "wall_s": ended - started,
            "threads_found": stats.torch_threads_found,
            "threads_used": stats.torch_threads_used,
            "outcome": stats.outcome,
        })
    viewer.close()
    return measured


def run_outside(weights: Path, n_samples: int, device: str) -> dict:
    """The same job in the main thread, no GUI."""
    from napari_mentalmap._reader import read_nifti
    from napari_mentalmap.widgets.context_slices import covered_range

    data, kwargs, _ = read_nifti(str(SAMPLE_T1))[0]
    first, last = covered_range(data, kwargs["scale"])
    contexts = sorted({int(round(v)) for v in np.linspace(first, last, 5)})
    started = time.perf_counter()
    run_to_completion(hallucinate(data, kwargs["scale"], contexts, n_samples=n_samples, device=device,
                                  weights=weights))
    return {"seconds": time.perf_counter() - started, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--ping-ms", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    weights = args.weights or default_weights()
    load_bruno(weights, args.device)  # both runs use the cached model

    run_outside(weights, 1, args.device)  # warm-up: first forward passes in a process are slow
    before = run_outside(weights, args.samples, args.device)  # outside runs before and after: load drifts
    runs = run_in_widget(weights, args.samples, args.ping_ms, args.device)
    after = run_outside(weights, args.samples, args.device)
    outside = {"seconds": min(before["seconds"], after["seconds"]), "threads": after["threads"],
               "both": f"{before['seconds']:.1f} / {after['seconds']:.1f}"}
    print(f"BRUNO {args.samples}-sample job on the sample T1 (5 contexts), weights {weights}, "
          f"device {args.device}, {torch.get_num_threads()} torch threads in the main thread\n")
    print("| measurement | 1st run (creates layers) | 2nd run (updates layers) |")
    print("|---|---|---|")

    def row(label: str, fmt) -> None:
        print(f"| {label} | " + " | ".join(fmt(run) for run in runs) + " |")

    row(f"longest event-loop gap while the worker computes (QTimer {args.ping_ms} ms)",
        lambda r: f"{r['max_gap_job_ms']:.0f} ms")
    row("longest gap overall, incl. showing the result layers", lambda r: f"{r['max_gap_ms']:.0f} ms")
    row("... it began at (phase)", lambda r: f"{r['max_gap_at_s']:.1f} s ('{r['max_gap_phase']}')")
    row("99th percentile gap", lambda r: f"{r['p99_gap_ms']:.0f} ms")
    row("job time in the worker thread", lambda r: f"{r['worker_s']:.1f} s")
    row("wall time click -> layers shown", lambda r: f"{r['wall_s']:.1f} s")
    row("same job outside (main thread, no GUI; before / after)", lambda r: f"{outside['both']} s")
    row("worker / fastest outside", lambda r: f"{r['worker_s'] / outside['seconds']:.2f}")
    row("torch threads outside / in worker (found -> used)",
        lambda r: f"{outside['threads']} / {r['threads_found']} -> {r['threads_used']}")
    row("job outcome", lambda r: r["outcome"])
    fastest = min(r["worker_s"] for r in runs)
    print(f"\nfastest run in the worker / fastest outside: {fastest:.1f} s / {outside['seconds']:.1f} s "
          f"= {fastest / outside['seconds']:.2f} (single runs on a shared CPU vary by several x; compare minima)")


if __name__ == "__main__":
    main()
