"""The default's samples and std as the dock shows them, on the input's own voxel grid.

Per subject and context count (intensities on the model's [0, 1] scale, non-context slices
inside the model's slice range, inside the brain where a mask applies):

* ``coverage90`` — how often the truth lies in mean +- 1.645 std (the std layer's 90 % interval),
  where the std is modelled (not NaN);
* ``std_error_spearman`` — Spearman correlation of the std with |mean - truth|;
* ``neighbour_ssim`` — SSIM of neighbouring slices of the first sample (over the model's range);
* ``spectrum_distance`` — as on the model grid, on centred square crops of the slices;
* ``realism`` — the first sample sent to the model grid and scored as there;
* coherence — lag-1 autocorrelation of (sample - mean) next to (truth - mean).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from ..io.preprocess import resample_to_grid
from ..metrics import lag1_autocorrelation
from .bruno_samples import spectrum_distance
from .slice_vae import neighbour_ssim

Z_90 = 1.645
SAMPLE_METHOD = "BRUNO sample (default)"


def _square(slices: np.ndarray) -> np.ndarray:
    """Centred square crops (the spectrum is radial)."""
    size = min(slices.shape[-2:])
    top, left = (slices.shape[-2] - size) // 2, (slices.shape[-1] - size) // 2
    return slices[..., top:top + size, left:left + size]


def score_samples(shown, real: np.ndarray, mask: np.ndarray, queries: list[int], metrics: dict) -> None:
    """Append one subject's values to ``metrics`` (lists per key). ``shown`` is the
    :class:`~napari_mentalmap.inference.mental_map.InputGridMaps` the dock shows, ``real`` the
    volume on the [0, 1] scale."""
    result = shown.result
    low, high = result.intensity_range
    scale = max(high - low, 1e-6)
    mean = (shown.mean - low) / scale
    std = shown.std / scale
    samples = (shown.samples - low) / scale if shown.samples is not None else None
    brain = mask[queries]
    scored = brain & np.isfinite(std[queries])  # NaN: not modelled (the brain's softened rim)
    error = np.abs(mean[queries] - real[queries])[scored]
    spread = std[queries][scored]
    metrics.setdefault("coverage90", []).append(float(np.mean(error <= Z_90 * spread)))
    metrics.setdefault("std_error_spearman", []).append(float(spearmanr(spread, error).statistic))
    if samples is None:
        return
    first, last = result.mapping.covered_slices()
    clipped = np.clip(samples, 0.0, 1.0)
    metrics.setdefault("neighbour_ssim", []).append(neighbour_ssim(clipped[0, first:last + 1]))
    metrics.setdefault("real_neighbour_ssim", []).append(neighbour_ssim(np.clip(real[first:last + 1], 0, 1)))
    metrics.setdefault("spectrum_distance", []).append(
        spectrum_distance(_square(clipped[:3, queries]).reshape(-1, *_square(real[queries[:1]]).shape[1:]),
                          _square(real[queries])))
    metrics.setdefault("sample_ac", []).append(float(np.mean(
        [lag1_autocorrelation(s[queries] - mean[queries], brain) for s in samples[:3]])))
    metrics.setdefault("truth_ac", []).append(lag1_autocorrelation(real[queries] - mean[queries], brain))
    grid_mask = resample_to_grid(mask.astype(np.float32), result.mapping) > 0.5
    metrics.setdefault("sample_grid", []).append(np.clip(resample_to_grid(clipped[0] * mask, result.mapping), 0, 1)
                                                 * grid_mask)
    metrics.setdefault("real_grid", []).append(np.clip(resample_to_grid(real * mask, result.mapping), 0, 1)
                                               * grid_mask)


def rows_of(per_count: dict[int, dict], dataset: str, segnet=None, references: np.ndarray | None = None
            ) -> tuple[list[dict], list[dict]]:
    """Rows of ``samples.csv`` and of the coherence table for one dataset (a ``real`` row first)."""
    from .bruno_samples import _realism

    def realism(volumes: list[np.ndarray]) -> float | None:
        return _realism(np.stack(volumes), segnet, references) if segnet is not None and volumes else None

    rows, coherence = [], []
    first = next((m for m in per_count.values() if m.get("real_grid")), None)
    if first is not None:
        rows.append({"dataset": dataset, "method": "real", "n_contexts": "", "realism": realism(first["real_grid"]),
                     "neighbour_ssim": float(np.mean(first["real_neighbour_ssim"]))})
    for count, metrics in sorted(per_count.items()):
        if not metrics:
            continue
        row = {"dataset": dataset, "method": SAMPLE_METHOD, "n_contexts": count,
               "realism": realism(metrics.get("sample_grid", []))}
        for key in ("neighbour_ssim", "spectrum_distance", "coverage90", "std_error_spearman"):
            if metrics.get(key):
                row[key] = float(np.mean(metrics[key]))
        rows.append(row)
        if metrics.get("sample_ac"):
            coherence.append({"dataset": dataset, "method": SAMPLE_METHOD, "n_contexts": count,
                              "sample_ac": float(np.mean(metrics["sample_ac"])),
                              "truth_ac": float(np.mean(metrics["truth_ac"]))})
    return rows, coherence
