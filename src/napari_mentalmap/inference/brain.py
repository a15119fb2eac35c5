"""Automatic brain mask for any T1: classic on skull-stripped volumes, learned otherwise.

:func:`auto_brain_mask` first decides whether a volume is already skull-stripped
(:func:`looks_skull_stripped`). A stripped brain sits in a sea of one exact background
value, so the shell a few millimetres outside its foreground is almost entirely that
value; around a head with skull the same shell is noisy air (or, with zero padding, a
mix of zeros and noise). Measured on the shared data: 0.97-1.00 on every open_ms
T1/T2/FLAIR (stripped), 0.12-0.37 on NiChart T1/FLAIR and IXI T1 (with skull).

Stripped volumes get their non-zero region (largest component, holes filled): the
classic :func:`~napari_mentalmap.io.preprocess.brain_mask` would also cut the dark outer
CSF (Dice 0.94 vs. the non-zero region on open_ms patient07, 0.79-0.89 vs. the brain on
stripped NiChart test T1). Others get the learned 2.5-D U-Net
(:func:`napari_mentalmap.models.skullstrip.learned_brain_mask`), or the classic mask
with a warning when its weights are missing. torch is imported only for the learned path.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import filters

from ..checkpoints import shipped
from ..io.masks import NoBrainError, brain_mask, fill_holes, largest_component_filled
from .jobs import Job, run_to_completion

SKULLSTRIP_WEIGHTS = shipped("skullstrip").path
"""The shipped weights of the learned brain extraction."""

STRIPPED_SHELL_FRACTION = 0.75
"""Smallest share of exact background voxels in the shell around the foreground that
makes a volume count as skull-stripped (stripped data >= 0.96, heads with skull <= 0.4)."""


def stripped_shell_fraction(volume: np.ndarray, spacing=(1.0, 1.0, 1.0),
                            inner_mm: float = 3.0, outer_mm: float = 8.0) -> float:
    """Share of voxels with the exact background value in a shell around the foreground.

    The background value is the volume's most common value; the foreground is above
    half its Otsu threshold (holes filled); the shell lies ``inner_mm`` to ``outer_mm``
    outside it (computed at ~2 mm). Returns 0 when there is no shell (foreground fills
    the field of view).
    """
    volume = np.nan_to_num(np.asarray(volume, dtype=np.float32))
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    factors = [max(1, int(round(2.0 / s))) for s in spacing]
    small = volume[:: factors[0], :: factors[1], :: factors[2]]
    small_spacing = [s * f for s, f in zip(spacing, factors, strict=True)]
    values, counts = np.unique(small, return_counts=True)
    background = values[counts.argmax()]
    sample = small[small != background]
    if sample.size < 100 or np.ptp(sample) == 0:
        raise NoBrainError("the volume is (almost) constant: no brain to find")
    threshold = filters.threshold_otsu(sample[:: max(1, sample.size // 300_000)])
    head = fill_holes(small > background + 0.5 * (threshold - background))

    def grown(mm: float) -> np.ndarray:
        radii = [max(1, int(round(mm / s))) for s in small_spacing]
        grids = np.ogrid[tuple(slice(-r, r + 1) for r in radii)]
        ball = sum((g * s / mm) ** 2 for g, s in zip(grids, small_spacing, strict=True)) <= 1.0
        return ndimage.binary_dilation(head, structure=ball)

    shell = grown(outer_mm) & ~grown(inner_mm)
    if not shell.any():
        return 0.0
    return float(np.mean(small[shell] == background))


def looks_skull_stripped(volume: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> bool:
    """True when the volume looks skull-stripped (see :func:`stripped_shell_fraction`)."""
    return stripped_shell_fraction(volume, spacing) >= STRIPPED_SHELL_FRACTION


def stripped_region_mask(volume: np.ndarray) -> np.ndarray:
    """The brain of a skull-stripped volume: its largest 3-D component of non-background
    voxels (background = the most common value), holes filled in 3-D and per axial slice."""
    volume = np.nan_to_num(np.asarray(volume, dtype=np.float32))
    values, counts = np.unique(volume[::2, ::2, ::2], return_counts=True)
    foreground = volume != values[counts.argmax()]
    if not foreground.any():
        raise NoBrainError("the volume is empty (all voxels equal): no brain to find")
    return largest_component_filled(foreground)


def auto_brain_mask(volume: np.ndarray, spacing=(1.0, 1.0, 1.0), device: str = "cpu") -> np.ndarray:
    """Boolean brain mask on the volume's grid, for T1 with or without skull.

    Skull-stripped volumes: their non-zero region (:func:`stripped_region_mask`). Otherwise the learned brain
    extraction with the shipped weights; if they are missing, the classic mask with a
    ``UserWarning`` (it includes scalp/face/neck on volumes with skull).
    """
    return run_to_completion(brain_mask_job(volume, spacing, device))


def brain_mask_job(volume: np.ndarray, spacing=(1.0, 1.0, 1.0), device: str = "cpu") -> Job[np.ndarray]:
    """:func:`auto_brain_mask` as a job: a progress report between the skull check and the
    mask, so that a job using it can be cancelled in between."""
    volume = np.asarray(volume)
    spacing = tuple(float(s) for s in spacing)
    stripped = looks_skull_stripped(volume, spacing)
    yield 0, 1, "brain mask (skull-stripped input)" if stripped else "brain mask (learned brain extraction)"
    if stripped:
        return stripped_region_mask(volume)
    if not Path(SKULLSTRIP_WEIGHTS).exists():
        warnings.warn(
            f"the volume looks like it still has its skull, but the learned brain-extraction "
            f"weights are missing ({SKULLSTRIP_WEIGHTS}); using the classic threshold mask, "
            f"which includes scalp, face and neck",
            UserWarning, stacklevel=2,
        )
        return brain_mask(volume, spacing)
    from ..models.skullstrip import learned_brain_mask

    return learned_brain_mask(volume, spacing, weights=SKULLSTRIP_WEIGHTS, device=device)
