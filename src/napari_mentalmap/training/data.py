"""The real MRI in ``../shared/data`` as model-grid arrays and PyTorch data sets.

The fixed subject splits live here and only here (see ``shared/data/README.md``).
Preprocessed arrays are cached as ``.npz`` (``$MENTALMAP_CACHE`` or ``<repo>/cache``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from ..io.nifti import Volume, read_volume
from ..io.preprocess import (
    DEFAULT_GRID,
    GridMapping,
    GridSpec,
    ModelGridVolume,
    fill_holes,
    to_model_grid,
)

NICHART = [f"Subj{i}" for i in range(1, 24)]
SPLITS: dict[str, list[str]] = {
    "train": [f"Subj{i}" for i in range(1, 18)],
    "val": [f"Subj{i}" for i in range(18, 21)],
    "test": [f"Subj{i}" for i in range(21, 24)],
    "ixi": ["IXI012-HH-1211", "IXI015-HH-1258"],
    "open_ms": ["patient07", "patient19", "patient26"],
}
"""Fixed splits: slice models train on Subj1-17, validate on 18-20, test on 21-23;
``ixi`` is the other-site T1 test; ``open_ms`` the manual-lesion test (patient07 is shipped)."""

FLAIR_MISREGISTERED: tuple[str, ...] = ("Subj15", "Subj20", "Subj23")
"""NiChart subjects whose FLAIR is not aligned with the T1 parcellation in world space (the
parcellation resampled onto the FLAIR grid is shifted by several slices: found by the brain
extraction's Dice on the FLAIR, 0.63-0.71 vs 0.73-0.96 elsewhere, and checked by eye).
Their FLAIR brain mask is the learned brain extraction instead, and the brain-extraction
training leaves their FLAIR out."""


def misregistered(subject: str, modality: str) -> bool:
    """Whether ``subject``'s ``modality`` volume is not aligned with its T1 parcellation."""
    return modality == "flair" and subject in FLAIR_MISREGISTERED

_REPO = Path(__file__).resolve().parents[3]


def data_root() -> Path:
    """``$MENTALMAP_DATA``, else ``../shared/data`` next to the repository."""
    root = Path(os.environ.get("MENTALMAP_DATA", _REPO.parent / "shared" / "data"))
    if not root.is_dir():
        raise FileNotFoundError(
            f"training data not found at {root}; set MENTALMAP_DATA to the shared data folder"
        )
    return root


def cache_dir() -> Path:
    path = Path(os.environ.get("MENTALMAP_CACHE", _REPO / "cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def subject_files(subject: str, modality: str = "t1") -> dict[str, Path]:
    """Image path plus, where the data set has them, ``mask_source`` and ``lesions``.

    ``mask_source`` is a parcellation (label > 0 = brain) on the T1 grid for NiChart.
    """
    root = data_root()
    modality = modality.lower()
    if subject.startswith("Subj"):
        base = root / "nichart_demo"
        image = {"t1": base / "t1" / f"{subject}_T1.nii.gz", "flair": base / "flair" / f"{subject}_FL.nii.gz"}
        files = {
            "image": image[modality],
            "mask_source": base / "parcellation" / f"{subject}_T1_DLMUSE.nii.gz",
            "lesions": base / "wml_auto" / f"{subject}_FL_DLWMLS.nii.gz",
        }
    elif subject.startswith("IXI"):
        if modality != "t1":
            raise ValueError("the IXI subjects only have T1")
        files = {"image": root / "ixi" / "t1" / f"{subject}_T1.nii.gz"}
    elif subject.startswith("patient"):
        name = {"t1": "T1", "flair": "FLAIR", "t2": "T2"}[modality]
        base = root / "open_ms" / subject
        files = {"image": base / f"{name}.nii.gz", "lesions": base / "lesion_consensus.nii.gz"}
    else:
        raise ValueError(f"unknown subject {subject!r}")
    return {key: path for key, path in files.items() if key == "image" or path.exists()}


def resample_to_reference(source: Volume, reference: Volume, order: int = 0) -> np.ndarray:
    """Resample ``source`` onto ``reference``'s canonical voxel grid through their affines."""
    # reference index -> world -> source index
    matrix = np.linalg.inv(source.affine) @ reference.affine
    data = source.data.astype(np.float32 if order > 0 else source.data.dtype)
    return ndimage.affine_transform(
        data, matrix[:3, :3], offset=matrix[:3, 3], output_shape=reference.data.shape[:3], order=order
    )


def brain_mask_for(subject: str, volume: Volume, modality: str = "t1") -> np.ndarray:
    """Brain mask on ``volume``'s grid: the parcellation > 0 where the data set has one
    (and, for a FLAIR, is aligned with it: see :data:`FLAIR_MISREGISTERED`).

    Otherwise the automatic mask (learned brain extraction for volumes with skull, e.g.
    IXI); the open_ms volumes are skull-stripped, so their non-zero region is the brain.
    """
    files = subject_files(subject)
    if "mask_source" in files and not misregistered(subject, modality):
        parcellation = read_volume(files["mask_source"], as_labels=True)
        return resample_to_reference(parcellation, volume, order=0) > 0
    if subject.startswith("patient"):
        return fill_holes(volume.data != 0)
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


def load_subject_grid(subject: str, modality: str = "t1", spec: GridSpec = DEFAULT_GRID) -> SubjectGrid:
    """Read, skull-strip, normalise and resample one subject; cached on disk."""
    key = f"{subject}_{modality}_{spec.n_poses}x{spec.size}_c{spec.coverage:g}_m{spec.margin:g}"
    key += "" if spec.median_at is None else f"_md{spec.median_at:g}"
    key += "_ownmask.npz" if misregistered(subject, modality) else ".npz"
    path = cache_dir() / key
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
        from ..io.preprocess import resample_to_grid

        lesion_volume = read_volume(files["lesions"], as_labels=True)
        on_volume = resample_to_reference(lesion_volume, volume, order=0) > 0
        lesions = resample_to_grid(on_volume.astype(np.float32), grid.mapping) > 0.5
    np.savez_compressed(
        path,
        image=grid.image,
        mask=grid.mask,
        lesions=lesions if lesions is not None else np.zeros(1, bool),
        has_lesions=lesions is not None,
        input_shape=grid.mapping.input_shape,
        start=grid.mapping.start,
        step=grid.mapping.step,
        grid_shape=grid.mapping.grid_shape,
    )
    return SubjectGrid(subject, grid.image, grid.mask, grid.mapping, lesions)


def load_split(split: str, modality: str = "t1", spec: GridSpec = DEFAULT_GRID) -> list[SubjectGrid]:
    """Every subject of a fixed split on the model grid (with a tqdm bar when slow)."""
    from tqdm.auto import tqdm

    subjects = SPLITS[split]
    return [load_subject_grid(s, modality, spec) for s in tqdm(subjects, desc=f"{split} {modality}", leave=False)]


class SliceDataset(Dataset):
    """Every axial slice of some subjects: ``(slice (S, S), pose, subject index)``."""

    def __init__(self, subjects: list[SubjectGrid]):
        self.images = torch.from_numpy(np.stack([s.image for s in subjects]))
        self.n_poses = self.images.shape[1]

    def __len__(self) -> int:
        return self.images.shape[0] * self.n_poses

    def __getitem__(self, index: int):
        subject, pose = divmod(index, self.n_poses)
        return self.images[subject, pose], torch.tensor(pose, dtype=torch.float32), subject


class VolumeDataset(Dataset):
    """Whole model-grid volumes ``(P, S, S)`` with their brain masks."""

    def __init__(self, subjects: list[SubjectGrid]):
        self.subjects = subjects

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int):
        subject = self.subjects[index]
        return torch.from_numpy(subject.image), torch.from_numpy(subject.mask)


class SequenceDataset(Dataset):
    """BRUNO training sequences: ``length`` random distinct poses of one random subject.

    Light augmentation applied to the whole sequence alike: left-right flip, a shift of
    up to ``max_shift`` pixels and an intensity gamma in [0.9, 1.1].
    """

    def __init__(self, volumes: list[np.ndarray], length: int = 9, epoch_size: int = 10_000,
                 augment: bool = True, max_shift: int = 2, seed: int = 0):
        """``volumes``: model-grid images (P, S, S) of the subjects (``SubjectGrid.image``)."""
        self.images = torch.from_numpy(np.stack(volumes))
        self.length = length
        self.epoch_size = epoch_size
        self.augment = augment
        self.max_shift = max_shift
        self.seed = seed

    def __len__(self) -> int:
        return self.epoch_size

    def __getitem__(self, index: int):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        n_subjects, n_poses = self.images.shape[:2]
        subject = int(torch.randint(n_subjects, (1,), generator=generator))
        poses = torch.randperm(n_poses, generator=generator)[: self.length]
        images = self.images[subject, poses]
        if self.augment:
            if torch.rand(1, generator=generator) < 0.5:
                images = images.flip(-1)
            shift = torch.randint(-self.max_shift, self.max_shift + 1, (2,), generator=generator)
            images = torch.roll(images, shifts=(int(shift[0]), int(shift[1])), dims=(-2, -1))
            gamma = 0.9 + 0.2 * torch.rand(1, generator=generator)
            images = images.clamp(min=0) ** gamma
        return images, poses.float()


# --- tissue classes from the DLMUSE parcellation (slice VAE realism score) ----------------

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
    from ..io.preprocess import resample_to_grid

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
