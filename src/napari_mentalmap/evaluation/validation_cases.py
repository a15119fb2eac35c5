"""Validation FLAIRs as other sites, lesion loads and tumours might deliver them.

The validation subjects (NiChart Subj18-20, automatic ``wml_auto`` lesions) come from one site
and carry 1-2 % of the brain as lesion; the test sets come from three other sites with loads
from a few voxels to a glioma. A rule that must work across sites is chosen on these
variants of the *validation* volumes (never on a test set):

* :data:`SHIFTS`: the raw FLAIR under a contrast change (gamma), thicker slices, a bias ramp,
  more noise (as ``scripts/uad_hybrid.py shifts`` scored the gate with).
* :data:`SITES`: the acquisition of the other sites as ``shared/data/README.md`` documents
  it: 0.94 x 0.94 mm in plane, 3 mm slices, smoothed, 8-bit (as ``cbica_wml``); 1 mm and
  z-scored in the brain (as ``open_ms``).
* :func:`with_lesion_load`: the automatic lesions in-painted and synthetic hyperintense
  lesions added to a chosen fraction of the brain (0.05 %, 0.2 %, 1 %, 5 %).
* tumours: :func:`.auto_thresholds.synthetic_tumour_volumes` and larger ones (40-55 mm radii,
  15-25 % of the brain).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage


def _thick(image: np.ndarray, spacing) -> np.ndarray:
    return ndimage.gaussian_filter1d(image, sigma=2.0 / spacing[0], axis=0)  # FWHM about 4.7 mm slices


def _bias(image: np.ndarray, spacing) -> np.ndarray:
    ramp = np.linspace(0.8, 1.2, image.shape[2], dtype=np.float32)
    return image * ramp[None, None, :]


def _noise(image: np.ndarray, spacing) -> np.ndarray:
    rng = np.random.default_rng(0)
    level = 0.05 * float(np.median(image[image > 0]))
    return np.abs(image + rng.normal(0.0, level, image.shape).astype(np.float32))


SHIFTS = {
    "as given": lambda image, spacing: image,
    "gamma 0.7": lambda image, spacing: np.clip(image, 0, None) ** 0.7,
    "gamma 1.4": lambda image, spacing: np.clip(image, 0, None) ** 1.4,
    "thick slices": _thick,
    "bias ±20 %": _bias,
    "noise 5 %": _noise,
}
"""Site shifts of a raw FLAIR ``(image, spacing) -> image``."""


def shifted(volume, name: str):
    """``volume`` with the raw FLAIR changed by ``SHIFTS[name]`` (mask and truth kept)."""
    image = SHIFTS[name](volume.image, volume.spacing).astype(np.float32)
    return dataclasses.replace(volume, subject=f"{volume.subject} {name}", image=image)


def resampled(volume, spacing: tuple[float, float, float], slab_mm: float = 0.0):
    """``volume`` on a grid of ``spacing`` (linear image, nearest mask and truth); ``slab_mm``
    > 0 first averages the image over slabs that thick along axis 0 (thick slices)."""
    old = np.asarray(volume.spacing, float)
    image = volume.image
    if slab_mm > 0:
        image = ndimage.gaussian_filter1d(image, sigma=slab_mm / 2.355 / old[0], axis=0)
    zoom = old / np.asarray(spacing, float)
    return dataclasses.replace(
        volume, image=ndimage.zoom(image, zoom, order=1).astype(np.float32), spacing=tuple(float(s) for s in spacing),
        mask=ndimage.zoom(volume.mask.astype(np.uint8), zoom, order=0) > 0,
        truth=ndimage.zoom(volume.truth.astype(np.uint8), zoom, order=0) > 0)


def cbica_like(volume):
    """0.94 x 0.94 mm in plane, 3 mm axial slices, smoothed in plane, 8-bit in the brain."""
    out = resampled(volume, (3.0, 0.9375, 0.9375), slab_mm=3.0)
    image = ndimage.gaussian_filter(out.image, sigma=(0.0, 1.0, 1.0))
    top = float(np.percentile(image[out.mask], 99.9))
    image = np.clip(np.round(image / top * 255.0), 0, 255) * out.mask
    return dataclasses.replace(out, subject=f"{volume.subject} as cbica_wml", image=image.astype(np.float32))


def mni_like(volume):
    """1 mm isotropic, z-scored inside the brain, 0 outside."""
    out = resampled(volume, (1.0, 1.0, 1.0))
    brain = out.image[out.mask]
    image = (out.image - brain.mean()) / max(float(brain.std()), 1e-6) * out.mask
    return dataclasses.replace(out, subject=f"{volume.subject} as open_ms", image=image.astype(np.float32))


SITES = {"as cbica_wml": cbica_like, "as open_ms": mni_like}
"""Other sites' documented acquisitions, applied to a validation volume."""


def with_lesion_load(volume, load: float, seed: int, brightness: tuple[float, float] = (1.4, 1.8),
                     radii_mm: tuple[float, float] = (2.0, 6.0)):
    """``volume`` with its lesions in-painted (smoothed surrounding tissue plus noise) and
    synthetic lesions covering about ``load`` of the brain: ellipsoids of ``radii_mm`` in tissue
    at least 8 mm inside the brain, brightened ``brightness`` x with a soft edge; ``truth`` is them."""
    rng = np.random.default_rng(seed)
    spacing = np.asarray(volume.spacing, float)
    old = ndimage.binary_dilation(volume.truth, iterations=1) & volume.mask
    keep = (volume.mask & ~old).astype(np.float32)
    smooth = ndimage.gaussian_filter(volume.image * keep, 3) / np.maximum(ndimage.gaussian_filter(keep, 3), 1e-3)
    noise = ndimage.gaussian_filter(rng.standard_normal(volume.image.shape), 0.7)
    noise *= 0.03 * float(np.median(volume.image[volume.mask])) / max(float(noise.std()), 1e-6)
    image = np.where(old, smooth + noise, volume.image).astype(np.float32)
    tissue = volume.mask & (image > 0.7 * float(np.median(image[volume.mask])))
    centres = np.argwhere((ndimage.distance_transform_edt(volume.mask, sampling=spacing) > 8.0) & tissue)
    truth = np.zeros(volume.mask.shape, bool)
    gain = np.ones(volume.mask.shape, np.float32)
    while truth.sum() < load * volume.mask.sum():
        centre, radii = centres[rng.integers(len(centres))], rng.uniform(*radii_mm, size=3)
        box = tuple(slice(max(int(c - r / s) - 2, 0), min(int(c + r / s) + 3, n))
                    for c, r, s, n in zip(centre, radii, spacing, image.shape, strict=True))
        axes = np.ogrid[box]
        radius = np.sqrt(sum(((a - c) * s / r) ** 2 for a, c, s, r in zip(axes, centre, spacing, radii, strict=True)))
        soft = 1.0 / (1.0 + np.exp(np.clip((radius - 1.0) / 0.15, -50, 50)))
        gain[box] = np.maximum(gain[box], 1.0 + (rng.uniform(*brightness) - 1.0) * soft * tissue[box])
        truth[box] |= (radius <= 1.0) & tissue[box]
    return dataclasses.replace(volume, subject=f"{volume.subject} lesion load {load:g}", image=image * gain, truth=truth)


LESION_LOADS = (0.0005, 0.002, 0.01, 0.05)
"""Fractions of the brain covered by synthetic lesions in :func:`lesion_validation_cases`."""


def lesion_validation_cases(volumes: list) -> list:
    """The validation volumes as given, under every shift and site, and at every lesion load (36 for 3)."""
    cases = list(volumes)
    cases += [shifted(v, name) for name in SHIFTS if name != "as given" for v in volumes]
    cases += [site(v) for site in SITES.values() for v in volumes]
    cases += [with_lesion_load(v, load, seed=7000 + 10 * i + round(load * 1000))
              for load in LESION_LOADS for i, v in enumerate(volumes)]
    return cases


def tumour_validation_cases(volumes: list) -> list:
    """Two synthetic tumours per validation volume (the tumour Auto's cases) and two larger ones."""
    from .auto_thresholds import synthetic_tumour_volumes, with_synthetic_tumour

    large = [dataclasses.replace(with_synthetic_tumour(v, seed=5000 + 10 * i + k, radii_mm=(40.0, 55.0)),
                                 subject=f"{v.subject} + large synthetic tumour {k}")
             for i, v in enumerate(volumes) for k in range(2)]
    return synthetic_tumour_volumes(volumes) + large
