"""The anomaly methods without torch: their names, weights files, Auto thresholds per target
and the dock's job (which imports :mod:`.anomaly`, and torch, inside its worker thread). The
anomaly dock lists them before the models load; :mod:`.anomaly` re-exports the names."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..checkpoints import shipped
from ..models.kinds import DAE_KINDS, KINDS
from .jobs import Progress
from .labels import LabelUpdater

if TYPE_CHECKING:
    from .anomaly import AnomalyResult

ANOMALY_KINDS: tuple[str, ...] = KINDS + DAE_KINDS
"""Every anomaly model kind: the VAEs and the denoising autoencoder (``dae2d``)."""


def weights_path(kind: str) -> Path:
    """Where the shipped weights of ``kind`` live."""
    return shipped(f"uad_{kind}").path


RESIDUALS: tuple[str, ...] = ("positive", "absolute")
"""Anomaly scores: ``positive`` = ``max(x - x_hat, 0)`` (FLAIR lesions are hyperintense),
``absolute`` = ``|x - x_hat|`` (the paper's)."""

INTENSITY_METHOD = "FLAIR intensity (baseline)"
"""The intensity baseline offered in the dock and the CLI beside the VAEs."""
GATED_METHOD = "DAE-gated FLAIR intensity"
"""The default method: the intensity method gated by the denoising autoencoder's residual
(:func:`.anomaly.gated_intensity`), chosen on the validation FLAIRs (docs/uad.md)."""
GATED_MODEL = "dae2d"
"""The model whose residual gates the intensity."""
GATE_SCALE = 0.1
"""The DAE residual (normalised intensity units) that lets a voxel's intensity count fully;
chosen on validation (AUPRC over 0.05 / 0.1 / 0.2 / 0.3, ``scripts/uad_hybrid.py``)."""
SCORELESS_METHODS: tuple[str, ...] = (GATED_METHOD, INTENSITY_METHOD)
"""Methods with a single score (no residual choice)."""
INTENSITY_MEDIAN_AT = 0.5
INTENSITY_AUTO_THRESHOLD = 0.745
"""Auto threshold of the intensity method, chosen on the validation FLAIRs (Subj18-20 vs
``wml_auto``) by ``mentalmap eval uad-baseline-threshold``; never on a test set."""


def modality_warning(name: str) -> str | None:
    """A warning when a layer or file name says it is not a FLAIR (e.g. ``sample T1``).

    The reconstruction error alone does not separate T1 from FLAIR for these small VAEs
    (both reconstruct equally blurrily), so the name is the practical hint.
    """
    import re

    words = set(re.split(r"[^a-z0-9]+", name.lower()))
    if "flair" in words or "fl" in words:
        return None
    other = words & {"t1", "t1w", "t2", "t2w", "pd", "mprage", "dwi", "adc", "ct"}
    if other:
        return (f"{name!r} looks like a {sorted(other)[0].upper()} image: the anomaly VAEs were trained "
                "on FLAIR, so the map and labels are unlikely to mean much")
    return None


TARGETS: tuple[str, ...] = ("lesions", "tumour")
"""What the Auto threshold is chosen for: small lesions (MS, white matter) or a tumour."""

AUTO_THRESHOLDS: dict[str, float] = {
    "DAE-gated FLAIR intensity||lesions": 0.83,
    "DAE-gated FLAIR intensity||tumour": 0.85,
    "FLAIR intensity (baseline)||lesions": 0.745,
    "FLAIR intensity (baseline)||tumour": 0.745,
    "dense2d|positive|lesions": 0.21,
    "dense2d|positive|tumour": 0.15,
    "dense2d|absolute|lesions": 0.31,
    "dense2d|absolute|tumour": 0.22,
    "dense3d|positive|lesions": 0.28,
    "dense3d|positive|tumour": 0.18,
    "dense3d|absolute|lesions": 0.44,
    "dense3d|absolute|tumour": 0.26,
    "spatial2d|positive|lesions": 0.21,
    "spatial2d|positive|tumour": 0.12,
    "spatial2d|absolute|lesions": 0.32,
    "spatial2d|absolute|tumour": 0.22,
    "spatial3d|positive|lesions": 0.23,
    "spatial3d|positive|tumour": 0.15,
    "spatial3d|absolute|lesions": 0.32,
    "spatial3d|absolute|tumour": 0.24,
    "dae2d|positive|lesions": 0.13,
    "dae2d|positive|tumour": 0.14,
    "dae2d|absolute|lesions": 0.14,
    "dae2d|absolute|tumour": 0.14,
}
"""Auto threshold per ``"method|score|target"`` (score empty for the intensity method), chosen
on the validation FLAIRs by ``mentalmap eval uad-auto`` (see ``evaluation.auto_thresholds``)."""


def auto_threshold(method: str, residual: str, target: str) -> float | None:
    """The shipped Auto threshold of a method, score and target (None when there is none)."""
    score = "" if method in SCORELESS_METHODS else residual
    return AUTO_THRESHOLDS.get(f"{method}|{score}|{target}")


def anomaly_job(data: np.ndarray, spacing: tuple[float, float, float], method: str, device: str,
                residual: str = "positive", weights: str | Path | None = None):
    """The anomaly dock's job (run in its worker thread; torch is imported there): the
    intensity method, or load a model (``weights``, default the shipped ``method``) and run its map.

    Returns the result and its Auto thresholds per target (``TARGETS``): the shipped table for
    the shipped weights; for other weights, their own (lesion) threshold when it was chosen
    for ``residual``. ``GATED_METHOD`` runs on the shipped ``GATED_MODEL`` weights.
    """
    from .anomaly import anomaly_map, gated_intensity_map, intensity_anomaly_map, load_anomaly_model

    if method == INTENSITY_METHOD:
        result = yield from intensity_anomaly_map(data, spacing, device=device)
        return result, shipped_auto_thresholds(method, residual)
    if method == GATED_METHOD:
        result = yield from gated_intensity_map(data, spacing, load_anomaly_model(GATED_MODEL, device))
        return result, shipped_auto_thresholds(method, residual)
    model = load_anomaly_model(weights or method, device)
    result = yield from anomaly_map(data, spacing, model, residual=residual)
    if weights is None or Path(weights) == weights_path(method):
        return result, shipped_auto_thresholds(method, residual)
    return result, ({"lesions": model.threshold} if model.threshold is not None and model.residual_kind == residual
                    else {})


def shipped_auto_thresholds(method: str, residual: str) -> dict[str, float]:
    """The shipped Auto threshold of ``method`` and ``residual`` for every target that has one."""
    found = {target: auto_threshold(method, residual, target) for target in TARGETS}
    return {target: value for target, value in found.items() if value is not None}


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
