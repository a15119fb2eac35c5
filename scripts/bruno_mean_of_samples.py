"""Validation only: the BRUNO latent-mean image against the average of K posterior samples
(docs/results/bruno.md, "Mean of more samples").

    MENTALMAP_CACHE=/work/cache .venv/bin/python scripts/bruno_mean_of_samples.py

The 9 ``t1_val`` subjects on the model grid, contexts evenly spaced, 64 samples (seed 0); SSIM /
CC on the non-context poses, as ``mentalmap eval bruno`` scores them. Prints a Markdown table.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_mentalmap.data.subjects import load_split
from napari_mentalmap.evaluation.bruno import linear_interpolation
from napari_mentalmap.inference.mental_map import evenly_spaced, load_bruno
from napari_mentalmap.io.preprocess import GridSpec
from napari_mentalmap.metrics import slice_cc, slice_ssim

SAMPLE_COUNTS = (8, 32, 64)


def main() -> None:
    torch.set_num_threads(2)
    model, _ = load_bruno(None, torch.device("cpu"))
    subjects = load_split("t1_val", "t1", GridSpec(**model.config.grid))
    poses = torch.arange(model.n_poses, dtype=torch.float32)
    columns = ["latent mean", *(f"{k}-sample average" for k in SAMPLE_COUNTS), "interpolation"]
    print("| contexts | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for count in (1, 3, 5, 9):
        scores: dict[str, list[tuple[float, float]]] = {name: [] for name in columns}
        for subject in subjects:
            truth = subject.image
            contexts = evenly_spaced(count, len(truth))
            queries = [p for p in range(len(truth)) if p not in contexts]
            with torch.inference_mode():
                posterior = model.posterior(torch.from_numpy(truth[contexts]),
                                            torch.tensor(contexts, dtype=torch.float32), poses)
                latent_mean = posterior.mean_image().numpy()
                samples = posterior.samples(max(SAMPLE_COUNTS), generator=torch.Generator().manual_seed(0)).numpy()
            generated = {"latent mean": latent_mean, "interpolation": linear_interpolation(truth, contexts)}
            generated.update({f"{k}-sample average": samples[:k].mean(0) for k in SAMPLE_COUNTS})
            for name, volume in generated.items():
                scores[name].append((np.mean([slice_ssim(volume[p], truth[p]) for p in queries]),
                                     np.mean([slice_cc(volume[p], truth[p]) for p in queries])))
        cells = [f"{np.mean([s for s, _ in scores[n]]):.3f} / {np.mean([c for _, c in scores[n]]):.3f}"
                 for n in columns]
        print(f"| {count} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
