"""What the samples of a mental map are worth: realism, texture, coherence and calibration.

On the model grid, per test subject and context count (0 = prior samples):

* ``realism`` — the latent explorer's score: tissue Dice of a segmented sample volume
  against the best-matching training subject (``evaluation.slice_vae.realism_score``);
* ``neighbour_ssim`` — SSIM of neighbouring slices of a sample volume;
* ``spectrum_distance`` — mean absolute difference of the log radially averaged power
  spectra of sample slices and the subject's real slices (pixel noise fails it);
* ``coverage90`` — how often the truth lies in the per-voxel 5-95 % interval of the samples
  (non-context poses, inside the brain): 0.9 for a calibrated posterior;
* ``std_error_spearman`` — Spearman correlation of the samples' std with |mean - truth|;
* coherence: lag-1 spatial autocorrelation of (sample - mean) next to (truth - mean).

The ``real`` row scores the real test volumes (the ceiling).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ..data.subjects import SubjectGrid
from ..inference.mental_map import evenly_spaced
from ..metrics import lag1_autocorrelation
from .slice_vae import neighbour_ssim, realism_score

SAMPLE_COLUMNS = ("dataset", "method", "n_contexts", "realism", "neighbour_ssim", "spectrum_distance",
                  "coverage90", "std_error_spearman")
COHERENCE_COLUMNS = ("dataset", "method", "n_contexts", "sample_ac", "truth_ac")

Sampler = Callable[[np.ndarray, list[int], int, int], tuple[np.ndarray, np.ndarray]]
"""(volume, contexts, n_samples, seed) -> (mean (P, S, S), samples (N, P, S, S)) on the grid."""


def radial_power_spectrum(image: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum of a square slice (log10, one value per integer radius)."""
    image = np.asarray(image, np.float64)
    power = np.abs(np.fft.fftshift(np.fft.fft2(image - image.mean()))) ** 2
    size = image.shape[0]
    y, x = np.indices(image.shape)
    radius = np.hypot(y - size // 2, x - size // 2).astype(int)
    sums = np.bincount(radius.ravel(), power.ravel())
    counts = np.bincount(radius.ravel())
    return np.log10(sums[: size // 2] / np.maximum(counts[: size // 2], 1) + 1e-12)


def spectrum_distance(generated: np.ndarray, real: np.ndarray) -> float:
    """Mean |log spectrum difference| between the average spectra of two slice stacks."""
    a = np.mean([radial_power_spectrum(s) for s in generated], 0)
    b = np.mean([radial_power_spectrum(s) for s in real], 0)
    return float(np.abs(a - b)[1:].mean())


def _realism(volumes: np.ndarray, segnet, references: np.ndarray) -> float:
    from ..inference.latent import segment_volumes

    return float(np.mean([realism_score(s, references)[0] for s in segment_volumes(segnet, volumes)]))


def sample_rows(samplers: dict[str, Sampler], subjects: list[SubjectGrid], dataset: str, segnet,
                references: np.ndarray, context_counts=(0, 1, 3, 5, 9), n_samples: int = 20, seed: int = 0,
                progress: bool = True) -> tuple[list[dict], list[dict]]:
    """Rows of ``samples.csv`` and of the coherence table for one dataset."""
    from tqdm.auto import tqdm

    real = np.stack([s.image for s in subjects])
    rows = [{"dataset": dataset, "method": "real", "n_contexts": "",
             "realism": _realism(real, segnet, references),
             "neighbour_ssim": float(np.mean([neighbour_ssim(v) for v in real]))}]
    coherence = []
    bar = tqdm(total=len(samplers) * len(context_counts) * len(subjects), desc=f"samples {dataset}",
               disable=not progress, leave=False)
    for name, sampler in samplers.items():
        for count in context_counts:
            if count == 0 and not name.startswith("BRUNO"):
                bar.update(len(subjects))
                continue  # the C-VAE has no prior
            values: dict[str, list[float]] = {k: [] for k in SAMPLE_COLUMNS[3:] + COHERENCE_COLUMNS[3:]}
            shown = []
            for subject in subjects:
                truth = subject.image
                contexts = evenly_spaced(count, len(truth)) if count else []
                mean, samples = sampler(truth, contexts, n_samples, seed)
                samples = samples.copy()
                samples[:, contexts] = truth[contexts]
                queries = [p for p in range(len(truth)) if p not in contexts]
                brain = subject.mask[queries]
                shown.append(samples[0])
                values["neighbour_ssim"].append(neighbour_ssim(samples[0]))
                values["spectrum_distance"].append(spectrum_distance(samples[:3, queries].reshape(-1, *truth.shape[1:]),
                                                                     truth[queries]))
                values["sample_ac"].append(float(np.mean([lag1_autocorrelation(s[queries] - mean[queries], brain)
                                                          for s in samples[:3]])))
                values["truth_ac"].append(lag1_autocorrelation(truth[queries] - mean[queries], brain))
                if count:
                    low, high = np.percentile(samples[:, queries], [5, 95], axis=0)
                    inside = (truth[queries] >= low) & (truth[queries] <= high)
                    values["coverage90"].append(float(inside[brain].mean()))
                    std = samples[:, queries].std(0)[brain]
                    error = np.abs(mean[queries] - truth[queries])[brain]
                    values["std_error_spearman"].append(float(spearmanr(std, error).statistic))
                bar.update(1)
            method = f"{name} prior sample" if count == 0 else f"{name} sample"
            row = {"dataset": dataset, "method": method, "n_contexts": count,
                   "realism": _realism(np.stack(shown), segnet, references)}
            row.update({k: float(np.mean(v)) for k, v in values.items() if v and k in SAMPLE_COLUMNS})
            rows.append(row)
            coherence.append({"dataset": dataset, "method": method, "n_contexts": count,
                              "sample_ac": float(np.mean(values["sample_ac"])),
                              "truth_ac": float(np.mean(values["truth_ac"]))})
    bar.close()
    return rows, coherence


def write_csv(rows: list[dict], path: Path, columns: tuple[str, ...]) -> Path:
    """Rows as CSV with ``columns`` (numbers to 4 decimals, missing cells empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([f"{row[c]:.4f}" if isinstance(row.get(c), float) else row.get(c, "") for c in columns])
    return path


def markdown(rows: list[dict], columns: tuple[str, ...]) -> str:
    """A Markdown table of ``rows``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[c]:.3f}" if isinstance(row.get(c), float) else str(row.get(c, ""))
                                       for c in columns) + " |")
    return "\n".join(lines)
