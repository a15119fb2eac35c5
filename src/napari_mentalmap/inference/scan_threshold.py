"""An Auto threshold chosen from one scan's own map (numpy only).

The healthy bulk of the map inside the brain mask is fitted robustly by a Gaussian: its
location is the median and its scale ``(q90 - median) / 1.2816`` (the 90th percentile is
1.2816 SD above the mean of a Gaussian), both over the in-mask voxels above the map's floor
(its minimum inside the mask, e.g. the eroded rim). The map fitted is the method's own, except
for the gated method, which fits the brain's normalised intensity
(:func:`.anomaly_methods.per_scan_threshold`). The threshold is ``sds`` fitted SDs above the location,
a fixed false-positive rate of the fitted bulk (:func:`false_positive_rate`). Quantiles move
with the map under ``a * map + b`` (``a > 0``), so the labels at the threshold do not change
when the score is rescaled or shifted. Lesions are part of the upper tail the fit sees: a
load of a few percent of the brain raises the threshold, and a tumour filling a tenth of it
or more puts the 90th percentile inside the tumour, which is why the tumour target keeps a
fixed threshold (docs/uad.md, "Auto per scan").
"""

from __future__ import annotations

import math

import numpy as np

UPPER_QUANTILE = 0.9
"""The quantile that, with the median, fixes the fitted scale."""
UPPER_QUANTILE_SDS = 1.2815515655446004
"""How many SDs above the mean a Gaussian's ``UPPER_QUANTILE`` lies."""
MIN_VOXELS = 100
"""The fewest in-mask voxels above the floor a fit is made from."""


class ScanThresholdError(ValueError):
    """The map cannot give a per-scan threshold (empty mask, constant map, too few voxels)."""


class ScanThreshold(float):
    """A threshold computed from one scan's own map (a ``float``; lists say "this scan")."""


def bulk_fit(anomaly: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """``(location, scale)`` of the robust Gaussian fit of the map's bulk inside ``mask``.

    Raises :class:`ScanThresholdError` with the reason when the mask is empty or has another
    shape, the map is not finite or is constant there, or fewer than ``MIN_VOXELS`` voxels lie
    above its floor.
    """
    anomaly, mask = np.asarray(anomaly), np.asarray(mask, dtype=bool)
    if anomaly.shape != mask.shape:
        raise ScanThresholdError(f"the brain mask {mask.shape} and the anomaly map {anomaly.shape} differ in shape")
    if not mask.any():
        raise ScanThresholdError("the brain mask is empty: no per-scan threshold (set the threshold by hand)")
    values = anomaly[mask].astype(np.float64)
    if not np.isfinite(values).all():
        raise ScanThresholdError("the anomaly map has NaN or infinite values inside the brain mask")
    above = values[values > values.min()]
    if above.size == 0:
        raise ScanThresholdError("the anomaly map is constant inside the brain mask: nothing to threshold")
    if above.size < MIN_VOXELS:
        raise ScanThresholdError(f"only {above.size} brain voxels lie above the map's floor (at least {MIN_VOXELS} "
                                 "are needed for a per-scan threshold): set the threshold by hand")
    location, upper = (float(q) for q in np.quantile(above, [0.5, UPPER_QUANTILE]))
    if upper <= location:
        raise ScanThresholdError("the anomaly map's bulk has no spread inside the brain mask: nothing to fit")
    return location, (upper - location) / UPPER_QUANTILE_SDS


def scan_threshold(anomaly: np.ndarray, mask: np.ndarray, sds: float) -> ScanThreshold:
    """The threshold ``sds`` fitted SDs above the bulk of this map (:func:`bulk_fit`)."""
    location, scale = bulk_fit(anomaly, mask)
    return ScanThreshold(location + float(sds) * scale)


def false_positive_rate(sds: float) -> float:
    """Fraction of the fitted Gaussian bulk above ``sds`` SDs (the nominal false-positive rate)."""
    return 0.5 * math.erfc(float(sds) / math.sqrt(2.0))
