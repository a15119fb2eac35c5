"""What the anomaly methods are called and where their weights live, without torch (the
anomaly dock lists them before the models load; :mod:`.anomaly` re-exports them)."""

from __future__ import annotations

from pathlib import Path

from ..checkpoints import shipped
from ..models.kinds import DAE_KINDS, KINDS

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
