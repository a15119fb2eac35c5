"""Validation only: does adding the acquired slices' fine detail to BRUNO's upsampled mean
help on the input grid?

    MENTALMAP_CACHE=/work/cache .venv/bin/python scripts/bruno_context_detail.py

The 9 ``t1_val`` subjects, 1/3/5/9 evenly spaced contexts, non-context input slices; prints
the mean SSIM / CC of the mean, mean + detail, mean + 0.5 detail and linear interpolation
(docs/results/bruno.md). Not shipped: see there.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_mentalmap.data.splits import SPLITS
from napari_mentalmap.data.subjects import subject_files
from napari_mentalmap.evaluation.bruno import linear_interpolation
from napari_mentalmap.inference.brain import auto_brain_mask
from napari_mentalmap.inference.jobs import run_to_completion
from napari_mentalmap.inference.mental_map import (
    evenly_spaced,
    hallucinate,
    load_bruno,
    on_input_grid,
)
from napari_mentalmap.io.nifti import read_volume
from napari_mentalmap.io.preprocess import GridSpec, plan_grid, resample_from_grid, resample_to_grid
from napari_mentalmap.metrics import slice_cc, slice_ssim

COUNTS = (1, 3, 5, 9)


def unit(volume: np.ndarray, intensity_range: tuple[float, float]) -> np.ndarray:
    low, high = intensity_range
    return np.clip((volume - low) / max(high - low, 1e-6), 0.0, 1.0)


def main() -> None:
    torch.set_num_threads(2)
    model, _ = load_bruno(None, "cpu")
    spec = GridSpec(**model.config.grid)
    scores: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for subject in SPLITS["t1_val"]:
        volume = read_volume(subject_files(subject, "t1")["image"])
        data = np.asarray(volume.data, np.float32)
        mask = auto_brain_mask(data, volume.spacing)
        mapping = plan_grid(mask, volume.spacing, spec)
        for count in COUNTS:
            contexts = sorted({mapping.pose_to_slice(p) for p in evenly_spaced(count, mapping.grid_shape[0])})
            result = run_to_completion(hallucinate(data, volume.spacing, contexts, device="cpu", mask=mask))
            first, last = result.mapping.covered_slices()
            queries = [s for s in range(first, last + 1) if s not in contexts]
            mean = on_input_grid(result, data, keep_contexts=True).mean
            interp = linear_interpolation(data, contexts)
            smooth = resample_from_grid(resample_to_grid(interp, result.mapping), result.mapping, fill_value=0.0)
            detail = np.nan_to_num(interp - smooth)
            inside = mean > 0
            predictions = {"mean": mean, "mean + detail": np.where(inside, mean + detail, mean),
                           "mean + 0.5 detail": np.where(inside, mean + 0.5 * detail, mean),
                           "linear interpolation": interp}
            real = unit(data, result.intensity_range)
            for name, prediction in predictions.items():
                generated = unit(np.asarray(prediction, np.float32), result.intensity_range)
                scores.setdefault((name, count), []).append(
                    (float(np.mean([slice_ssim(generated[s], real[s]) for s in queries])),
                     float(np.mean([slice_cc(generated[s], real[s]) for s in queries]))))
        print(subject, flush=True)
    names = list(dict.fromkeys(name for name, _ in scores))
    print("| contexts | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for count in COUNTS:
        cells = [" / ".join(f"{v:.3f}" for v in np.mean(scores[(name, count)], axis=0)) for name in names]
        print(f"| {count} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
