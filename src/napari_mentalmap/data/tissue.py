"""Tissue classes from the NiChart DLMUSE parcellation (the slice VAE's realism score)."""

from __future__ import annotations

import numpy as np

from ..io.nifti import read_volume
from ..io.preprocess import DEFAULT_GRID, GridSpec, resample_to_grid
from ..io.resample import resample_to_reference
from .subjects import cache_dir, load_subject_grid, subject_files

TISSUE_CSF_LABELS: tuple[int, ...] = (1, 4, 11, 49, 50, 51, 52)
"""MUSE labels collapsed to CSF: 4 3rd ventricle, 11 4th ventricle, 49/50 inferior lateral and
51/52 lateral ventricles, and 1 (dark, CSF-like intensity in the T1: extra-cerebral CSF)."""
TISSUE_WM_LABELS: tuple[int, ...] = (35, 40, 41, 69, *range(81, 96))
"""MUSE labels collapsed to white matter: 35 brain stem, 40/41 cerebellar white matter, 69
(bright, WM-like), 81-88 lobar white matter, 89/90 fornix, 91-94 internal capsule, 95 corpus
callosum. Every other label > 0 (cortex 100-207, deep grey nuclei, cerebellar cortex) is grey
matter; label 0 is background."""


def tissue_classes(labels: np.ndarray) -> np.ndarray:
    """Collapse DLMUSE labels to 0 background / 1 CSF+ventricles / 2 grey / 3 white matter."""
    labels = np.asarray(labels)
    out = np.where(labels > 0, 2, 0).astype(np.uint8)
    out[np.isin(labels, TISSUE_CSF_LABELS)] = 1
    out[np.isin(labels, TISSUE_WM_LABELS)] = 3
    return out


def load_subject_tissue(subject: str, spec: GridSpec = DEFAULT_GRID) -> np.ndarray:
    """Tissue classes (see :func:`tissue_classes`) of a NiChart subject on its T1 model grid.

    ``(P, S, S)`` uint8, nearest-neighbour resampled; cached on disk next to the images.
    """
    key = f"{subject}_tissue_{spec.n_poses}x{spec.size}_c{spec.coverage:g}_m{spec.margin:g}.npz"
    path = cache_dir() / key
    if path.exists():
        with np.load(path, allow_pickle=False) as cached:
            return cached["tissue"]
    files = subject_files(subject, "t1")
    if "mask_source" not in files:
        raise ValueError(f"subject {subject!r} has no parcellation to derive tissue classes from")
    grid = load_subject_grid(subject, "t1", spec)
    volume = read_volume(files["image"])
    parcellation = read_volume(files["mask_source"], as_labels=True)
    classes = tissue_classes(resample_to_reference(parcellation, volume, order=0))
    tissue = resample_to_grid(classes.astype(np.float32), grid.mapping, order=0).round().astype(np.uint8)
    tissue[~grid.mask] = 0
    np.savez_compressed(path, tissue=tissue)
    return tissue
