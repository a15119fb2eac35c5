"""Which MRI contrast a brain volume has (T1, T2 or FLAIR), from its own intensities.

File and layer names are unreliable (NiChart calls its FLAIR ``Subj21_FL``), so the
contrast is read from the image: the order of the three tissues inside the brain.

* T1: CSF < grey matter < white matter,
* T2: white matter < grey matter < CSF (CSF far brightest),
* FLAIR: CSF darkest (nulled), white matter < grey matter.

Intensities inside an (eroded) brain region are split into three classes (multi-Otsu).
Which class is white matter is told by shape, not brightness: white matter is one bulky
region, while grey matter is a 2-3 mm ribbon and CSF mostly thin sulci, so the white
matter class keeps the largest share of its voxels under a one-voxel erosion. Its rank
then names the contrast: brightest -> T1, darkest -> T2, middle -> FLAIR. Everything runs
on a ~2 mm subsample (well under a second on a 1 mm volume); numpy, scipy and
scikit-image only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage import filters

from ..io.masks import fill_holes
from .brain import STRIPPED_SHELL_FRACTION, stripped_shell_fraction

MODALITIES = ("T1", "T2", "FLAIR")
"""The contrasts :func:`classify_modality` tells apart."""

_ORDER = {"T1": ("CSF", "GM", "WM"), "T2": ("WM", "GM", "CSF"), "FLAIR": ("CSF", "WM", "GM")}
"""Tissues from darkest to brightest class for each contrast."""

_WEIGHTED = {"T1": "T1-weighted", "T2": "T2-weighted", "FLAIR": "FLAIR"}


@dataclass(frozen=True)
class ModalityGuess:
    """The contrast of a volume as read from its tissue intensities.

    ``tissue_means`` holds the mean of each tissue class in normalised units (the 1st to
    99th percentile inside the brain mapped to 0..1).
    """

    modality: str
    confidence: float
    tissue_means: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for messages, e.g. ``"T1-weighted (CSF < GM < WM)"``."""
        order = sorted(self.tissue_means, key=self.tissue_means.__getitem__)
        return f"{_WEIGHTED.get(self.modality, self.modality)} ({' < '.join(order)})"


def _subsample(array: np.ndarray, spacing: tuple[float, float, float], target_mm: float = 2.0):
    """Every n-th voxel per axis so that the grid is about ``target_mm``; returns (array, spacing)."""
    factors = [max(1, int(round(target_mm / s))) for s in spacing]
    small = array[:: factors[0], :: factors[1], :: factors[2]]
    return small, tuple(float(s * f) for s, f in zip(spacing, factors, strict=True))


def _depth(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Distance in mm from each mask voxel to the outside (0 outside)."""
    padded = np.pad(mask, 1)
    return ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]


def _background_share(volume: np.ndarray) -> tuple[float, float]:
    """The most common value and its share of the voxels (skull-stripped volumes have a large one)."""
    values, counts = np.unique(volume, return_counts=True)
    top = int(counts.argmax())
    return float(values[top]), float(counts[top] / volume.size)


def _brain_region(volume: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """A cheap region that is mostly brain: the inside of a skull-stripped volume, or the
    deep inside of a head with skull (skin, skull and fat stay in its outer ~2 cm)."""
    background, _ = _background_share(volume)
    foreground = volume != background
    sample = volume[foreground]
    if sample.size < 1000 or np.ptp(sample) == 0:
        raise ValueError("the volume is (almost) constant: no brain to classify")
    if stripped_shell_fraction(volume, spacing) >= STRIPPED_SHELL_FRACTION:
        return _depth(fill_holes(foreground), spacing) > 4.0
    threshold = filters.threshold_otsu(sample[:: max(1, sample.size // 200_000)])
    head = fill_holes(volume > background + 0.5 * (threshold - background))
    return _depth(head, spacing) > 20.0


def _bulk(classes: np.ndarray, region: np.ndarray, label: int) -> float:
    """Share of a class's voxels whose six neighbours are all of the same class."""
    member = (classes == label) & region
    n = int(member.sum())
    if n == 0:
        return 0.0
    return float(ndimage.binary_erosion(member).sum() / n)


def classify_modality(volume: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                      mask: np.ndarray | None = None) -> ModalityGuess:
    """Guess whether a 3-D brain volume is T1-weighted, T2-weighted or FLAIR.

    Args:
        volume: 3-D intensities (any units; with or without skull).
        spacing: voxel size in mm per axis.
        mask: optional brain mask on the volume's grid; without one a cheap intensity
            region is used (see module docstring).

    Raises:
        ValueError: not a 3-D volume, or too few brain voxels to classify.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    spacing = tuple(float(s) for s in spacing[-3:])
    small, small_spacing = _subsample(volume, spacing)  # type: ignore[arg-type]
    small = np.nan_to_num(np.asarray(small, dtype=np.float32))
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != volume.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the volume's {volume.shape}")
        small_mask, _ = _subsample(mask, spacing)  # type: ignore[arg-type]
        region = _depth(small_mask, small_spacing) > 4.0
        if region.sum() < 1000:
            region = small_mask
    else:
        region = _brain_region(small, small_spacing)
    values = small[region]
    if values.size < 500 or np.ptp(values) == 0:
        raise ValueError("too few brain voxels (or constant intensities) to tell the contrast")
    low, high = np.percentile(values, [1, 99])
    normalised = np.clip((small - low) / max(high - low, 1e-6), -0.5, 1.5)
    thresholds = filters.threshold_multiotsu(normalised[region], classes=3)
    classes = np.digitize(normalised, thresholds)
    bulk = np.array([_bulk(classes, region, label) for label in range(3)])
    means = [float(normalised[region & (classes == label)].mean()) if (region & (classes == label)).any()
             else float("nan") for label in range(3)]
    white = int(bulk.argmax())
    modality = {2: "T1", 0: "T2", 1: "FLAIR"}[white]
    ranked = np.sort(bulk)[::-1]
    confidence = float(np.clip((ranked[0] - ranked[1]) / max(ranked[0], 1e-6) * 4.0, 0.0, 1.0))
    tissue_means = {tissue: round(mean, 3) for tissue, mean in zip(_ORDER[modality], means, strict=True)}
    return ModalityGuess(modality, confidence, tissue_means)


def modality_mismatch(guess: ModalityGuess, expected: str) -> str | None:
    """A one-line warning when ``guess`` is not the ``expected`` contrast, else None."""
    if expected not in MODALITIES:
        raise ValueError(f"unknown modality {expected!r}; expected one of {', '.join(MODALITIES)}")
    if guess.modality == expected:
        return None
    article = "an" if expected == "FLAIR" else "a"
    return (f"this looks {guess.describe()}, not {article} {_WEIGHTED[expected]} image "
            f"(confidence {guess.confidence:.0%})")
