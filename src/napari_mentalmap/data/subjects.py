"""Where the real MRI lives and how one subject becomes model-grid arrays.

The data root is ``$MENTALMAP_DATA`` (or :func:`set_data_root`, which ``--data`` calls), else
``../shared/data`` from the working directory when it exists (the development layout).
Preprocessed arrays are cached as ``.npz`` in ``$MENTALMAP_CACHE`` or the user cache folder
(platformdirs); nothing is built from the package's location.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..io.nifti import Volume, read_volume
from ..io.preprocess import (
    DEFAULT_GRID,
    GridMapping,
    GridSpec,
    ModelGridVolume,
    fill_holes,
    resample_to_grid,
    to_model_grid,
)
from ..io.resample import resample_to_reference
from .splits import IXI_HEAD, SPLITS, misregistered

DATA_ENV = "MENTALMAP_DATA"
CACHE_ENV = "MENTALMAP_CACHE"
DEVELOPMENT_DATA = Path("..") / "shared" / "data"


class DataNotFoundError(FileNotFoundError):
    """The data root or a subject's file is missing."""


def set_data_root(path: str | os.PathLike) -> None:
    """Use ``path`` as the data root for this process (what ``--data`` does)."""
    os.environ[DATA_ENV] = str(Path(path).resolve())


def data_root() -> Path:
    """``$MENTALMAP_DATA``, else ``../shared/data`` from the working directory when it exists."""
    configured = os.environ.get(DATA_ENV)
    root = Path(configured) if configured else DEVELOPMENT_DATA
    if not root.is_dir():
        raise DataNotFoundError(
            f"data folder not found at {root.resolve()}: pass --data FOLDER or set {DATA_ENV}"
        )
    return root


def cache_dir() -> Path:
    """``$MENTALMAP_CACHE``, else the user cache folder of napari-mentalmap (created)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        path = Path(configured)
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("napari-mentalmap")) / "subjects"
    path.mkdir(parents=True, exist_ok=True)
    return path


def subject_files(subject: str, modality: str = "t1") -> dict[str, Path]:
    """Image path plus, where the data set has them, ``mask_source`` (a parcellation on the T1
    grid, label > 0 = brain), ``lesions`` (lesion / tumour mask) and ``labels`` (OASIS
    manual anatomy)."""
    root = data_root()
    modality = modality.lower()
    names = {"t1": "T1", "flair": "FLAIR", "t2": "T2"}
    if modality not in names:
        raise ValueError(f"unknown modality {modality!r} (t1, flair or t2)")
    if subject.startswith("Subj"):
        base = root / "nichart_demo"
        image = {"t1": base / "t1" / f"{subject}_T1.nii.gz", "flair": base / "flair" / f"{subject}_FL.nii.gz"}
        if modality not in image:
            raise ValueError("the NiChart subjects have T1 and FLAIR only")
        files = {
            "image": image[modality],
            "mask_source": base / "parcellation" / f"{subject}_T1_DLMUSE.nii.gz",
            "lesions": base / "wml_auto" / f"{subject}_FL_DLWMLS.nii.gz",
        }
    elif subject.startswith(("IXI", "OAS")):
        if modality != "t1":
            raise ValueError(f"subject {subject!r} only has a T1")
        if subject.startswith("OAS"):
            base = root / "oasis_malf"
            files = {"image": base / "t1_brain" / f"{subject}_T1.nii.gz",
                     "labels": base / "labels" / f"{subject}_labels.nii.gz"}
        else:
            folder = "t1" if subject in IXI_HEAD else "t1_brain"
            files = {"image": root / "ixi" / folder / f"{subject}_T1.nii.gz"}
    elif subject.startswith("patient"):
        base = root / "open_ms" / subject
        files = {"image": base / f"{names[modality]}.nii.gz", "lesions": base / "lesion_consensus.nii.gz"}
    elif subject in SPLITS["cbica_wml"]:
        base = root / "cbica_wml" / subject
        files = {"image": base / f"{names[modality]}.nii.gz", "lesions": base / "lesion_mask.nii.gz"}
    elif subject in SPLITS["brats2018"]:
        if modality == "t2":
            raise ValueError("the BraTS subjects here have FLAIR and T1 only")
        base = root / "brats2018" / subject
        files = {"image": base / f"{names[modality]}.nii.gz", "lesions": base / "tumour.nii.gz"}
    else:
        raise ValueError(f"unknown subject {subject!r}")
    if not files["image"].exists():
        raise DataNotFoundError(f"{subject} {modality}: {files['image']} does not exist")
    return {key: path for key, path in files.items() if key == "image" or path.exists()}


def is_skull_stripped(subject: str) -> bool:
    """Whether the data set ships this subject skull-stripped (non-zero region = brain)."""
    return not subject.startswith("Subj") and subject not in IXI_HEAD


def brain_mask_for(subject: str, volume: Volume, modality: str = "t1") -> np.ndarray:
    """Brain mask on ``volume``'s grid: the parcellation > 0 where the data set has one
    (and, for a FLAIR, is aligned with it: see ``FLAIR_MISREGISTERED``); the non-zero region
    for skull-stripped sets; otherwise the learned brain extraction (T1 with skull)."""
    files = subject_files(subject, modality)
    if "mask_source" in files and not misregistered(subject, modality):
        parcellation = read_volume(files["mask_source"], as_labels=True)
        return resample_to_reference(parcellation, volume, order=0) > 0
    if is_skull_stripped(subject):
        return fill_holes(volume.data > 0) if subject.startswith(("OAS", "IXI")) else fill_holes(volume.data != 0)
    from ..inference.brain import auto_brain_mask

    return auto_brain_mask(volume.data, volume.spacing)


@dataclass
class SubjectGrid:
    """A subject on the model grid (what the models train and are evaluated on)."""

    subject: str
    image: np.ndarray  # (P, S, S) float32 in [0, 1]
    mask: np.ndarray  # (P, S, S) bool
    mapping: GridMapping
    lesions: np.ndarray | None = None  # (P, S, S) bool, where the data set has lesion masks


def _cache_key(subject: str, modality: str, spec: GridSpec) -> str:
    key = f"{subject}_{modality}_{spec.n_poses}x{spec.size}_c{spec.coverage:g}_m{spec.margin:g}"
    key += "" if spec.median_at is None else f"_md{spec.median_at:g}"
    return key + ("_ownmask.npz" if misregistered(subject, modality) else ".npz")


def load_subject_grid(subject: str, modality: str = "t1", spec: GridSpec = DEFAULT_GRID) -> SubjectGrid:
    """Read, skull-strip, normalise and resample one subject; cached on disk."""
    path = cache_dir() / _cache_key(subject, modality, spec)
    if path.exists():
        with np.load(path, allow_pickle=False) as cached:
            lesions = cached["lesions"] if cached["has_lesions"] else None
            mapping = GridMapping(
                tuple(int(v) for v in cached["input_shape"]),
                tuple(float(v) for v in cached["start"]),
                tuple(float(v) for v in cached["step"]),
                tuple(int(v) for v in cached["grid_shape"]),
            )
            return SubjectGrid(subject, cached["image"], cached["mask"], mapping, lesions)
    files = subject_files(subject, modality)
    volume = read_volume(files["image"])
    mask = brain_mask_for(subject, volume, modality)
    grid: ModelGridVolume = to_model_grid(volume.data, volume.spacing, mask, spec)
    lesions = None
    if "lesions" in files:
        lesion_volume = read_volume(files["lesions"], as_labels=True)
        on_volume = resample_to_reference(lesion_volume, volume, order=0) > 0
        lesions = resample_to_grid(on_volume.astype(np.float32), grid.mapping) > 0.5
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        image=grid.image,
        mask=grid.mask,
        lesions=lesions if lesions is not None else np.zeros(1, bool),
        has_lesions=lesions is not None,
        input_shape=grid.mapping.input_shape,
        start=grid.mapping.start,
        step=grid.mapping.step,
        grid_shape=grid.mapping.grid_shape,
    )
    os.replace(tmp, path)
    return SubjectGrid(subject, grid.image, grid.mask, grid.mapping, lesions)


def load_split(split: str, modality: str = "t1", spec: GridSpec = DEFAULT_GRID) -> list[SubjectGrid]:
    """Every subject of a fixed split on the model grid (with a tqdm bar when slow)."""
    from tqdm.auto import tqdm

    subjects = SPLITS[split]
    return [load_subject_grid(s, modality, spec) for s in tqdm(subjects, desc=f"{split} {modality}", leave=False)]


def healthy_weight(subject: SubjectGrid) -> np.ndarray:
    """Loss weight per grid voxel: 0 on (one-voxel dilated) automatic lesions, else 1."""
    if subject.lesions is None or not subject.lesions.any():
        return np.ones_like(subject.image, dtype=np.float32)
    lesions = ndimage.binary_dilation(subject.lesions, iterations=1)
    return (~lesions).astype(np.float32)


MNI152_FILE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def mni152_t1(skull_stripped: bool = False) -> Volume:
    """The MNI152 2009a T1 (with skull), or skull-stripped with its own tissue maps (grey +
    white matter probability > 0.3: another pipeline's brain mask than ours)."""
    folder = data_root() / "mni152"
    t1 = read_volume(folder / MNI152_FILE.format("t1"))
    if not skull_stripped:
        return t1
    brain = sum(np.asarray(read_volume(folder / MNI152_FILE.format(t)).data) for t in ("gm", "wm")) > 0.3
    return replace(t1, data=np.asarray(t1.data, np.float32) * brain)
