"""The anomaly dock's job: run a method in the worker thread (:mod:`.anomaly`, and torch, are
imported there), take every target's Auto threshold for this scan, and prepare the display.

It sits above :mod:`.anomaly` and :mod:`.anomaly_methods` (the names and thresholds, no torch),
so neither of those imports the other back.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .anomaly_methods import (
    GATED_METHOD,
    GATED_MODEL,
    INTENSITY_METHOD,
    TARGETS,
    auto_key,
    scan_auto_threshold,
    weights_path,
)
from .auto_calibration import (
    AutoCalibration,
    CalibratedThreshold,
    calibrated_threshold,
)
from .jobs import Progress
from .labels import LabelUpdater
from .scan_threshold import ScanThreshold, ScanThresholdError

if TYPE_CHECKING:
    from .anomaly import AnomalyResult

DOCK_BATCH_SIZE = 4
"""Slices reconstructed between two progress reports in the dock's job (the 2-D models): a
batch of 16 of the DAE took 0.9-1.4 s on 2 CPU threads, and Cancel waits for the running one;
4 take a quarter of that, in the same total time (maps equal to 1e-6)."""


def anomaly_job(data: np.ndarray, spacing: tuple[float, float, float], method: str, device: str,
                residual: str = "positive", weights: str | Path | None = None,
                calibrations: dict[str, AutoCalibration] | None = None):
    """The anomaly dock's job (run in its worker thread; torch is imported there): the
    intensity method, or load a model (``weights``, default the shipped ``method``) and run its map.

    Returns the result and its Auto thresholds per target (``TARGETS``): for the shipped weights
    :func:`shipped_auto_thresholds` of this map (per scan where the table says so); for other
    weights, their own (lesion) threshold when it was chosen for ``residual``. ``calibrations``
    (the user's, :mod:`.auto_calibration`) replace the shipped Auto of their method and target.
    ``GATED_METHOD`` runs on the shipped ``GATED_MODEL`` weights.
    """
    from .anomaly import anomaly_map, gated_intensity_map, intensity_anomaly_map, load_anomaly_model

    if method == INTENSITY_METHOD:
        result = yield from intensity_anomaly_map(data, spacing, device=device)
        return result, shipped_auto_thresholds(method, residual, result, calibrations)
    if method == GATED_METHOD:
        result = yield from gated_intensity_map(data, spacing, load_anomaly_model(GATED_MODEL, device),
                                                batch_size=DOCK_BATCH_SIZE)
        return result, shipped_auto_thresholds(method, residual, result, calibrations)
    model = load_anomaly_model(weights or method, device)
    result = yield from anomaly_map(data, spacing, model, residual=residual, batch_size=DOCK_BATCH_SIZE)
    if weights is None or Path(weights) == weights_path(method):
        return result, shipped_auto_thresholds(method, residual, result, calibrations)
    return result, ({"lesions": model.threshold} if model.threshold is not None and model.residual_kind == residual
                    else {})


def shipped_auto_thresholds(method: str, residual: str, result: AnomalyResult,
                            calibrations: dict[str, AutoCalibration] | None = None) -> dict[str, float]:
    """The shipped Auto of ``method`` and ``residual`` for every target that has one, on this
    result's map and brain mask (``inference.anomaly_methods.scan_auto_threshold``), or the
    user's calibration of that target where ``calibrations`` has one (a
    :class:`.auto_calibration.CalibratedThreshold`). A target whose per-scan fit fails is left
    out, with the reason in ``result.warnings``."""
    found = {}
    for target in TARGETS:
        calibration = (calibrations or {}).get(auto_key(method, residual, target))
        try:
            found[target] = (scan_auto_threshold(method, residual, target, result.anomaly, result.brain_mask,
                                                 result.intensity_bulk) if calibration is None else
                             calibrated_threshold(calibration, result.anomaly, result.brain_mask,
                                                  result.intensity_bulk))
        except ScanThresholdError as error:
            result.warnings.append(f"no {target} Auto for this scan: {error}")
    return {target: value for target, value in found.items() if value is not None}


def auto_text(value: float | None) -> str:
    """How the dock's target list shows an Auto threshold: ``": 0.812 (this scan)"`` for one
    computed from the scan's own map, ``": 0.87 (your calibration)"`` for the user's,
    ``": 0.85"`` for a fixed one, nothing for none."""
    if value is None:
        return ""
    kind = (" (your calibration)" if isinstance(value, CalibratedThreshold)
            else " (this scan)" if isinstance(value, ScanThreshold) else "")
    return f": {value:.3g}{kind}"


@dataclass
class PreparedAnomaly:
    """A finished map with what its display needs, computed in the worker thread."""

    result: AnomalyResult
    thresholds: dict[str, float]  # target -> Auto threshold
    limits: tuple[float, float]  # contrast limits of the overlay
    start: float  # the threshold shown first
    proposal: LabelUpdater  # already thresholded at ``start``


def prepared_anomaly_job(job, target: str, min_size: int) -> Generator[Progress, None, PreparedAnomaly]:
    """Run ``job`` (an :func:`anomaly_job`) and prepare its display off the GUI thread: the
    overlay's contrast limits (the upper tail, readable over the FLAIR) and the proposal at
    the first threshold (Auto for ``target`` when there is one)."""
    result, thresholds = yield from job
    yield 1, 1, "preparing the labels"
    anomaly = result.anomaly
    inside = anomaly[anomaly > 0]
    low, top = (float(v) for v in np.percentile(inside, [75, 99.9])) if inside.size else (0.0, 1.0)
    start = thresholds.get(target, top / 2)
    proposal = LabelUpdater(anomaly)
    proposal.update(start, min_size)
    return PreparedAnomaly(result, thresholds, (low, max(top, low + 1e-6)), start, proposal)
