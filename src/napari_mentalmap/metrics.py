"""Metrics defined once for training, evaluation and the docks (numpy / scikit-image only)."""

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


def mean_class_dice(predicted: np.ndarray, reference: np.ndarray, classes: tuple[int, ...] = (1, 2, 3)) -> float:
    """Dice averaged over the foreground tissue classes (pooled over all voxels given)."""
    return float(np.mean([dice(predicted == c, reference == c) for c in classes]))


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the precision-recall curve (average precision, step interpolation)."""
    truth = np.asarray(truth, bool).ravel()
    positives = int(truth.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, np.float64).ravel(), kind="stable")
    hits = truth[order]
    true_positives = np.cumsum(hits)
    precision = true_positives / np.arange(1, hits.size + 1)
    return float(precision[hits].sum() / positives)


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged)."""
    truth = np.asarray(truth, bool).ravel()
    n_pos = int(truth.sum())
    n_neg = truth.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _rankdata(np.asarray(scores, np.float64).ravel())
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _rankdata(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    first = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(values.size)
    ranks[order] = mean_rank[group]
    return ranks


def lag1_autocorrelation(deviation: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Lag-1 spatial autocorrelation of a 2-D (or stacked ``(..., H, W)``) deviation map.

    The correlation of every in-mask pixel with its in-mask right and lower neighbours,
    pooled over both directions. Pixel noise gives about 0, a smooth anatomical
    difference close to 1: it tells a sample that is an anatomy from one that is static.
    """
    values = np.asarray(deviation, np.float64)
    inside = np.ones(values.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), values.shape)
    left, right = [], []
    for axis in (-1, -2):
        n = values.shape[axis]
        a = np.take(values, range(n - 1), axis=axis)
        b = np.take(values, range(1, n), axis=axis)
        keep = np.take(inside, range(n - 1), axis=axis) & np.take(inside, range(1, n), axis=axis)
        left.append(a[keep])
        right.append(b[keep])
    a, b = np.concatenate(left), np.concatenate(right)
    if a.size < 2:
        return 0.0
    mu = np.concatenate([a, b]).mean()
    a, b = a - mu, b - mu
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def saturated_fractions(volume: np.ndarray, brain: np.ndarray, intensity_range: tuple[float, float],
                        top: float = 0.99) -> tuple[float, float]:
    """(overall, worst axial slice) fraction of ``brain`` pixels of a (P, H, W) ``volume`` at the
    top of ``intensity_range`` (at or above ``top`` of the way from its low to its high end)."""
    low, high = intensity_range
    unit = (np.asarray(volume, np.float64) - low) / max(high - low, 1e-6)
    at_top = (unit >= top) & brain
    per_pose = at_top.sum((1, 2)) / np.maximum(brain.sum((1, 2)), 1)
    return float(at_top.sum() / max(brain.sum(), 1)), float(per_pose.max())
