"""Fit the input-grid settings of BRUNO weights on validation subjects.

``mentalmap train bruno-input-grid`` runs the model as the dock does on each validation T1
(automatic brain mask, evenly spaced contexts, 1/3/5/9 of them), keeps its mean and samples
on the input grid, then fits

1. the detail transfer's decay lengths, one per in-plane band, by coordinate ascent on the
   mean SSIM of the refined mean over the non-context slices (what the dock is judged by);
2. the std calibration: a least-squares fit of log |error| of the refined mean on the log of
   the refined samples' std, of the mean's edge strength and of the distance from the
   nearest context, then one factor that puts 90 % of the errors inside mean +- 1.645 std.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..inference.detail_transfer import (
    NO_DECAY,
    DetailTransferConfig,
    StdCalibration,
    model_weight,
    neighbours,
    outside_fill,
    transfer_detail,
    transferred_residual,
)
from ..metrics import slice_ssim

DECAY_CHOICES_MM = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, NO_DECAY)
Z_90 = 1.645


@dataclass
class Case:
    """One validation volume at one context count, on the input grid, intensities in [0, 1]."""

    subject: str
    n_contexts: int
    truth: np.ndarray
    mean: np.ndarray  # the model's mean resampled to the input grid (not refined)
    samples: np.ndarray  # (N, ...) the model's samples, likewise
    contexts: list[int]
    brain: np.ndarray
    covered: tuple[int, int]
    spacing: tuple[float, float, float]

    def queries(self) -> list[int]:
        """Non-context slices inside the model's slice range (where the protocol scores)."""
        first, last = self.covered
        return [s for s in range(first, last + 1) if s not in self.contexts]


def collect_case(subject: str, n_contexts: int, weights=None, n_samples: int = 8, seed: int = 0) -> Case:
    """Run the model on a registered subject's T1 as the dock does (contexts evenly spaced)."""
    from ..data.subjects import subject_files
    from ..inference.brain import auto_brain_mask
    from ..inference.mental_map import evenly_spaced, hallucinate, load_bruno, run_to_completion
    from ..io.nifti import read_volume
    from ..io.preprocess import GridSpec, plan_grid

    volume = read_volume(subject_files(subject, "t1")["image"])
    data = np.asarray(volume.data, np.float32)
    mask = auto_brain_mask(data, volume.spacing)
    model, _ = load_bruno(weights, "cpu")
    mapping = plan_grid(mask, volume.spacing, GridSpec(**model.config.grid))
    contexts = sorted({mapping.pose_to_slice(p) for p in evenly_spaced(n_contexts, mapping.grid_shape[0])})
    result = run_to_completion(hallucinate(data, volume.spacing, contexts, n_samples=n_samples, seed=seed,
                                           device="cpu", weights=weights, mask=mask))
    lo, hi = result.intensity_range

    def unit(array: np.ndarray) -> np.ndarray:
        return ((array - lo) / max(hi - lo, 1e-6)).astype(np.float32)

    return Case(subject, n_contexts, unit(data), unit(result.to_input_grid(result.mean_grid, lo)),
                np.stack([unit(result.to_input_grid(s, lo)) for s in result.samples_grid]), contexts, mask,
                result.mapping.covered_slices(), tuple(float(s) for s in volume.spacing))


class _Scorer:
    """SSIM of the refined mean on a fixed sample of a case's scored slices, for any decays."""

    def __init__(self, case: Case, sigmas_mm: Sequence[float], edge_voxels: float, slices: int,
                 rng: np.random.Generator) -> None:
        from ..inference.detail_transfer import band_split

        self.near = neighbours(case.truth.shape[0], case.contexts, case.spacing[0])
        weight = model_weight(case.brain, *case.covered, edge_voxels)
        residual = weight[case.contexts] * (case.truth[case.contexts] - case.mean[case.contexts])
        self.bands = band_split(residual, tuple(sigmas_mm), case.spacing[1:])
        queries = case.queries()
        self.rows = np.sort(rng.choice(queries, min(slices, len(queries)), replace=False))
        self.base, self.truth, self.weight = case.mean[self.rows], case.truth[self.rows], weight[self.rows]
        self.outside = outside_fill(case.truth, case.brain, case.mean, self.near, self.rows)

    def ssim(self, decay_mm: tuple[float, ...]) -> float:
        refined = self.base + transferred_residual(self.bands, self.near, decay_mm, rows=self.rows)
        out = np.clip(self.weight * refined + (1 - self.weight) * self.outside, 0, 1)
        return float(np.mean([slice_ssim(o, np.clip(t, 0, 1)) for o, t in zip(out, self.truth, strict=True)]))


def fit_decays(cases: list[Case], sigmas_mm: Sequence[float] = (1.0, 2.0, 4.0, 8.0), edge_voxels: float = 1.0,
               slices_per_case: int = 8, passes: int = 2, seed: int = 0) -> tuple[DetailTransferConfig, float]:
    """Decay lengths (one per band) maximising the mean SSIM of the refined mean; returns the
    config and its score."""
    rng = np.random.default_rng(seed)
    scorers = [_Scorer(case, sigmas_mm, edge_voxels, slices_per_case, rng) for case in cases]
    choice = [DECAY_CHOICES_MM.index(8.0)] * (len(sigmas_mm) + 1)
    best = -1.0
    for _ in range(passes):
        for band in range(len(choice)):
            scores = []
            for option in range(len(DECAY_CHOICES_MM)):
                trial = tuple(DECAY_CHOICES_MM[i] for i in choice[:band] + [option] + choice[band + 1:])
                scores.append(float(np.mean([scorer.ssim(trial) for scorer in scorers])))
            choice[band] = int(np.argmax(scores))
            best = max(scores)
    config = DetailTransferConfig(tuple(sigmas_mm), tuple(DECAY_CHOICES_MM[i] for i in choice), edge_voxels)
    return config, best


def refined(case: Case, base: np.ndarray, transfer: DetailTransferConfig) -> np.ndarray:
    """``base`` (a mean or a sample of ``case``) refined with the case's acquired slices."""
    weight = model_weight(case.brain, *case.covered, transfer.edge_voxels)
    return transfer_detail(base, case.truth, case.contexts, case.spacing, case.brain, weight, case.covered,
                           transfer)


def fit_std_calibration(cases: list[Case], transfer: DetailTransferConfig, voxels_per_case: int = 20000,
                        seed: int = 0, template: StdCalibration | None = None) -> StdCalibration:
    """Regression of log |error| of the refined mean on the calibration's features inside the
    brain (non-context slices), then the factor giving 90 % coverage of mean +- 1.645 std."""
    template = template or StdCalibration()
    rng = np.random.default_rng(seed)
    features, errors = [], []
    for case in cases:
        mean = refined(case, case.mean, transfer)
        spread = np.stack([refined(case, s.astype(np.float32), transfer) for s in case.samples]).std(0)
        distance = neighbours(case.truth.shape[0], case.contexts, case.spacing[0]).distance
        scored = np.zeros(case.truth.shape, bool)
        scored[case.queries()] = True
        index = np.flatnonzero(scored & case.brain)
        index = rng.choice(index, min(voxels_per_case, index.size), replace=False)
        columns = template.features(spread, mean, distance, case.spacing)
        features.append(np.stack([c.ravel()[index] for c in columns] + [np.ones(index.size)], 1))
        errors.append(np.abs(mean.ravel()[index] - case.truth.ravel()[index]))
    design, error = np.concatenate(features), np.concatenate(errors)
    coefficients = np.linalg.lstsq(design, np.log(error + template.eps), rcond=None)[0]
    predicted = np.exp(design @ coefficients)
    factor = float(np.quantile(error / predicted, 0.9) / Z_90)
    return StdCalibration(log_scale=float(coefficients[3] + np.log(factor)), std_power=float(coefficients[0]),
                          edge_power=float(coefficients[1]), distance_power=float(coefficients[2]),
                          edge_sigma_mm=template.edge_sigma_mm, eps=template.eps)
