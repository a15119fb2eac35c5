"""Image similarity metrics used by every evaluation (scikit-image SSIM, Pearson CC)."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def slice_ssim(generated: np.ndarray, real: np.ndarray, data_range: float = 1.0) -> float:
    """SSIM of two 2-D slices with intensities in [0, data_range] (scikit-image defaults, 7x7)."""
    return float(structural_similarity(np.asarray(generated, np.float64), np.asarray(real, np.float64),
                                       data_range=data_range))


def slice_cc(generated: np.ndarray, real: np.ndarray) -> float:
    """Pearson correlation of the pixels of two slices (0 when either is constant)."""
    a = np.asarray(generated, np.float64).ravel()
    b = np.asarray(real, np.float64).ravel()
    a = a - a.mean()
    b = b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two binary masks (1.0 when both are empty)."""
    prediction = np.asarray(prediction, bool)
    truth = np.asarray(truth, bool)
    total = prediction.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (prediction & truth).sum() / total)
