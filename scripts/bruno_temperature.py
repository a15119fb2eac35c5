"""Calibration of the mental map's samples against the sampling temperature, on validation only
(docs/results/bruno.md, "Sampling temperature").

    MENTALMAP_CACHE=/work/cache .venv/bin/python scripts/bruno_temperature.py [0.8,1.0,1.2,1.4] [WEIGHTS]

For the shipped BRUNO weights (or WEIGHTS) and each temperature (the dock's *temperature*, default 1.0): on
the 9 ``t1_val`` subjects (model grid, contexts evenly spaced, 20 samples, seed 0) the
``coverage90`` of the per-voxel 5-95 % sample interval, the ``std_error_spearman``, the
neighbour-slice SSIM of one sample and the spectrum distance of three samples, exactly as
``evaluation.bruno_samples.sample_rows`` computes them for the test tables. Prints a Markdown
table; the test sets are not read.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from scipy.stats import spearmanr

from napari_mentalmap.data.subjects import load_split
from napari_mentalmap.evaluation.bruno_samples import spectrum_distance
from napari_mentalmap.evaluation.slice_vae import neighbour_ssim
from napari_mentalmap.inference.mental_map import evenly_spaced, load_bruno
from napari_mentalmap.io.preprocess import GridSpec

COUNTS = (1, 3, 5, 9)
N_SAMPLES = 20


def main() -> None:
    temperatures = [float(t) for t in (sys.argv[1] if len(sys.argv) > 1 else "0.8,1.0,1.2,1.4").split(",")]
    torch.set_num_threads(2)
    model, _ = load_bruno(sys.argv[2] if len(sys.argv) > 2 else None, torch.device("cpu"))
    subjects = load_split("t1_val", "t1", GridSpec(**model.config.grid))
    poses = torch.arange(model.n_poses, dtype=torch.float32)
    print("| temperature | contexts | coverage90 | std_error_spearman | neighbour SSIM (real) | spectrum distance |")
    print("|---|---|---|---|---|---|")
    for count in COUNTS:
        values: dict[float, dict[str, list[float]]] = {t: {} for t in temperatures}
        real_ssim = []
        for subject in subjects:
            truth = subject.image
            contexts = evenly_spaced(count, len(truth))
            queries = [p for p in range(len(truth)) if p not in contexts]
            brain = subject.mask[queries]
            real_ssim.append(neighbour_ssim(truth))
            with torch.inference_mode():
                posterior = model.posterior(torch.from_numpy(truth[contexts]),
                                            torch.tensor(contexts, dtype=torch.float32), poses)
                mean = posterior.mean_image().numpy()
                for temperature in temperatures:
                    generator = torch.Generator().manual_seed(0)
                    samples = posterior.samples(N_SAMPLES, temperature=temperature, generator=generator).numpy()
                    samples[:, contexts] = truth[contexts]
                    low, high = np.percentile(samples[:, queries], [5, 95], axis=0)
                    inside = (truth[queries] >= low) & (truth[queries] <= high)
                    std = samples[:, queries].std(0)[brain]
                    error = np.abs(mean[queries] - truth[queries])[brain]
                    found = values[temperature]
                    found.setdefault("coverage90", []).append(float(inside[brain].mean()))
                    found.setdefault("spearman", []).append(float(spearmanr(std, error).statistic))
                    found.setdefault("ssim", []).append(neighbour_ssim(samples[0]))
                    found.setdefault("spectrum", []).append(spectrum_distance(
                        samples[:3, queries].reshape(-1, *truth.shape[1:]), truth[queries]))
        for temperature in temperatures:
            v = {k: float(np.mean(x)) for k, x in values[temperature].items()}
            print(f"| {temperature} | {count} | {v['coverage90']:.3f} | {v['spearman']:.3f} | "
                  f"{v['ssim']:.3f} ({np.mean(real_ssim):.3f}) | {v['spectrum']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
