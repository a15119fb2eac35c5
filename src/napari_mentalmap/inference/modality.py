"""Which MRI contrast a brain volume has (T1, T2 or FLAIR), from its own intensities.

File and layer names are unreliable (NiChart calls its FLAIR ``Subj21_FL``), so the
contrast is read from the image: how bright the tissues are relative to each other, and
where they lie. Everything runs on a ~2 mm subsample (well under a second on a 1 mm
volume) with numpy, scipy and scikit-image.

1. **Brain and depth.** The non-background region of a skull-stripped volume is the
   brain; ``depth`` is the distance (mm) to its surface. A head with skull has no cheap
   brain outline, so its depth is the distance to the head's surface less 15 mm of scalp
   and skull, within the top 90 mm of the head (the cerebrum; axis 0 must run inferior ->
   superior, the canonical orientation of :mod:`..io.nifti`). A given brain mask only
   restricts the voxels looked at: measuring depth from a tight (learned) mask put its
   outer layer in partial volume with CSF, and 10 of 23 NiChart FLAIRs then read as T1.
2. **T2: bright CSF.** The outermost 3 mm of the brain (sulcal CSF with grey matter) is
   brighter than the tissue 4-10 mm deep, and the deep white matter sits at the dark end
   of the intensity range. In T1 and FLAIR the CSF is dark, so the outer band is darker.
3. **T1 or FLAIR: is the deep tissue the brightest?** Without the dark CSF (lowest of three
   multi-Otsu classes), the most common tissue intensity 12+ mm deep (white matter) is
   compared with the one in the outer 3 mm (cortical grey matter). In T1 white matter is
   clearly brighter (CSF < GM < WM); in FLAIR grey matter is as bright or brighter
   (CSF < WM < GM). Modes, not means, so that bright lesions or a tumour deep in the
   white matter do not decide it.

Measured over every scan of the shared data in ``docs/modality.md``
(``benchmarks/modality_table.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage import filters

from ..io.masks import fill_holes
from .brain import STRIPPED_SHELL_FRACTION

MODALITIES = ("T1", "T2", "FLAIR")
"""The contrasts :func:`classify_modality` tells apart."""

SCALP_AND_SKULL_MM = 15.0
"""Assumed thickness of scalp, skull and outer CSF over the cerebrum of a head with skull."""
CEREBRUM_MM = 90.0
"""How far below the top of a head with skull the analysed region reaches."""
T1_CONTRAST = 0.10
"""Smallest rise (normalised units) from cortex to deep white matter that reads as T1;
measured T1 >= 0.12, FLAIR <= 0.08 on the shared data."""
T2_OUTER_RISE = 0.02
"""Smallest excess of the outer 3 mm over the tissue 4-10 mm deep that reads as bright CSF
(T2 >= 0.04, T1 and FLAIR <= 0.0)."""
T2_DEEP_MODE = 0.30
"""Largest normalised position of the deep white matter that reads as T2 (T2 <= 0.2)."""

_ORDER = {"T1": ("CSF", "GM", "WM"), "T2": ("WM", "GM", "CSF"), "FLAIR": ("CSF", "WM", "GM")}
"""Tissues from the darkest to the brightest intensity class for each contrast."""
_NAMES = {"T1": "T1-weighted", "T2": "T2-weighted", "FLAIR": "FLAIR"}


@dataclass(frozen=True)
class ModalityGuess:
    """The contrast of a volume as read from its tissue intensities.

    ``tissue_means`` holds the mean of each of three intensity classes, named by the
    guessed contrast, in normalised units (1st..99th percentile inside the brain -> 0..1).
    """

    modality: str
    confidence: float
    tissue_means: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for messages, e.g. ``"T1-weighted (CSF < GM < WM)"``."""
        order = sorted(self.tissue_means, key=self.tissue_means.__getitem__)
        return f"{_NAMES.get(self.modality, self.modality)} ({' < '.join(order)})"


def _subsample(array: np.ndarray, spacing: tuple[float, ...], target_mm: float = 2.0):
    """Every n-th voxel per axis so that the grid is about ``target_mm``; returns (array, spacing)."""
    factors = [max(1, int(round(target_mm / s))) for s in spacing]
    small = array[:: factors[0], :: factors[1], :: factors[2]]
    return small, tuple(float(s * f) for s, f in zip(spacing, factors, strict=True))


def _depth(mask: np.ndarray, spacing: tuple[float, ...], open_top: bool = False) -> np.ndarray:
    """Distance in mm from each mask voxel to the outside (0 outside), computed on the mask's
    bounding box. With ``open_top`` the mask continues past the first and last axial slices
    of the array (a head cut by the field of view)."""
    depth = np.zeros(mask.shape, dtype=np.float64)
    if not mask.any():
        return depth
    box = [slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mask)]
    if open_top:
        box[0] = slice(0, mask.shape[0])
    padded = np.pad(mask[tuple(box)], 1)
    if open_top:
        padded[0], padded[-1] = padded[1], padded[-2]
    depth[tuple(box)] = ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]
    return depth


def _looks_stripped(volume: np.ndarray, head: np.ndarray, background: float,
                    spacing: tuple[float, ...]) -> bool:
    """The test of :func:`..brain.stripped_shell_fraction` (the shell 3-8 mm outside the head
    is nearly all exact background on a skull-stripped volume), done with one distance
    transform on a ~4 mm grid instead of two ball dilations: same decisions, ~10x faster."""
    factors = [max(1, int(round(4.0 / s))) for s in spacing]
    coarse = tuple(slice(None, None, f) for f in factors)
    outside = ndimage.distance_transform_edt(
        ~np.pad(head[coarse], 3), sampling=[s * f for s, f in zip(spacing, factors, strict=True)])
    shell = (outside > 3.0) & (outside <= 8.0)
    if not shell.any():
        return False
    return float(np.mean(np.pad(volume[coarse], 3, constant_values=background)[shell] == background)) \
        >= STRIPPED_SHELL_FRACTION


def brain_depth(volume: np.ndarray, spacing: tuple[float, ...],
                mask: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Approximate depth (mm) below the brain surface on ``volume``'s grid, 0 outside the
    analysed region (and outside ``mask`` when given); and whether the depth is measured
    from the outline of a skull-stripped volume rather than estimated under the skull."""
    if mask is not None:
        depth, outlined = brain_depth(volume, spacing)
        return np.where(mask, depth, 0.0), outlined
    values, counts = np.unique(volume, return_counts=True)
    background = values[counts.argmax()]
    foreground = volume != background
    sample = volume[foreground]
    if sample.size < 1000 or np.ptp(sample) == 0:
        raise ValueError("the volume is (almost) constant: no brain to tell the contrast of")
    threshold = filters.threshold_otsu(sample[:: max(1, sample.size // 200_000)])
    head = fill_holes(volume > background + 0.5 * (threshold - background), per_slice=True)
    if _looks_stripped(volume, head, background, spacing):
        return _depth(fill_holes(foreground), spacing), True
    area = head.sum(axis=(1, 2)) * spacing[1] * spacing[2]
    rows = np.nonzero(area > 500.0)[0]  # slices with more than 5 cm^2 of head
    if rows.size == 0:
        raise ValueError("no head found in the volume")
    below_top = (rows.max() - np.arange(volume.shape[0])) * spacing[0]
    cerebrum = ((below_top >= 0) & (below_top <= CEREBRUM_MM))[:, None, None]
    # the distance transform needs the head only down to ~the deepest point below the cerebrum
    reach = below_top <= CEREBRUM_MM + 60.0
    depth = np.zeros(volume.shape)
    depth[reach] = _depth(head[reach], spacing, open_top=True) - SCALP_AND_SKULL_MM
    return np.where(cerebrum & (depth > 0), depth, 0.0), False


def _mode(values: np.ndarray) -> float:
    """Peak of a lightly smoothed histogram of normalised intensities (nan if too few)."""
    if values.size < 200:
        return float("nan")
    counts, edges = np.histogram(values, bins=70, range=(-0.2, 1.2))
    peak = int(ndimage.gaussian_filter1d(counts.astype(float), 1.5).argmax())
    return float(0.5 * (edges[peak] + edges[peak + 1]))


def _band(depth: np.ndarray, low: float, high: float) -> np.ndarray:
    return (depth > low) & (depth <= high)


@dataclass(frozen=True)
class ContrastCues:
    """The measurements :func:`classify_modality` decides on (normalised intensity units)."""

    outer_rise: float
    """Median of the outer 3 mm of the brain minus that 4-10 mm deep (> 0: bright CSF)."""
    deep_mode: float
    """Most common intensity 12+ mm deep (white matter), as a position in the 1..99 % range."""
    white_rise: float
    """Most common tissue intensity 12+ mm deep minus that of the outer 3 mm (CSF left out)."""
    thresholds: tuple[float, float]
    """The two multi-Otsu thresholds splitting the brain into three intensity classes."""
    class_means: tuple[float, float, float]
    """Mean of each intensity class, darkest first."""


def contrast_cues(volume: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                  mask: np.ndarray | None = None) -> ContrastCues:
    """Measure the cues of :func:`classify_modality` (same arguments and errors)."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    spacing = tuple(float(s) for s in tuple(spacing)[-3:])
    small, small_spacing = _subsample(volume, spacing)
    small = np.nan_to_num(np.asarray(small, dtype=np.float32))
    small_mask = None
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != volume.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the volume's {volume.shape}")
        small_mask, _ = _subsample(mask, spacing)
        if small_mask.sum() < 1000:
            raise ValueError("the brain mask is (almost) empty: no brain to tell the contrast of")
    depth, outlined = brain_depth(small, small_spacing, small_mask)
    inner = depth > (2.0 if outlined else 0.0)
    if inner.sum() < 1000:
        raise ValueError("too little brain in the volume to tell its contrast")
    low, high = np.percentile(small[inner], [1, 99])
    if high <= low:
        raise ValueError("the brain has (almost) constant intensities: its contrast cannot be told")
    x = (small - low) / (high - low)
    thresholds = filters.threshold_multiotsu(np.clip(x[inner], -0.5, 1.5), classes=3)
    brain = depth > 0
    outer_band, middle_band = brain & _band(depth, 0, 3), _band(depth, 4, 10)
    if outer_band.sum() < 200 or middle_band.sum() < 200:
        raise ValueError("too little brain in the volume to tell its contrast")
    outer_rise = float(np.median(x[outer_band]) - np.median(x[middle_band]))
    tissue = brain & (x > thresholds[0])
    cortex_mode = _mode(x[tissue & _band(depth, 0, 3)])
    deep_modes = [_mode(x[tissue & _band(depth, a, b)]) for a, b in ((12, 16), (16, 22), (22, np.inf))]
    if not np.isfinite(deep_modes).any() or not np.isfinite(cortex_mode):
        raise ValueError("too little deep brain in the volume to tell its contrast")
    classes = np.digitize(x, thresholds)
    means = tuple(float(x[inner & (classes == k)].mean()) if (inner & (classes == k)).any() else float("nan")
                  for k in range(3))
    return ContrastCues(outer_rise=outer_rise, deep_mode=_mode(x[depth > 12]),
                        white_rise=float(np.nanmedian(deep_modes) - cortex_mode),
                        thresholds=(float(thresholds[0]), float(thresholds[1])),
                        class_means=means)  # type: ignore[arg-type]


def classify_modality(volume: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                      mask: np.ndarray | None = None) -> ModalityGuess:
    """Guess whether a 3-D brain volume is T1-weighted, T2-weighted or FLAIR.

    Args:
        volume: 3-D intensities in the canonical orientation (any units; skull-stripped or not).
        spacing: voxel size in mm per axis.
        mask: optional brain mask on the volume's grid: only voxels inside it are looked
            at (depth is still measured as without it; see the module docstring).

    Raises:
        ValueError: not a 3-D volume, a mask of another shape, or too little brain.
    """
    cues = contrast_cues(volume, spacing, mask)
    if cues.outer_rise > T2_OUTER_RISE and cues.deep_mode < T2_DEEP_MODE:
        modality = "T2"
        margin = min((cues.outer_rise - T2_OUTER_RISE) / 0.04, (T2_DEEP_MODE - cues.deep_mode) / 0.1)
    else:
        modality = "T1" if cues.white_rise > T1_CONTRAST else "FLAIR"
        margin = abs(cues.white_rise - T1_CONTRAST) / 0.08
    confidence = float(np.clip(0.5 + 0.5 * margin, 0.5, 1.0))
    tissue_means = {name: round(mean, 3) for name, mean in zip(_ORDER[modality], cues.class_means, strict=True)}
    return ModalityGuess(modality, round(confidence, 3), tissue_means)


def modality_mismatch(guess: ModalityGuess, expected: str) -> str | None:
    """A one-line warning when ``guess`` is not the ``expected`` contrast, else None."""
    if expected not in MODALITIES:
        raise ValueError(f"unknown modality {expected!r}; expected one of {', '.join(MODALITIES)}")
    if guess.modality == expected:
        return None
    return (f"this looks {guess.describe()}, not {_NAMES[expected]} "
            f"(confidence {guess.confidence:.0%})")
