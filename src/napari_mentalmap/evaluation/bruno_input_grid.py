"""The mental-map protocol on the input's own voxel grid: what the dock shows.

For each test volume, in its own canonical orientation and voxel size: the contexts are
the input axial slices nearest to evenly spaced model poses; BRUNO runs exactly as the
dock does (``hallucinate`` with its automatic brain mask, then ``on_input_grid`` with the
acquired slices put back): "BRUNO mean (default)" is what the dock and ``predict bruno``
show (refined with the acquired slices at the input resolution), "BRUNO alone" the model's
mean resampled with the contexts put back. Every method is scored by SSIM and CC on the input's
non-context axial slices inside the range the model covers. Intensities are mapped to
[0, 1] with the brain's range the model used, so SSIM has the same data range as on the
model grid. The baselines use the acquired input slices themselves (linear interpolation,
nearest context); the population mean and the C-VAE are resampled from the model grid
with the same mapping as BRUNO's mean.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.subjects import subject_files
from ..inference.brain import auto_brain_mask
from ..inference.jobs import run_to_completion
from ..inference.mental_map import (
    MentalMap,
    context_slice_images,
    evenly_spaced,
    hallucinate,
    load_bruno,
    on_input_grid,
)
from ..io.nifti import read_volume
from ..io.preprocess import GridSpec, plan_grid
from ..metrics import slice_cc, slice_ssim
from .bruno import Row, linear_interpolation, nearest_context

GridPredictor = Callable[[np.ndarray, list[float]], np.ndarray]
"""(model-grid context images (K, S, S) in [0, 1], their poses) -> model-grid volume (P, S, S)."""


def _unit(volume: np.ndarray, intensity_range: tuple[float, float]) -> np.ndarray:
    low, high = intensity_range
    return np.clip((volume - low) / max(high - low, 1e-6), 0.0, 1.0)


DEFAULT = "BRUNO mean (default)"
ALONE = "BRUNO alone (latent mean)"


def evaluate_subject(data: np.ndarray, spacing, mask: np.ndarray, weights: str | Path | None, count: int,
                     grid_predictors: dict[str, GridPredictor], device: str = "cpu", n_samples: int = 0,
                     sample_metrics: dict | None = None) -> dict[str, tuple[float, float]]:
    """(SSIM, CC) per method of one input volume at ``count`` contexts, non-context slices.

    With ``n_samples`` >= 2, the default's samples and std are scored too (into ``sample_metrics``:
    :func:`~.bruno_input_samples.score_samples`)."""
    model, _ = load_bruno(weights, device)
    spec = GridSpec(**model.config.grid) if model.config.grid else GridSpec()
    mapping = plan_grid(mask, spacing, spec)
    contexts = sorted({mapping.pose_to_slice(p) for p in evenly_spaced(count, mapping.grid_shape[0])})
    result: MentalMap = run_to_completion(hallucinate(data, spacing, contexts, n_samples=n_samples, device=device,
                                                      weights=weights, mask=mask))
    first, last = result.mapping.covered_slices()
    queries = [s for s in range(first, last + 1) if s not in contexts]
    real = _unit(data, result.intensity_range)
    low, high = result.intensity_range
    shown = on_input_grid(result, data, keep_contexts=True)
    predictions = {DEFAULT: shown.mean,
                   ALONE: on_input_grid(result, data, keep_contexts=True, refine=False).mean,
                   "linear interpolation": linear_interpolation(data, contexts),
                   "nearest context": nearest_context(data, contexts)}
    grid_contexts = context_slice_images(real, result.mapping, contexts)
    for name, predict in grid_predictors.items():
        grid = predict(grid_contexts, list(result.context_poses)) * (high - low) + low
        predictions[name] = result.to_input_grid(grid.astype(np.float32), 0.0, acquired=data)
    if sample_metrics is not None and shown.std is not None:
        from .bruno_input_samples import score_samples

        score_samples(shown, real, mask, queries, sample_metrics)
    scores = {}
    for name, prediction in predictions.items():
        generated = _unit(np.asarray(prediction, np.float32), result.intensity_range)
        scores[name] = (float(np.mean([slice_ssim(generated[s], real[s]) for s in queries])),
                        float(np.mean([slice_cc(generated[s], real[s]) for s in queries])))
    return scores


def evaluate_input_grid(subjects: list[str], dataset: str, weights: str | Path | None,
                        grid_predictors: dict[str, GridPredictor], context_counts=(1, 3, 5, 9),
                        device: str = "cpu", progress: bool = True, n_samples: int = 0,
                        sample_rows: list[dict] | None = None, coherence_rows: list[dict] | None = None,
                        segnet=None, references: np.ndarray | None = None) -> list[Row]:
    """Rows ``<dataset> (input grid)`` for every method and context count (non-context slices);
    with ``n_samples`` >= 2, the default's rows of ``samples.csv`` and of the coherence table
    are appended to ``sample_rows`` and ``coherence_rows``."""
    from tqdm.auto import tqdm

    per: dict[tuple[str, int], list[tuple[float, float]]] = {}
    samples_per: dict[int, dict] = {}
    bar = tqdm(total=len(subjects) * len(context_counts), desc=f"input grid {dataset}", disable=not progress,
               leave=False)
    for subject in subjects:
        volume = read_volume(subject_files(subject, "t1")["image"])
        data = np.asarray(volume.data, np.float32)
        mask = auto_brain_mask(data, volume.spacing)  # what the dock uses
        for count in context_counts:
            metrics = samples_per.setdefault(count, {})
            for method, value in evaluate_subject(data, volume.spacing, mask, weights, count, grid_predictors,
                                                  device, n_samples, metrics if n_samples >= 2 else None).items():
                per.setdefault((method, count), []).append(value)
            bar.update(1)
    bar.close()
    if sample_rows is not None and n_samples >= 2:
        from .bruno_input_samples import rows_of

        extra, more = rows_of(samples_per, f"{dataset} (input grid)", segnet, references)
        sample_rows += extra
        if coherence_rows is not None:
            coherence_rows += more
    return [Row(f"{dataset} (input grid)", method, count, "non-context",
                float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values])), [])
            for (method, count), values in per.items()]
