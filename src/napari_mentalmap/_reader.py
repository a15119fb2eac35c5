"""npe2 reader: NIfTI / MGZ files -> napari layer data tuples (no napari import)."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io.nifti import Volume, is_volume_path, read_volume

LayerDataTuple = tuple[Any, dict[str, Any], str]
PathLike = str | os.PathLike
METADATA_KEY = "mentalmap_volume"
AXIS_LABELS: tuple[str, str, str] = ("axial (I>S)", "coronal (A>P)", "sagittal (R>L)")
"""Anatomical labels of the canonical axes: the direction in which each index grows."""


def geometry_kwargs(spacing, origin, channel_axes: int = 0) -> dict[str, Any]:
    """napari ``scale``/``translate``/``units``/``axis_labels`` of a canonical (S, P, L) array,
    with ``channel_axes`` leading non-spatial axes (e.g. samples)."""
    return {
        "scale": (1.0,) * channel_axes + tuple(float(s) for s in spacing),
        "translate": (0.0,) * channel_axes + tuple(float(o) for o in origin),
        "units": ("pixel",) * channel_axes + ("mm",) * 3,
        "axis_labels": tuple(f"axis {i}" for i in range(channel_axes)) + AXIS_LABELS,
    }


def napari_get_reader(path: PathLike | Sequence[PathLike]) -> Callable[..., list[LayerDataTuple]] | None:
    """Return :func:`read_nifti` when every path is a .nii, .nii.gz or .mgz file, else None."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths or not all(is_volume_path(p) for p in paths):
        return None
    return read_nifti


GENERIC_WORDS = frozenset(
    "t1 t1w t1c t1ce t1gd t2 t2w pd pdw flair dwi adc swi mprage ce gd brain mask brainmask seg "
    "segmentation label labels lesion lesions consensus manual auto wml tumour tumor image img volume "
    "scan anat mri orig norm aseg aparc raw preprocessed registered skullstripped stripped n4 bias "
    "corrected mni native iso nifti nii images data input inputs scans derivatives".split())
"""Words of a file or folder name that say the sequence, the kind of mask or the processing
step, not whose scan it is ("FLAIR", "lesion_mask", "mri", "anat")."""


def _is_generic(name: str) -> bool:
    words = [w for w in re.split(r"[\s_.+-]+", name.lower()) if w]
    return all(w in GENERIC_WORDS or re.fullmatch(r"\d+(p\d+)?mm|\d+", w) for w in words)


def _stem(path: PathLike) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".mgz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _with_folder(path: PathLike, stem: str) -> str:
    """``stem`` after the nearest of the 3 folders above ``path`` that is not a generic name."""
    parent = Path(path).absolute().parent
    for folder in reversed(parent.parts[-3:]):
        if folder != parent.anchor and not _is_generic(folder):
            return f"{folder} {stem}"
    return stem


def layer_name(path: PathLike) -> str:
    """File name without .nii/.nii.gz/.mgz. A name that only says the sequence or the kind of
    mask gets the folder naming the subject in front, so that several subjects' layers differ:
    ``patient07/FLAIR.nii.gz`` -> "patient07 FLAIR", ``bert/mri/T1.mgz`` -> "bert T1"."""
    stem = _stem(path)
    return _with_folder(path, stem) if _is_generic(stem) else stem


def image_contrast_limits(data: np.ndarray) -> tuple[float, float]:
    """0.5-99.5 percentiles of the non-zero voxels (whole range if that is degenerate)."""
    values = data[data != 0] if np.any(data) else data.ravel()
    if values.size > 2_000_000:
        values = values[:: values.size // 1_000_000]
    low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if not high > low:
        low, high = float(data.min()), float(data.max())
        if not high > low:
            high = low + 1.0
    return low, high


def volume_to_layer_data(volume: Volume, name: str | None = None) -> LayerDataTuple:
    """A :class:`Volume` as a napari image or labels layer data tuple.

    ``scale`` and ``translate`` come from the canonical affine (no resampling), the
    full description needed to save the layer again is in
    ``metadata["mentalmap_volume"]``.
    """
    channel_axes = volume.data.ndim - 3
    kwargs: dict[str, Any] = {
        "name": name or (layer_name(volume.source) if volume.source else "volume"),
        **geometry_kwargs(volume.spacing, volume.origin, channel_axes),
        "metadata": {METADATA_KEY: volume.metadata()},
    }
    if volume.is_labels:
        return volume.data, kwargs, "labels"
    kwargs["colormap"] = "gray"
    kwargs["contrast_limits"] = image_contrast_limits(volume.data)
    return volume.data, kwargs, "image"


def read_nifti(path: PathLike | Sequence[PathLike]) -> list[LayerDataTuple]:
    """Read one or more NIfTI/MGZ files; each file's notes are raised as ``UserWarning``."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    names = [layer_name(p) for p in paths]
    names = [_with_folder(p, n) if names.count(n) > 1 else n for p, n in zip(paths, names, strict=True)]
    layers: list[LayerDataTuple] = []
    for one_path, name in zip(paths, names, strict=True):
        volume = read_volume(one_path)
        for note in volume.warnings:
            warnings.warn(note, UserWarning, stacklevel=2)
        layers.append(volume_to_layer_data(volume, name))
    return layers
