"""Read and write NIfTI / MGZ volumes in one canonical orientation (pure nibabel + numpy).

Canonical array convention (used everywhere in napari-mentalmap)
----------------------------------------------------------------
``data[i, j, k]`` with

* axis 0 (``i``): inferior -> superior  (axial slice index, napari's slider),
* axis 1 (``j``): anterior -> posterior (rows: row 0 at the top is anterior),
* axis 2 (``k``): right -> left         (columns: column 0, on screen left, is the
  patient's right).

napari shows the last two axes as rows x columns with row 0 at the top, so an axial
slice appears in the *radiological convention*: anterior at the top, the patient's
right on the left of the screen. In nibabel axis codes this array is ``("S", "P", "L")``.

The affine of the canonical array (``Volume.affine``) maps its indices to the scanner
RAS+ world; ``Volume.original_affine`` is the file's own affine, used when writing the
array back in the file's original orientation.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from .atomic import NIFTI_SUFFIXES, save_atomically
from .headers import header_from_bytes, header_to_bytes, looks_like_labels
from .orientation import (
    CANONICAL_AXCODES,
    affine_from_scale_translate,
    canonical_orientation_transform,
    from_canonical,
    is_oblique_affine,
    spacing_and_origin,
    to_canonical,
)

__all__ = [  # the orientation and header helpers are part of this module's interface
    "CANONICAL_AXCODES", "NIFTI_SUFFIXES", "Volume", "VolumeReadError", "affine_from_scale_translate",
    "canonical_orientation_transform", "from_canonical", "header_from_bytes", "header_to_bytes",
    "is_oblique_affine", "is_volume_path", "looks_like_labels", "max_voxels_limit", "read_volume",
    "spacing_and_origin", "to_canonical", "volume_nbytes", "warn_volume_notes", "write_volume",
]


DEFAULT_MAX_VOXELS: int = 512**3
"""Largest volume (in voxels, all channels included) read without an explicit larger limit."""

MAX_VOXELS_ENV = "MENTALMAP_MAX_VOXELS"


class VolumeReadError(ValueError):
    """A file could not be read as a 3-D volume (not NIfTI/MGZ, truncated, too large ...)."""


@dataclass
class Volume:
    """A volume in canonical orientation plus everything needed to write it back.

    Attributes:
        data: array in canonical orientation (see module docstring); float32 for images,
            the file's integer dtype for labels. 4-D only when read with
            ``four_d="channels"``: then the channel axis comes first.
        affine: 4x4 affine of the canonical array (index -> RAS+ mm), shear included.
        original_affine: 4x4 affine of the array as stored in the file.
        header: the file's header (nibabel object); used again when writing.
        spacing: voxel size in mm along the three spatial axes of ``data``.
        origin: world position of voxel (0, 0, 0) along the canonical axes (superior,
            posterior, left, in mm), i.e. what napari needs as ``translate``.
        axcodes_original: nibabel axis codes of the file's array, e.g. ``("L", "P", "S")``.
        original_shape: spatial shape of the array in the file.
        is_oblique: the affine has rotation/shear that the display (scale + translate) drops.
        is_labels: integer data with few distinct values (segmentation, mask).
        warnings: human-readable notes about what was changed or is unusual.
        source: path the volume came from (or ``None``).
    """

    data: np.ndarray
    affine: np.ndarray
    original_affine: np.ndarray
    header: Any
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    axcodes_original: tuple[str, str, str]
    original_shape: tuple[int, int, int]
    is_oblique: bool = False
    is_labels: bool = False
    warnings: list[str] = field(default_factory=list)
    source: str | None = None

    def metadata(self) -> dict[str, Any]:
        """Plain-data description (no array) that :func:`write_volume` accepts as reference."""
        return {
            "affine": np.asarray(self.affine, dtype=float).tolist(),
            "original_affine": np.asarray(self.original_affine, dtype=float).tolist(),
            "header": header_to_bytes(self.header),
            "header_format": type(self.header).__name__,
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "axcodes_original": list(self.axcodes_original),
            "original_shape": list(self.original_shape),
            "is_oblique": self.is_oblique,
            "is_labels": self.is_labels,
            "source": self.source,
        }


def max_voxels_limit(max_voxels: int | None = None) -> int:
    """Voxel limit: the argument, else ``$MENTALMAP_MAX_VOXELS``, else :data:`DEFAULT_MAX_VOXELS`."""
    if max_voxels is not None:
        return int(max_voxels)
    env_value = os.environ.get(MAX_VOXELS_ENV)
    if env_value:
        try:
            return int(float(env_value))
        except ValueError as error:
            raise ValueError(
                f"{MAX_VOXELS_ENV}={env_value!r} is not a number of voxels"
            ) from error
    return DEFAULT_MAX_VOXELS


def is_volume_path(path: str | os.PathLike) -> bool:
    """True when the file name ends in a suffix this module reads (.nii, .nii.gz, .mgz)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _load_image(path: Path) -> Any:
    if not path.exists():
        raise VolumeReadError(f"{path}: no such file")
    try:
        return nib.load(str(path))
    except Exception as error:
        raise VolumeReadError(
            f"{path} is not a readable NIfTI/MGZ file ({type(error).__name__}: {error})"
        ) from error


def _read_array(image: Any, path: Path) -> np.ndarray:
    try:
        return np.asanyarray(image.dataobj)
    except Exception as error:  # truncated gzip, short file, bad offset ...
        raise VolumeReadError(
            f"{path} could not be read completely; the file looks truncated or corrupt "
            f"({type(error).__name__}: {error})"
        ) from error


def read_volume(
    path: str | os.PathLike,
    max_voxels: int | None = None,
    four_d: Literal["first", "channels"] = "first",
    as_labels: bool | None = None,
) -> Volume:
    """Read a NIfTI (.nii, .nii.gz) or MGZ file into a canonical :class:`Volume`.

    Args:
        path: file to read.
        max_voxels: refuse larger volumes (default ``$MENTALMAP_MAX_VOXELS`` or 512**3).
        four_d: for 4-D series, ``"first"`` keeps the first volume (with a warning),
            ``"channels"`` keeps all volumes as a leading channel axis.
        as_labels: force (``True``/``False``) or guess (``None``) whether it is a label map.

    Raises:
        VolumeReadError: not a NIfTI/MGZ file, truncated, 2-D, more than 4-D, or too large.

    A 2-D image is refused: the models need a stack of axial slices, and a silently
    reinterpreted single slice would have an arbitrary orientation.
    """
    path = Path(path)
    image = _load_image(path)
    notes: list[str] = []
    shape = tuple(int(s) for s in image.shape)
    # Trailing singleton axes (e.g. shape (X, Y, Z, 1)) carry no information.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 3 or min(shape[:3]) < 1:
        raise VolumeReadError(
            f"{path} has shape {tuple(image.shape)}: a 3-D volume is needed, not a 2-D image"
        )
    if len(shape) > 4:
        raise VolumeReadError(
            f"{path} has {len(shape)} dimensions {shape}; only 3-D volumes and 4-D series are supported"
        )
    n_volumes = shape[3] if len(shape) == 4 else 1
    keep_volumes = n_volumes if four_d == "channels" else 1
    n_voxels = int(np.prod(shape[:3])) * keep_volumes
    limit = max_voxels_limit(max_voxels)
    if n_voxels > limit:
        gigabytes = n_voxels * 4 / 1e9
        raise VolumeReadError(
            f"{path} has {n_voxels:,} voxels (shape {shape}, {gigabytes:.2f} GB as float32), "
            f"above the limit of {limit:,} voxels; pass max_voxels=... or set {MAX_VOXELS_ENV}"
        )

    if len(shape) == 4:
        if four_d == "channels":
            data = _read_array(image, path).reshape(shape)
            notes.append(f"{path.name} is a 4-D series of {n_volumes} volumes; kept all as channels")
        else:
            try:
                data = np.asanyarray(image.dataobj[..., 0]).reshape(shape[:3])
            except Exception as error:
                raise VolumeReadError(
                    f"{path} could not be read completely; the file looks truncated or corrupt "
                    f"({type(error).__name__}: {error})"
                ) from error
            if n_volumes > 1:
                notes.append(
                    f"{path.name} is a 4-D series of {n_volumes} volumes; showing the first only"
                )
    else:
        data = _read_array(image, path).reshape(shape)

    original_affine = np.asarray(image.affine, dtype=float)
    if not np.all(np.isfinite(original_affine)) or abs(np.linalg.det(original_affine[:3, :3])) < 1e-12:
        notes.append(f"{path.name} has an invalid affine; using 1 mm voxels in the file's axis order")
        original_affine = np.diag([1.0, 1.0, 1.0, 1.0])

    is_labels = looks_like_labels(data) if as_labels is None else bool(as_labels)
    if is_labels:
        if not np.issubdtype(data.dtype, np.integer):
            data = np.rint(np.nan_to_num(data)).astype(np.int32)
        elif data.dtype == np.bool_:
            data = data.astype(np.uint8)
    else:
        data = np.asarray(data, dtype=np.float32)
        not_finite = ~np.isfinite(data)
        n_bad = int(not_finite.sum())
        if n_bad:
            data = data.copy() if not data.flags.writeable else data
            data[not_finite] = 0.0
            notes.append(f"{path.name}: {n_bad:,} NaN/Inf voxels replaced by 0")

    if not np.any(data):
        notes.append(f"{path.name}: every voxel is zero")

    oblique = is_oblique_affine(original_affine)
    if oblique:
        notes.append(
            f"{path.name} has an oblique affine (axes {''.join(nib.aff2axcodes(original_affine))} "
            "with rotation/shear); displayed without it, the true affine is kept for saving"
        )

    if data.ndim == 4:
        canonical, canonical_affine = to_canonical(data, original_affine)
        canonical = np.moveaxis(canonical, 3, 0)
    else:
        canonical, canonical_affine = to_canonical(data, original_affine)
    canonical = np.ascontiguousarray(canonical)
    spacing, origin = spacing_and_origin(canonical_affine)
    return Volume(
        data=canonical,
        affine=canonical_affine,
        original_affine=original_affine,
        header=image.header,
        spacing=spacing,
        origin=origin,
        axcodes_original=tuple(str(c) for c in nib.aff2axcodes(original_affine)),  # type: ignore[arg-type]
        original_shape=tuple(int(s) for s in shape[:3]),  # type: ignore[arg-type]
        is_oblique=oblique,
        is_labels=is_labels,
        warnings=notes,
        source=str(path),
    )


def _reference_fields(reference: Volume | dict[str, Any] | None) -> tuple[np.ndarray, Any]:
    """(original affine, header or None) from a Volume or its metadata dict."""
    if reference is None:
        raise ValueError("write_volume needs a reference Volume or metadata dict")
    if isinstance(reference, Volume):
        return np.asarray(reference.original_affine, dtype=float), reference.header
    if "original_affine" in reference:
        affine = np.asarray(reference["original_affine"], dtype=float)
    elif "affine" in reference:
        # Only the canonical affine is known: the array is written in canonical order.
        affine = np.asarray(reference["affine"], dtype=float)
    elif "scale" in reference:
        affine = affine_from_scale_translate(reference["scale"], reference.get("translate", (0, 0, 0)))
    else:
        raise ValueError(
            "reference metadata needs 'original_affine', 'affine' or 'scale'/'translate'"
        )
    header = reference.get("header")
    if isinstance(header, bytes | bytearray):
        header = header_from_bytes(bytes(header), reference.get("header_format"))
    elif not hasattr(header, "get_data_dtype"):
        header = None
    return affine, header


def _output_dtype(data: np.ndarray, is_labels: bool) -> np.dtype:
    if is_labels or np.issubdtype(data.dtype, np.integer):
        if data.size and data.min() >= 0 and data.max() <= 255:
            return np.dtype(np.uint8)
        if data.size and data.min() >= -32768 and data.max() <= 32767:
            return np.dtype(np.int16)
        return np.dtype(np.int32)
    if data.dtype == np.bool_:
        return np.dtype(np.uint8)
    return np.dtype(np.float32)


def write_volume(
    path: str | os.PathLike,
    data: np.ndarray,
    reference: Volume | dict[str, Any] | None,
    is_labels: bool | None = None,
    description: str = "napari-mentalmap",
) -> Path:
    """Write a canonical array to ``path`` in the reference file's original orientation.

    ``reference`` is the :class:`Volume` the array belongs to, or its
    :meth:`Volume.metadata` dict; a dict with only ``scale``/``translate`` (napari) is
    also accepted and then the canonical array is written with an affine built from them.
    A 4-D array is taken as channels-first (as read with ``four_d="channels"``).
    Suffix ``.nii``/``.nii.gz`` selects NIfTI-1, ``.mgz`` MGH; NIfTI files get ``description``
    as ``descrip``, ``NIFTI_INTENT_LABEL`` for labels, no time unit on a 4th (sample) axis and
    no display window copied from the source. The write is atomic. Returns the path written.
    """
    path = Path(path)
    if not is_volume_path(path):
        raise ValueError(f"{path}: use a .nii, .nii.gz or .mgz file name")
    array = np.asarray(data)
    if array.ndim not in (3, 4):
        raise ValueError(f"cannot write an array of shape {array.shape} as a volume (3-D or 4-D)")
    affine, header = _reference_fields(reference)
    has_original = isinstance(reference, Volume) or (
        isinstance(reference, dict) and "original_affine" in reference
    )
    if array.ndim == 4:
        array = np.moveaxis(array, 0, 3)
    if has_original:
        array = from_canonical(array, affine)
        expected = None
        if isinstance(reference, Volume):
            expected = reference.original_shape
        elif isinstance(reference, dict) and reference.get("original_shape") is not None:
            expected = tuple(int(s) for s in reference["original_shape"])
        if expected is not None and tuple(array.shape[:3]) != tuple(expected):
            raise ValueError(
                f"array of spatial shape {array.shape[:3]} (file order) does not match the "
                f"reference volume's shape {tuple(expected)}"
            )
    labels = bool(is_labels) if is_labels is not None else (
        bool(reference.is_labels) if isinstance(reference, Volume)
        else bool(isinstance(reference, dict) and reference.get("is_labels"))
    )
    dtype = _output_dtype(array, labels)
    array = np.ascontiguousarray(array.astype(dtype, copy=False))

    path.parent.mkdir(parents=True, exist_ok=True)
    if str(path).lower().endswith(".mgz"):
        image = nib.MGHImage(array, affine)
    else:
        nifti_header = header.copy() if isinstance(header, nib.Nifti1Header) else None
        if isinstance(nifti_header, nib.Nifti2Header):
            nifti_header = None
        image = nib.Nifti1Image(array, affine, header=nifti_header)
        image.set_data_dtype(dtype)
        image.header.set_slope_inter(1.0, 0.0)
        # Keep the file's own qform/sform codes when we have them; else mark the affine as scanner.
        if nifti_header is not None:
            sform_code = int(nifti_header["sform_code"]) or 1
            qform_code = int(nifti_header["qform_code"]) or 1
        else:
            sform_code = qform_code = 1
        image.set_sform(affine, code=sform_code)
        image.set_qform(affine, code=qform_code)
        # Keep the source's spatial unit; a 4th axis holds samples, never time.
        spatial_unit = image.header.get_xyzt_units()[0] if nifti_header is not None else "mm"
        image.header.set_xyzt_units(spatial_unit, "unknown")
        # A derived map has its own intensity range: do not inherit the source's display window.
        image.header["cal_min"] = 0
        image.header["cal_max"] = 0
        image.header["descrip"] = description.encode("ascii", "replace")[:79]
        image.header.set_intent("label" if labels else "none")
    save_atomically(image, path)
    return path


def volume_nbytes(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> int:
    """Bytes of an array of ``shape`` and ``dtype`` (for size messages and benchmarks)."""
    return int(math.prod(shape)) * np.dtype(dtype).itemsize


def warn_volume_notes(volume: Volume, stacklevel: int = 2) -> None:
    """Raise each of ``volume.warnings`` as a Python ``UserWarning`` (napari shows them)."""
    for note in volume.warnings:
        warnings.warn(note, UserWarning, stacklevel=stacklevel + 1)
