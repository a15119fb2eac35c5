"""Speed of the anomaly maps: map time per model and threshold-slider update time.

    .venv/bin/python benchmarks/uad_bench.py [--threads 1] [--widget]

Volumes: open_ms patient07 at 1 mm (182 x 218 x 182, from ../shared/data) and the
shipped 2 mm sample. Map time = automatic brain mask + model grid + VAE/DAE + back to the
input grid, as the widget runs it (model loading excluded, reported apart; median of 5 runs after
one untimed warm-up run); the same for the dock's default (the DAE-gated intensity) and the
intensity method. Slider time
= ``LabelUpdater.update`` (threshold + components under 10 voxels removed) over 15
thresholds swept 3 times (median, 95th percentile and worst of the 45 updates); with ``--widget`` also the whole widget update (Labels layer refresh, Dice)
in an offscreen napari viewer. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from napari_mentalmap._sample_data import SAMPLE_FLAIR, SAMPLE_LESIONS
from napari_mentalmap.data.subjects import data_root
from napari_mentalmap.inference.anomaly import (
    ANOMALY_KINDS,
    GATED_METHOD,
    GATED_MODEL,
    INTENSITY_METHOD,
    LabelUpdater,
    anomaly_map,
    gated_intensity_map,
    intensity_anomaly_map,
    load_anomaly_model,
    run_job,
    weights_path,
)
from napari_mentalmap.io.nifti import read_volume


def timed(function, repeats: int = 3, warm_up: bool = False) -> tuple[float, object]:
    """Median wall time (s) of ``repeats`` calls and the last result (after one untimed call
    with ``warm_up``: the first call of a process pays one-off costs, reported apart)."""
    times, result = [], None
    if warm_up:
        function()
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


SWEEPS = 3


def slider_ms(anomaly: np.ndarray) -> tuple[float, float, float]:
    """Median, 95th percentile and worst ms of one threshold update: 15 thresholds spread
    over the map's range, swept up and down ``SWEEPS`` times (45 updates)."""
    updater = LabelUpdater(anomaly)
    values = np.linspace(0.05, float(anomaly.max()) * 0.9, 15)
    times = []
    for sweep in range(SWEEPS):
        for threshold in values if sweep % 2 == 0 else values[::-1]:
            started = time.perf_counter()
            updater.update(float(threshold), 10)
            times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times), float(np.percentile(times, 95)), max(times)


def widget_ms(anomaly: np.ndarray, source: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Median, 95th percentile and worst ms of the widget's whole slider update (labels +
    layer refresh + Dice), same sweeps as ``slider_ms``."""
    import napari

    from napari_mentalmap.inference.anomaly import AnomalyResult
    from napari_mentalmap.widgets.anomaly import AnomalyWidget

    viewer = napari.Viewer(show=False)
    layer = viewer.add_image(source, name="FLAIR")
    viewer.add_labels(truth.astype(np.uint8), name="truth")
    widget = AnomalyWidget(viewer)
    result = AnomalyResult(anomaly, anomaly > 0, None, None)
    widget.show_result(result, 0.3, layer)
    widget.truth_combo.setCurrentText("truth")
    values = np.linspace(0.05, float(anomaly.max()) * 0.9, 15)
    times = []
    for sweep in range(SWEEPS):
        for threshold in values if sweep % 2 == 0 else values[::-1]:
            widget.threshold_slider.setValue(float(threshold))
            times.append(widget.last_update_ms)
    viewer.close()
    return statistics.median(times), float(np.percentile(times, 95)), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--widget", action="store_true", help="also time the napari widget update")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    volumes = {
        "patient07 1 mm": (read_volume(data_root() / "open_ms" / "patient07" / "FLAIR.nii.gz"),
                           read_volume(data_root() / "open_ms" / "patient07" / "lesion_consensus.nii.gz",
                                       as_labels=True)),
        "sample 2 mm": (read_volume(SAMPLE_FLAIR), read_volume(SAMPLE_LESIONS, as_labels=True)),
    }
    print(f"torch threads: {torch.get_num_threads()}\n")
    header = "| model | volume | shape | load (s) | anomaly map (s) | slider update (ms, median / p95 / worst) |"
    if args.widget:
        header += " widget update (ms, median / p95 / worst) |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    jobs = {GATED_METHOD: (GATED_MODEL, gated_intensity_map), INTENSITY_METHOD: (None, None)}
    jobs.update({kind: (kind, anomaly_map) for kind in ANOMALY_KINDS})  # the VAEs and the denoising autoencoder
    for kind, (weights, job) in jobs.items():
        if weights is not None and not weights_path(weights).exists():
            continue
        load_seconds, model = timed(lambda w=weights: w and load_anomaly_model(w, "cpu"), repeats=1)
        for name, (volume, truth) in volumes.items():
            if model is None:
                run = lambda v=volume: run_job(intensity_anomaly_map(v.data, v.spacing, device="cpu"))  # noqa: E731
            else:
                run = lambda v=volume, m=model, j=job: run_job(j(v.data, v.spacing, m))  # noqa: E731
            seconds, result = timed(run, repeats=5, warm_up=True)
            line = (f"| {kind} | {name} | {'x'.join(map(str, volume.data.shape))} | {load_seconds:.2f} | "
                    f"{seconds:.2f} | {'{:.1f} / {:.1f} / {:.1f}'.format(*slider_ms(result.anomaly))} |")
            if args.widget:
                line += " {:.1f} / {:.1f} / {:.1f} |".format(*widget_ms(result.anomaly, volume.data, truth.data > 0))
            print(line, flush=True)


if __name__ == "__main__":
    main()
