"""The anomaly methods without torch: their names, weights files and Auto thresholds per
target (fixed, or per scan from the scan's own map). The anomaly dock lists them before the
models load; :mod:`.anomaly` re-exports the names and :mod:`.anomaly_jobs` holds the dock's job.
Nothing here imports :mod:`.anomaly` (no import circle)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..checkpoints import shipped
from ..models.kinds import DAE_KINDS, KINDS
from .scan_threshold import ScanThreshold, ScanThresholdError, bulk_fit, scan_threshold

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


def score_of(method: str, residual: str) -> str:
    """The score part of an Auto key: empty for the methods without a score choice."""
    return "" if method in SCORELESS_METHODS else residual


def auto_key(method: str, residual: str, target: str) -> str:
    """``"method|score|target"``, the key of the Auto tables and of the user's calibrations."""
    return f"{method}|{score_of(method, residual)}|{target}"


def auto_threshold(method: str, residual: str, target: str) -> float | None:
    """The shipped Auto threshold of a method, score and target (None when there is none)."""
    return AUTO_THRESHOLDS.get(auto_key(method, residual, target))


PER_SCAN_SDS: dict[str, float] = {
    "DAE-gated FLAIR intensity||lesions": 2.35,
    "FLAIR intensity (baseline)||lesions": 2.6,
}
"""Per ``"method|score|target"``: the Auto is this many fitted SDs above the bulk of the scan
(:func:`per_scan_threshold`), chosen on validation by ``mentalmap eval uad-per-scan``
(``evaluation.per_scan_auto``); targets not listed keep ``AUTO_THRESHOLDS``."""


def per_scan_sds(method: str, residual: str, target: str) -> float | None:
    """The per-scan Auto's SDs of a method, score and target (None: it keeps its fixed Auto)."""
    return PER_SCAN_SDS.get(auto_key(method, residual, target))


def per_scan_threshold(method: str, sds: float, anomaly: np.ndarray, mask: np.ndarray,
                       intensity_bulk: tuple[float, float] | None = None) -> ScanThreshold:
    """The threshold ``sds`` fitted SDs above the bulk of this scan, in ``method``'s score units.

    The gated method fits the brain's normalised intensity (``intensity_bulk``, which its job
    returns) and takes the square root (its score is ``sqrt(intensity * gate)``, the intensity
    itself where the gate is open): its own map mixes every gate level and has no healthy bulk to
    fit, and a threshold from it moved with the lesion load (docs/uad.md). Any other method fits
    its own map (:func:`.scan_threshold.scan_threshold`).
    """
    if method != GATED_METHOD:
        return scan_threshold(anomaly, mask, sds)
    return ScanThreshold(per_scan_thresholds(method, [sds], anomaly, mask, intensity_bulk)[0])


def per_scan_thresholds(method: str, sds, anomaly: np.ndarray, mask: np.ndarray,
                        intensity_bulk: tuple[float, float] | None = None) -> np.ndarray:
    """:func:`per_scan_threshold` at every value of ``sds``, from one fit."""
    sds = np.asarray(sds, dtype=np.float64)
    if method != GATED_METHOD:
        location, scale = bulk_fit(anomaly, mask)
        return location + sds * scale
    if intensity_bulk is None:
        raise ScanThresholdError("the brain's intensity could not be fitted (empty mask, constant image or too "
                                 "few brain voxels): set the threshold by hand")
    location, scale = intensity_bulk
    return np.sqrt(np.maximum(location + sds * scale, 0.0))


def scan_auto_threshold(method: str, residual: str, target: str, anomaly: np.ndarray, mask: np.ndarray,
                        intensity_bulk: tuple[float, float] | None = None) -> float | None:
    """The shipped Auto of a method, score and target for this map: from the scan itself (a
    :class:`.scan_threshold.ScanThreshold`, :func:`per_scan_threshold`) where :data:`PER_SCAN_SDS`
    says so, else the fixed :func:`auto_threshold`. Raises ``ScanThresholdError`` when the scan
    cannot be fitted."""
    sds = per_scan_sds(method, residual, target)
    if sds is None:
        return auto_threshold(method, residual, target)
    return per_scan_threshold(method, sds, anomaly, mask, intensity_bulk)
