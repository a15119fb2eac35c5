"""Slider decode latency of the latent explorer (target: <= 50 ms per update on CPU).

    .venv/bin/python benchmarks/latent_bench.py [--weights PATH] [--n 200] [--threads 1] [--widget]

Prints a Markdown table: the model-level update (principal-direction walk + decode of one
64x64 slice) and, with ``--widget``, the full widget update (slider value -> napari layer
data set), headless (set ``QT_QPA_PLATFORM=offscreen``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _stats(times: list[float]) -> str:
    ms = np.asarray(times) * 1000
    return f"{np.median(ms):.1f} | {np.percentile(ms, 95):.1f} | {ms.max():.1f}"


def model_latency(weights, n: int) -> list[float]:
    from napari_mentalmap.inference import latent

    bundle = latent.load_slice_vae(weights, device="cpu")
    pose = bundle.n_poses // 2
    base = bundle.train_latents[0, pose].numpy()
    directions, stds = latent.principal_directions(bundle, pose, 4)
    latent.decode(bundle, base)  # warm-up
    times = []
    for i in range(n):
        steps = np.array([np.sin(i / 10) * 3, 0, 0, 0], np.float32)
        started = time.perf_counter()
        latent.decode(bundle, latent.walk(base, directions, stds, steps))
        times.append(time.perf_counter() - started)
    return times


def widget_latency(weights, n: int, show: bool = False) -> list[float]:
    import napari

    from napari_mentalmap.widgets.latent_explorer import LatentExplorerWidget

    viewer = napari.Viewer(show=show)
    widget = LatentExplorerWidget(viewer, weights=weights)
    app = napari.qt.get_qapp()
    while widget.loading:  # the model loads in a worker thread
        app.processEvents()
        time.sleep(0.01)
    widget.decode_training_point(len(widget.embedding.points) // 2)
    times = []
    for i in range(n):
        started = time.perf_counter()
        widget.sliders[i % 4].setValue(int(np.sin(i / 7) * 30))
        app.processEvents()
        times.append(time.perf_counter() - started)
    viewer.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--widget", action="store_true", help="also time the napari widget update")
    parser.add_argument("--show", action="store_true", help="show the viewer window (real GL redraws)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, {args.n} updates\n")
    print("| update | median ms | p95 ms | max ms |")
    print("|---|---|---|---|")
    print(f"| walk + decode (model) | {_stats(model_latency(args.weights, args.n))} |")
    if args.widget:
        label = "shown window" if args.show else "hidden window"
        print(f"| slider -> napari layer (widget, {label}) | {_stats(widget_latency(args.weights, args.n, args.show))} |")


if __name__ == "__main__":
    main()
